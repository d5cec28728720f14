"""How often does the gate's fairness check fail a fair model, and catch an unfair one, at a cohort's group sizes?

Run: python bench/fairness.py [--cohorts 300] [--bootstrap 200]

Simulates thresholded predictions of two subgroups per cohort with ``stats.fairness.variable_fairness`` (the
gate's own function, every group judged: ``min_n`` 1) and prints, per group size (pCR + non-pCR patients in each
group), the fraction of cohorts failing params.yaml's ``max_equalized_odds_disparity`` on the point estimate and on
the bootstrap CI's lower bound, for a fair model (the same TPR and FPR in both groups) and an unfair one. The sizes
start at a 29-patient external cohort's age groups (3 pCR + 7 others, 3 + 11). Why subgroups are judged only with
``min_subgroup_n`` patients of each class: the point estimate fails a fair model often in small groups, and the
CI's lower bound seldom catches an unfair one at any size tried.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from her2pcr.config import load_params
from her2pcr.stats.fairness import variable_fairness

REPO = Path(__file__).resolve().parents[1]
SIZES = [((3, 7), (3, 11)), ((5, 10), (5, 10)), ((10, 10), (10, 10)), ((20, 20), (20, 20))]
FAIR = ((0.6, 0.2), (0.6, 0.2))  # (TPR, FPR) per group
UNFAIR = ((0.9, 0.1), (0.3, 0.3))  # a true disparity of 0.6 + 0.2 = 0.8


def cohort(rng: np.random.Generator, sizes, rates) -> pd.DataFrame:
    """Patients of two groups whose predicted class (probability 1 or 0) hits each class at the group's rate."""
    rows = []
    for group, ((n_pcr, n_other), (tpr, fpr)) in enumerate(zip(sizes, rates, strict=True)):
        rows += [(group, 1, float(rng.random() < tpr)) for _ in range(n_pcr)]
        rows += [(group, 0, float(rng.random() < fpr)) for _ in range(n_other)]
    return pd.DataFrame(rows, columns=["group", "pcr", "probability"])


def failure_rates(sizes, rates, limit: float, cohorts: int, bootstrap: int, seed: int) -> tuple[float, float]:
    """Fractions of cohorts over ``limit``: on the disparity's point estimate, and on its CI's lower bound."""
    rng = np.random.default_rng(seed)
    point = lower = 0
    for k in range(cohorts):
        result = variable_fairness(cohort(rng, sizes, rates), "group", 0.5, 1, bootstrap, k)
        point += result.disparity > limit
        lower += result.disparity_ci_low > limit
    return point / cohorts, lower / cohorts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohorts", type=int, default=300)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    args = parser.parse_args()
    limit = load_params(args.params).validation.gate.max_equalized_odds_disparity
    print(f"fraction of {args.cohorts} cohorts over max_equalized_odds_disparity {limit:g} "
          f"(point estimate / bootstrap CI's lower bound)")
    for sizes in SIZES:
        fair = failure_rates(sizes, FAIR, limit, args.cohorts, args.bootstrap, 0)
        unfair = failure_rates(sizes, UNFAIR, limit, args.cohorts, args.bootstrap, 1)
        groups = " and ".join(f"{p} + {n}" for p, n in sizes)
        print(f"  groups of {groups}: fair model fails {fair[0]:.2f} / {fair[1]:.2f}; "
              f"unfair model (disparity 0.8) fails {unfair[0]:.2f} / {unfair[1]:.2f}", flush=True)


if __name__ == "__main__":
    main()
