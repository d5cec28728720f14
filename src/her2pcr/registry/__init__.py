"""MLflow Model Registry: registration with lineage, validation-gate tags, promotion."""
