"""Statistics of the reference study (paper section 4.6): AUC with DeLong standard error and bootstrap CI,
sensitivity/specificity/accuracy at a 0.5 threshold, and the subset analyses of Supplementary Tables 1-2."""
