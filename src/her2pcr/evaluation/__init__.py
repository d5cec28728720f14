"""Evaluation: patient-level predictions, the study's statistics per cohort, figures."""
