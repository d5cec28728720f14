"""Comparison models of the reference study (paper sections 2.2, 4.5 and 4.6).

* ``clinical``: univariate tests of the clinical variables in D1 and the two multivariable clinical logistic
  regressions (significant variables only; all variables);
* ``ranking``: the six feature-ranking criteria of the pharmacokinetic (PK) model search;
* ``pk_model``: the ranking x number of features x classifier search of Supplementary Table 6;
* ``combined``: the CNN + clinical logistic regression trained on D2, with each coefficient's p-value.
"""
