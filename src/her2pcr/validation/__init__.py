"""External validation of a registered model version on one cohort: data-quality expectations derived from the
training cohort, metrics with CIs, acquisition correlations, and the gate whose decision is tagged on the version."""
