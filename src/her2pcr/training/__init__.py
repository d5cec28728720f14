"""Training: input pipeline, fit loop with MLflow tracking, run lineage."""
