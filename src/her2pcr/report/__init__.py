"""The study's tables and figures regenerated from this run's data, as Markdown and HTML."""
