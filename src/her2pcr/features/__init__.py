"""Hand-crafted features of the comparison models (paper section 4.5).

``pk`` holds the eight semi-quantitative pharmacokinetic (PK) parameters of
Supplementary Table 5 as pure numpy/scipy functions: the tumour mask inside the
annotated box, the voxel-wise maps, and the 48 statistics (5 per map over the
tumour plus each parameter of the mean tumour curve). ``stage`` turns the
interim exams into one feature row per exam with phase timing, listing every
exam it cannot use with the reason.
"""
