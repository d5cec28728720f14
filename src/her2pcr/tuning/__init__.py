"""Hyperparameter search: Optuna study over phases, architecture and training settings, tracked in MLflow."""
