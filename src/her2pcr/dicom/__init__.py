"""DICOM ingest: discover files, order dynamic phases, load exams as 4-D arrays."""
