"""Data-quality checks (Great Expectations) and acquisition reports."""
