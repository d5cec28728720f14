"""A PACS in the loop: Orthanc with DICOMweb, pulling studies (QIDO-RS / WADO-RS) and storing results (STOW-RS)."""
