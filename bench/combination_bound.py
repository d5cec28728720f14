"""How high can CNN + clinical go, given the CNN's own AUC and a training set of n patients?

Run: python bench/combination_bound.py [--n 85] [--repeats 300]

Draws patients from params.yaml's truth model (institution 1) and stands a CNN in for the image ceiling's
score plus Gaussian noise: a noise level per row, so the CNN's AUC spans what bench/learn.py measures. For each:
the CNN's AUC and its ratio to the ceiling; CNN + clinical with the weights fitted on 20,000 patients (the best
any combination of that CNN can do); and the mean (sd) over ``--repeats`` fits on ``--n`` patients, with
receptor status alone and with receptor status and age. The CNN + clinical / oracle target of bench/learn.py
can be read against these rows. A model of the CNN, not a measurement of it: the noise is independent of the
clinical variables and the fitted CNN score carries no fold-to-fold offsets.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import numpy as np  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from her2pcr.config import load_params  # noqa: E402
from her2pcr.synth.patients import draw_patient  # noqa: E402
from her2pcr.synth.sites import load_sites  # noqa: E402
from learn import CEILING_PATIENTS, IMAGE_PHENOTYPES  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=85)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.5, 0.8, 1.0, 1.2])
    args = parser.parse_args()
    params = load_params(REPO / "params.yaml")
    offset = load_sites(REPO / params.simulate.sites_file)["inst1"].pcr_logit_offset
    rng = np.random.default_rng(params.simulate.seed)
    draws = [draw_patient(rng, params.simulate.truth, offset) for _ in range(2 * CEILING_PATIENTS)]
    phenotypes = np.array([[getattr(d.phenotype, f) for f in IMAGE_PHENOTYPES] for d in draws])
    y = np.array([d.pcr for d in draws])
    hr = np.array([[d.clinical.hr_negative] for d in draws], dtype=float)
    age = np.array([[d.clinical.age] for d in draws], dtype=float)
    fit, test = slice(0, CEILING_PATIENTS), slice(CEILING_PATIENTS, None)
    ceiling = LogisticRegression(max_iter=2000).fit(phenotypes[fit], y[fit]).decision_function(phenotypes)
    ceiling = (ceiling - ceiling[fit].mean()) / ceiling[fit].std()
    oracle_auc = roc_auc_score(y[test], [d.p_true for d in draws[CEILING_PATIENTS:]])
    ceiling_auc = roc_auc_score(y[test], ceiling[test])
    print(f"oracle {oracle_auc:.3f}   image ceiling {ceiling_auc:.3f}   ({CEILING_PATIENTS} test patients)")

    def combined_auc(x: np.ndarray, rows) -> float:
        model = LogisticRegression(max_iter=1000).fit(x[rows], y[rows])
        return roc_auc_score(y[test], model.decision_function(x[test]))

    for noise in args.noise:
        cnn = (ceiling + rng.normal(0, noise, len(ceiling)))[:, None]
        cnn_auc = roc_auc_score(y[test], cnn[test, 0])
        ideal = combined_auc(np.hstack([cnn, hr]), fit)
        small = {name: [combined_auc(x, rng.choice(CEILING_PATIENTS, args.n, replace=False))
                        for _ in range(args.repeats)]
                 for name, x in [("receptor status", np.hstack([cnn, hr])),
                                 ("receptor status + age", np.hstack([cnn, hr, age]))]}
        print(f"noise sd {noise:.1f}: CNN {cnn_auc:.3f} ({cnn_auc / ceiling_auc:.3f} x ceiling)   "
              f"CNN + clinical, ideal weights {ideal:.3f} ({ideal / oracle_auc:.3f} x oracle)   "
              f"fitted on {args.n}: " + ", ".join(
                  f"{name} {np.mean(v):.3f} (sd {np.std(v):.3f}, {np.mean(v) / oracle_auc:.3f} x oracle)"
                  for name, v in small.items()))


if __name__ == "__main__":
    main()
