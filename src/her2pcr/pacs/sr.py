"""A prediction as a DICOM Comprehensive 3D SR: a TID 1500 measurement report in the source study (highdicom).

The report holds one volumetric ROI, the tumour box drawn as a rectangle on each of its pre-contrast slices, with

- the pCR probability and the decision threshold (UCUM ``1``), and the predicted label (SCT Yes / No);
- the algorithm: the registered model's name and version, its registry URI, its inputs and the phases they come
  from, and "not for diagnostic use";
- as evidence, every instance of the phases the model read.

Patient and study modules are copied by highdicom from the first evidence instance: the caller passes the source
study's own headers, so the identity in the SR comes from the PACS, never from the model server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

SCHEME = "99HER2PCR"  # a private coding scheme ("99" prefix): DICOM has no code for a pCR probability
PCR_PROBABILITY = hd.sr.CodedConcept("PCRPROB", SCHEME, "Probability of pathologic complete response")
PCR_PREDICTED = hd.sr.CodedConcept("PCRPRED", SCHEME, "Predicted pathologic complete response")
NOT_FOR_DIAGNOSIS = "research use only, not for diagnostic use"
SR_SERIES_NUMBER = 9901


@dataclass(frozen=True)
class ModelIdentity:
    name: str
    version: str
    uri: str  # models:/NAME/VERSION


def box_regions(content: dict) -> list[hd.sr.ImageRegion]:
    """The box as a closed POLYLINE rectangle (pixel edges, column then row) on each of its pre-contrast slices."""
    box = content["box"]
    pre = next(p for p in content["phases"] if p["phase"] == box["reference_phase"])
    r0, r1, c0, c1 = box["row_start"], box["row_end"] + 1, box["column_start"], box["column_end"] + 1
    rectangle = np.array([[c0, r0], [c1, r0], [c1, r1], [c0, r1], [c0, r0]], dtype=float)
    regions = []
    for sop_class, sop_instance, frame in pre["slices"][box["slice_start"]:box["slice_end"] + 1]:
        source = hd.sr.SourceImageForRegion(sop_class, sop_instance, None if frame is None else [frame])
        regions.append(hd.sr.ImageRegion(hd.sr.GraphicTypeValues.POLYLINE, rectangle, source))
    return regions


def build_sr(content: dict, evidence: Sequence[Dataset], model: ModelIdentity) -> hd.sr.Comprehensive3DSR:
    """The SR of one answer's content (UIDs of the source study) with ``evidence`` the source instances used."""
    phases = ", ".join(p["phase"] for p in content["phases"])
    algorithm = hd.sr.AlgorithmIdentification(
        name=model.name, version=model.version,
        parameters=[f"registry {model.uri}", f"inputs {', '.join(content['inputs'])} from phases {phases}",
                    f"decision threshold {content['threshold']:g}", NOT_FOR_DIAGNOSIS])
    unitless = codes.UCUM.NoUnits
    group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="tumour box"),
        referenced_regions=box_regions(content),
        finding_type=codes.SCT.Tumor,
        finding_sites=[hd.sr.FindingSite(codes.SCT.Breast)],
        algorithm_id=algorithm,
        measurements=[hd.sr.Measurement(PCR_PROBABILITY, content["probability"], unitless),
                      hd.sr.Measurement(codes.DCM.ThresholdValue, content["threshold"], unitless)],
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(
            PCR_PREDICTED, codes.SCT.Yes if content["label"] else codes.SCT.No)],
    )
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=[model.uri]), name="her2pcr", model_name=f"{model.name} {model.version}"))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=codes.SCT.MagneticResonanceImagingOfBreast,
        imaging_measurements=[group])
    return hd.sr.Comprehensive3DSR(
        evidence=evidence, content=report, series_instance_uid=generate_uid(), series_number=SR_SERIES_NUMBER,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="her2pcr",
        series_description="her2pcr pCR - NOT FOR DIAGNOSTIC USE",
        coding_schemes=[CodingSchemeIdentificationItem(SCHEME, name="her2pcr local codes")],
        is_complete=True)
