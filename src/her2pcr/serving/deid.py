"""Pseudonymise an exam before it leaves the client: no identity, new UIDs, dates shifted, intervals kept.

A subset of the Basic Application Level Confidentiality Profile (DICOM PS3.15 E.1), sized to what the served model
needs: every person name, the patient and accession identifiers, institution and device identification, comments,
clinical-trial identifiers and private elements are removed; every instance UID (study, series, SOP instance, frame
of reference, referenced instances) is replaced by a ``2.25`` UID derived from a secret drawn per call, so the
server cannot link two requests or recover the originals; dates are shifted by one per-call offset so that times
between phases, and a DT frame time, keep their meaning. SOP class and transfer syntax UIDs are kept (they say what
the object is, not whose). The mapping back to the original UIDs stays with the caller.

pydicom has no de-identification of its own and the field's tools (CTP, deid) are configured for archiving, not for
a request in memory; the rules are few, listed here and tested.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Iterable

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID, UID_dictionary

REMOVED_KEYWORDS = frozenset({
    "PatientID", "IssuerOfPatientID", "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames",
    "PatientBirthDate", "PatientBirthTime", "PatientSex", "PatientAge", "PatientSize", "PatientWeight",
    "PatientAddress", "PatientTelephoneNumbers", "PatientMotherBirthName", "MilitaryRank", "EthnicGroup",
    "PatientComments", "AdditionalPatientHistory", "MedicalRecordLocator", "PatientInsurancePlanCodeSequence",
    "AccessionNumber", "StudyID", "RequestAttributesSequence", "ReferencedPatientSequence",
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "InstitutionCodeSequence",
    "StationName", "DeviceSerialNumber", "DeviceUID", "RequestingService", "ImageComments", "StudyComments",
    "ClinicalTrialSponsorName", "ClinicalTrialProtocolID", "ClinicalTrialProtocolName", "ClinicalTrialSiteID",
    "ClinicalTrialSiteName", "ClinicalTrialSubjectID", "ClinicalTrialSubjectReadingID", "ClinicalTrialTimePointID",
    "ClinicalTrialCoordinatingCenterName", "ClinicalTrialSeriesID", "ClinicalTrialTimePointDescription",
})
REFERENCE_DATE = dt.date(2000, 1, 1)  # the first study date of a pseudonymised request


class Pseudonymiser:
    """One request's secret: the same original UID always maps to the same new one within it."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or secrets.token_bytes(32)
        self.originals: dict[str, str] = {}  # new UID -> original
        self._shift: dt.timedelta | None = None

    def uid(self, original: str) -> str:
        digest = hashlib.sha256(self._secret + original.encode()).digest()
        new = f"2.25.{int.from_bytes(digest[:16], 'big')}"
        self.originals[new] = original
        return new

    def _date(self, value: str) -> str:
        try:
            day = dt.datetime.strptime(value[:8], "%Y%m%d").date()
        except ValueError:  # a partial or malformed date cannot be shifted: it goes
            return ""
        if self._shift is None:
            self._shift = day - REFERENCE_DATE
        return (day - self._shift).strftime("%Y%m%d") + value[8:]

    def _element(self, ds: Dataset, element: DataElement) -> None:
        if element.keyword in REMOVED_KEYWORDS or element.VR == "PN" or element.tag.is_private:
            del ds[element.tag]
        elif element.VR == "UI" and element.value:
            element.value = self._map(element.value, self._instance_uid)
        elif element.VR in ("DA", "DT") and element.value:
            element.value = self._map(element.value, self._date)

    def _instance_uid(self, value: str) -> str:
        # SOP classes, transfer syntaxes, coding schemes...: DICOM's own UIDs identify nothing
        return value if UID(value) in UID_dictionary else self.uid(value)

    @staticmethod
    def _map(value, convert):
        return convert(value) if isinstance(value, str) else [convert(str(v)) for v in value]

    def __call__(self, ds: Dataset) -> Dataset:
        """``ds`` pseudonymised in place (its file meta too), and returned."""
        study_date = ds.get("StudyDate")
        if study_date and self._shift is None:  # the study date anchors the shift, whichever element comes first
            self._date(str(study_date))
        for element in list(_elements(ds)):
            self._element(*element)
        meta = getattr(ds, "file_meta", None)
        if meta is not None and "MediaStorageSOPInstanceUID" in meta:
            meta.MediaStorageSOPInstanceUID = self.uid(str(meta.MediaStorageSOPInstanceUID))
        return ds

    def restore(self, uid: str) -> str:
        """The original of a UID this pseudonymiser made (a UID it did not make is returned as it is)."""
        return self.originals.get(uid, uid)


def _elements(ds: Dataset) -> Iterable[tuple[Dataset, DataElement]]:
    """Every (dataset, element) pair, nested sequence items first; a deferred pixel element is not read."""
    for tag in list(ds.keys()):
        element = ds[tag]
        if element.VR == "SQ":
            for item in element.value:
                yield from _elements(item)
        yield ds, element
