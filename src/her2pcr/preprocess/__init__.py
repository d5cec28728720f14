"""Deterministic preprocessing of DCE-MRI exams (paper section 4.2).

Small composable transforms (``__init__`` stores settings, ``__call__`` maps an
array to an array): N4 bias-field correction (``bias``), VOI crop, in-plane
pad/crop, slice stacks and max normalisation (``voi``), and the one chain that
composes them for training, evaluation, validation and serving (``chain``).
Random augmentation lives elsewhere; nothing here draws random numbers.
"""
