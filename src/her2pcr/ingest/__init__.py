"""Ingest: raw DICOM exams and manifests -> de-identified interim exams, tables and a quarantine."""
