"""How often can an external cohort of the study's size pass the gate's AUC checks, whatever the model?

Run: python bench/gate_power.py [--cohorts 2000] [--cnn-ratio 0.956] [--truth data/raw/synthetic/truth.csv]

Draws external cohorts exactly as ``simulate`` does (``draw_case_control`` with each site's patient and pCR counts
and pCR offset, D3 = inst2, D4 = inst3-5, params.yaml's ``cohorts.external``), without rendering images, and scores
each cohort's patients with

- the oracle: the simulator's true probability;
- the image ceiling: ``bench/learn.py``'s logistic regression on the six true image phenotypes;
- a model as good as the CNN: the ceiling's logit plus Gaussian noise, sized so that on 20,000 external patients
  its AUC is ``--cnn-ratio`` times the ceiling's (0.956: ``bench/learn.py --sizes 85`` at the current default).
  Only its AUC is matched, not the kind of error a CNN makes.

Per cohort and scorer it prints the mean AUC and the fraction of cohorts meeting params.yaml's ``min_auc`` and
``min_auc_ci_low`` (DeLong 95 %, as the gate computes it) and both. With ``--truth`` (the pipeline's own simulated
cohorts) and ``--metrics`` (evaluate's), it also prints the pipeline cohort's oracle, ceiling and CNN AUC and
where each falls among the drawn cohorts, and how often the CNN-like model passes on that cohort's own patients.
No images, no training: about a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from her2pcr.config import load_params
from her2pcr.stats.roc import delong
from her2pcr.synth.patients import draw_case_control, draw_patient
from her2pcr.synth.sites import load_sites
from learn import IMAGE_PHENOTYPES, REPO, image_ceiling

SEED_OFFSET = 104_729  # never the pipeline's or bench/learn.py's patients
CALIBRATION_PATIENTS = 20_000


def phenotype_frame(draws) -> pd.DataFrame:
    return pd.DataFrame([{**{f: getattr(d.phenotype, f) for f in IMAGE_PHENOTYPES}, "pcr": d.pcr, "p_true": d.p_true}
                         for d in draws])


def noise_for_ratio(ceiling_logit: np.ndarray, y: np.ndarray, ratio: float, rng: np.random.Generator) -> float:
    """The noise SD whose AUC (ceiling logit + noise) is ``ratio`` x the ceiling's, by bisection."""
    target = ratio * roc_auc_score(y, ceiling_logit)
    noise = rng.standard_normal(len(y))  # common random numbers: the AUC falls monotonically with the SD
    low, high = 0.0, 10.0 * ceiling_logit.std()
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (middle, high) if roc_auc_score(y, ceiling_logit + middle * noise) > target else (low, middle)
    return (low + high) / 2


def passes(result, gate) -> bool:
    """The gate's two AUC checks (``validation.gate``): the AUC and its DeLong CI's lower bound."""
    return result.auc >= gate.min_auc and result.ci_low >= gate.min_auc_ci_low


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohorts", type=int, default=2000)
    parser.add_argument("--cnn-ratio", type=float, default=0.956)
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--truth", type=Path, default=REPO / "data/raw/synthetic/truth.csv")
    parser.add_argument("--metrics", type=Path, default=REPO / "metrics/evaluate.json")
    args = parser.parse_args()
    params = load_params(args.params)
    gate = params.validation.gate
    sites = load_sites(REPO / params.simulate.sites_file)
    ceiling = image_ceiling(params)
    rng = np.random.default_rng(params.simulate.seed + SEED_OFFSET)
    like = f"CNN-like ({args.cnn_ratio:g} x ceiling)"

    def scores(frame: pd.DataFrame, noise_sd: float) -> dict[str, np.ndarray]:
        ceiling_logit = ceiling.decision_function(frame[IMAGE_PHENOTYPES].to_numpy())
        return {"oracle": frame.p_true.to_numpy(), "image ceiling": ceiling_logit,
                like: ceiling_logit + noise_sd * rng.standard_normal(len(frame))}

    external_sites = [s for members in params.cohorts.external.values() for s in members]
    population = phenotype_frame([draw_patient(rng, params.simulate.truth, sites[external_sites[k % len(
        external_sites)]].pcr_logit_offset) for k in range(CALIBRATION_PATIENTS)])
    noise_sd = noise_for_ratio(ceiling.decision_function(population[IMAGE_PHENOTYPES].to_numpy()),
                               population.pcr.to_numpy(), args.cnn_ratio, rng)
    print(f"{CALIBRATION_PATIENTS} external patients: " + ", ".join(
        f"{name} AUC {roc_auc_score(population.pcr, value):.3f}"
        for name, value in scores(population, noise_sd).items()))
    truth = pd.read_csv(args.truth) if args.truth.exists() else None
    cnn_auc = ({c: v["models"]["cnn"]["auc"] for c, v in json.loads(args.metrics.read_text())["cohorts"].items()}
               if args.metrics.exists() else {})
    print(f"{args.cohorts} drawn cohorts each; gate: AUC >= {gate.min_auc:g} and its 95 % CI's lower bound >= "
          f"{gate.min_auc_ci_low:g}")
    for cohort, members in params.cohorts.external.items():
        sizes = {s: params.simulate.cohorts[s] for s in members}
        aucs: dict[str, list[tuple[float, float]]] = {}
        for _ in range(args.cohorts):
            frame = phenotype_frame([d for s, size in sizes.items() for d in draw_case_control(
                rng, params.simulate.truth, sites[s].pcr_logit_offset, size.n, size.n_pcr)])
            for name, value in scores(frame, noise_sd).items():
                result = delong(frame.pcr.to_numpy(), value)
                aucs.setdefault(name, []).append((result.auc, result.ci_low))
        n, n_pcr = sum(s.n for s in sizes.values()), sum(s.n_pcr for s in sizes.values())
        print(f"\n{cohort} ({'+'.join(members)}: {n} patients, {n_pcr} pCR)")
        for name, pairs in aucs.items():
            auc, low = np.array(pairs).T
            auc_ok, low_ok = auc >= gate.min_auc, low >= gate.min_auc_ci_low  # the two checks of ``passes``
            print(f"  {name:28s} mean AUC {auc.mean():.3f} (5th-95th pct {np.percentile(auc, 5):.3f}-"
                  f"{np.percentile(auc, 95):.3f})   AUC ok {auc_ok.mean():.2f}   CI low ok {low_ok.mean():.2f}   "
                  f"both {(auc_ok & low_ok).mean():.2f}")
        if truth is not None:
            own = truth[truth.institution.isin(members)]
            for name, value in list(scores(own, 0.0).items())[:2]:
                result = delong(own.pcr.to_numpy(), value)
                drawn = np.array([a for a, _ in aucs[name]])
                print(f"  pipeline's {cohort}, {name}: AUC {result.auc:.3f} [{result.ci_low:.3f}, "
                      f"{result.ci_high:.3f}], above {np.mean(drawn < result.auc):.1%} of the drawn cohorts")
            own_pass = [passes(delong(own.pcr.to_numpy(), scores(own, noise_sd)[like]), gate)
                        for _ in range(args.cohorts)]
            print(f"  pipeline's {cohort}, {like} on its own patients ({args.cohorts} noise draws): "
                  f"gate's AUC checks pass {np.mean(own_pass):.2f}")
        if cohort in cnn_auc:
            drawn = np.array([a for a, _ in aucs[like]])
            print(f"  pipeline's {cohort}, its CNN ({args.metrics.name}): AUC {cnn_auc[cohort]:.3f}, above "
                  f"{np.mean(drawn < cnn_auc[cohort]):.1%} of the CNN-like draws")


if __name__ == "__main__":
    main()
