"""her2pcr: pCR prediction for HER2+ breast cancer from pre-treatment DCE-MRI."""

__version__ = "0.1.0"
