from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

from her2pcr.serving.deid import Pseudonymiser


def mr_slice(sop: str, frame_time: str = "20150316101530.25") -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = "1.2.3.4", "1.2.3.4.5", "1.2.3.9"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "DOE^JANE", "12345678", "19700204"
    ds.AccessionNumber, ds.InstitutionName, ds.ClinicalTrialSubjectID = "A99", "Hospital X", "inst1-001"
    ds.OperatorsName, ds.StudyDate, ds.AcquisitionTime = "SMITH^BOB", "20150316", "101530.25"
    ds.add_new(0x00091001, "LO", "private value")
    ds.ReferencedImageSequence = Sequence([Dataset()])
    ds.ReferencedImageSequence[0].ReferencedSOPClassUID = MRImageStorage
    ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = "1.2.3.4.5.7"
    ds.ReferencedImageSequence[0].ReferringPhysicianName = "NESTED^NAME"
    ds.FrameAcquisitionDateTime = frame_time
    return ds


def test_identity_goes_and_the_exam_keeps_what_the_reader_needs():
    p = Pseudonymiser()
    ds = p(mr_slice("1.2.3.4.5.6"))
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName",
                    "ClinicalTrialSubjectID", "OperatorsName"):
        assert keyword not in ds, keyword
    assert 0x00091001 not in ds and "ReferringPhysicianName" not in ds.ReferencedImageSequence[0]
    assert ds.SOPClassUID == MRImageStorage and ds.ReferencedImageSequence[0].ReferencedSOPClassUID == MRImageStorage
    assert ds.AcquisitionTime == "101530.25"  # time of day: the phases' timing survives


def test_uids_are_new_consistent_within_a_call_and_restored_by_the_caller_only():
    p = Pseudonymiser()
    a, b = p(mr_slice("1.2.3.4.5.6")), p(mr_slice("1.2.3.4.5.7"))
    assert a.StudyInstanceUID == b.StudyInstanceUID != "1.2.3.4"
    assert a.StudyInstanceUID.startswith("2.25.") and len(a.StudyInstanceUID) <= 64
    assert a.ReferencedImageSequence[0].ReferencedSOPInstanceUID == b.SOPInstanceUID  # references still resolve
    assert a.file_meta.MediaStorageSOPInstanceUID == a.SOPInstanceUID
    assert p.restore(a.SOPInstanceUID) == "1.2.3.4.5.6" and p.restore(a.FrameOfReferenceUID) == "1.2.3.9"
    assert Pseudonymiser()(mr_slice("1.2.3.4.5.6")).StudyInstanceUID != a.StudyInstanceUID  # unlinkable requests


def test_dates_shift_together_so_intervals_and_frame_times_keep_their_meaning():
    p = Pseudonymiser()
    ds = p(mr_slice("1.2.3.4.5.6", frame_time="20150317101530.25"))
    assert ds.StudyDate == "20000101"
    assert ds.FrameAcquisitionDateTime == "20000102101530.25"  # one day after the study, as before
    other_series = mr_slice("1.2.3.4.5.8")
    other_series.StudyDate, other_series.SeriesDate = "20150316", "20150318"
    later = p(other_series)
    assert later.StudyDate == "20000101" and later.SeriesDate == "20000103"  # the same shift for the whole exam
