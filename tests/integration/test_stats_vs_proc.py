"""her2pcr.stats.roc against R's pROC 1.18 (the reference implementation of DeLong in R) on tied scores.

One Rscript run computes, for every score set, pROC's AUC, DeLong variance and CI, the paired DeLong test of
two correlated curves and a stratified bootstrap CI; the Python results must agree to 1e-6 (the bootstrap,
whose random streams differ, to Monte Carlo error). R only loads installed packages; no network.
"""

from __future__ import annotations

import math
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from her2pcr.stats.roc import bootstrap_auc_ci, delong, delong_paired

pytestmark = pytest.mark.integration

TOLERANCE = 1e-6

R_SCRIPT = r"""
suppressMessages(library(pROC))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
set.seed(20240611)
for (s in unique(d$set)) {
  x <- d[d$set == s, ]
  r1 <- roc(x$y, x$a, direction = "<", levels = c(0, 1), quiet = TRUE)
  r2 <- roc(x$y, x$b, direction = "<", levels = c(0, 1), quiet = TRUE)
  ci1 <- ci.auc(r1, method = "delong")
  ci2 <- ci.auc(r2, method = "delong")
  test <- roc.test(r1, r2, method = "delong", paired = TRUE)
  boot <- ci.auc(r1, method = "bootstrap", boot.n = 2000, boot.stratified = TRUE, progress = "none")
  out <- list(auc_a = auc(r1), auc_b = auc(r2), var_a = var(r1), var_b = var(r2),
              ci_low_a = ci1[1], ci_high_a = ci1[3], ci_low_b = ci2[1], ci_high_b = ci2[3],
              paired_z = test$statistic, paired_p = test$p.value, boot_low_a = boot[1], boot_high_a = boot[3])
  for (k in names(out)) cat(sprintf("%s.%s=%s\n", s, k, format(as.numeric(out[[k]]), digits = 17)))
}
"""


def score_sets() -> dict[str, pd.DataFrame]:
    """Fixed labels y and two correlated score sets a, b per case, every score rounded so ties abound."""
    rng = np.random.default_rng(2024)

    def make(n: int, n_pos: int, shift: float, decimals: int, scale: float = 1.0) -> pd.DataFrame:
        y = np.r_[np.ones(n_pos, dtype=int), np.zeros(n - n_pos, dtype=int)]
        latent = rng.normal(size=n) + shift * y
        a = np.round(scale * latent, decimals)
        b = np.round(scale * (0.7 * latent + 0.7 * rng.normal(size=n)), decimals)
        return pd.DataFrame({"y": y, "a": a, "b": b})

    sets = {
        "balanced": make(40, 20, 1.0, 1),  # ~20 patients per class, 1-decimal scores
        "many_ties": make(60, 28, 0.7, 1, scale=0.15),  # only a handful of distinct values per score
        "unbalanced": make(30, 6, 1.2, 1),  # 6 pCR against 24 non-pCR
        "d3_like": make(28, 16, 1.5, 1),  # the size of testing cohort D3
    }
    # Probabilities in [0, 1] like the CNN's, still on a 0.1 grid.
    d3 = sets["d3_like"]
    sets["d3_like"] = d3.assign(a=np.round(1 / (1 + np.exp(-d3.a)), 1), b=np.round(1 / (1 + np.exp(-d3.b)), 1))
    return sets


def proc_available() -> str | None:
    """Why pROC cannot be run here, or None when it can."""
    if shutil.which("Rscript") is None:
        return "Rscript is not installed"
    probe = subprocess.run(["Rscript", "-e", "library(pROC)"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        return f"R package pROC is not installed: {probe.stderr.strip()[-200:]}"
    return None


@pytest.fixture(scope="module")
def proc(tmp_path_factory) -> dict[str, dict[str, float]]:
    reason = proc_available()
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("proc")
    data = pd.concat([frame.assign(set=name) for name, frame in score_sets().items()], ignore_index=True)
    data.to_csv(folder / "scores.csv", index=False)
    (folder / "compare.R").write_text(R_SCRIPT)
    run = subprocess.run(["Rscript", str(folder / "compare.R"), str(folder / "scores.csv")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    results: dict[str, dict[str, float]] = {}
    for line in run.stdout.splitlines():
        key, value = line.split("=", 1)
        name, field = key.split(".", 1)
        results.setdefault(name, {})[field] = float(value)
    assert set(results) == set(score_sets()), run.stdout
    return results


def test_score_sets_have_ties():
    for name, frame in score_sets().items():
        for column in ("a", "b"):
            assert frame[column].nunique() < len(frame), (name, column)
    assert score_sets()["many_ties"].a.nunique() <= 12


@pytest.mark.parametrize("name", list(score_sets()))
def test_delong_agrees_with_proc(proc, name):
    frame, expected = score_sets()[name], proc[name]
    for column in ("a", "b"):
        result = delong(frame.y, frame[column])
        assert result.auc == pytest.approx(expected[f"auc_{column}"], abs=TOLERANCE)
        assert result.se == pytest.approx(math.sqrt(expected[f"var_{column}"]), abs=TOLERANCE)
        assert result.ci_low == pytest.approx(expected[f"ci_low_{column}"], abs=TOLERANCE)
        assert result.ci_high == pytest.approx(expected[f"ci_high_{column}"], abs=TOLERANCE)


@pytest.mark.parametrize("name", list(score_sets()))
def test_paired_delong_agrees_with_proc(proc, name):
    frame, expected = score_sets()[name], proc[name]
    result = delong_paired(frame.y, frame.a, frame.b)
    assert result.z == pytest.approx(expected["paired_z"], abs=TOLERANCE)
    assert result.p_value == pytest.approx(expected["paired_p"], abs=TOLERANCE)


@pytest.mark.parametrize("name", list(score_sets()))
def test_bootstrap_agrees_with_proc_to_monte_carlo_error(proc, name):
    # Different random streams (numpy vs R), 2000 resamples each: the percentile bounds differ by Monte Carlo
    # error only, about 0.01 here.
    frame, expected = score_sets()[name], proc[name]
    low, high = bootstrap_auc_ci(frame.y, frame.a, n_resamples=2000, seed=0)
    assert low == pytest.approx(expected["boot_low_a"], abs=0.03)
    assert high == pytest.approx(expected["boot_high_a"], abs=0.03)
