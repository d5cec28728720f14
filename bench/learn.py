"""The evidence bench: does the CNN learn what the images hold, against the image ceiling and the oracle?

Run: python bench/learn.py [--sizes 85 200 400] [--pool 400] [--external 300] [--draws 1] [--cache data/bench/learn]
     python bench/learn.py --in-site --sizes 85 --draws 5 [--train '{"epochs": 20}']

From params.yaml alone (simulate, preprocess, train sections): simulated institution-1 training sets of each
size and one pooled external test set drawn from the other sites' protocols (in proportion to their cohorts),
all with a seed of their own, so none of them is a pipeline cohort. Printed per training size, AUCs on the
pooled external set with DeLong 95 % CIs:

- oracle: the simulator's true probability (knows receptor status and age too);
- image ceiling: logistic regression on the six true image phenotypes, fitted on 20,000 simulated patients;
- CNN (the train section's model, selection and central stacks) and CNN + clinical (logistic on the CNN's
  out-of-fold logit and receptor status, fitted on the training set; each fold model's logit is standardised by
  its own held-out patients, see ``fold_standardised_logits``);
- image-feature reference (``synth.image_features`` + logistic), clinical (receptor status) and PK
  (the 48 PK features, L2 logistic) models, all fitted on the same training set;
- paired DeLong of the CNN against each, CNN / image ceiling and CNN + clinical / oracle, the CNN's training
  AUC (in-sample and out-of-fold), seconds per epoch, the CNN's and the ceiling's AUC site by site, and their
  Spearman correlation with the tumour's diameter, which pCR's true probability does not use (a size cue).

``--input-shift`` prints, without labels or training, how far the chain's inputs move between site protocols: per
site, the median over its exams of each input's 95th percentile (the tumour's enhancement), and the largest
over the smallest site median (1 = no shift); the full mode prints it too.

``--in-site`` is the evidence to choose a training recipe on, and never looks at the external set: for each
draw, one model (no fold ensemble) is trained on the draw and scored after every epoch on 150 other
institution-1 patients of the pool, beside the image ceiling, the image-feature reference (fitted on the draw)
and the oracle on the same patients. ``--train`` overrides keys of the train section (JSON) in either mode.

Rendered and preprocessed exams are cached under --cache keyed by the simulator's code, the seed and the
chain's fingerprint, so a re-run with another train section only retrains. Nothing here is a test: up to
~40 minutes on 2 cores from a cold cache.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from her2pcr.config import CohortSize, load_params  # noqa: E402
from her2pcr.features.pk import PKError, pk_features  # noqa: E402
from her2pcr.preprocess.chain import PreprocessChain  # noqa: E402
from her2pcr.stats.roc import delong, delong_paired  # noqa: E402
from her2pcr.synth.cohort import code_fingerprint, plan_site, render_task  # noqa: E402
from her2pcr.synth.patients import draw_patient  # noqa: E402
from her2pcr.synth.sites import load_sites  # noqa: E402
from her2pcr.training.data import StackSet, load_stacks, patient_probabilities  # noqa: E402

BENCH_SEED_OFFSET = 7919  # bench patients are never pipeline patients
IMAGE_PHENOTYPES = ["spiculation", "peri_thickness_mm", "peri_ktrans", "heterogeneity", "ktrans", "ve"]
CEILING_PATIENTS = 20_000
# The study's clinical model holds the variables significant in its training set: receptor status (ER p 0.0005,
# PR p 0.007), not age. An extra near-null covariate costs ~0.01 AUC at 85 patients (bench/combination_bound.py).
CLINICAL = ["hr_negative"]


def synth_fingerprint() -> str:
    """The simulator's code and the site protocols: a change of either renders the bench's exams again."""
    return hashlib.sha256((code_fingerprint() + (REPO / "conf/sites.yaml").read_text()).encode()).hexdigest()[:12]


def plan(simulate, sites, site_name: str, n: int, n_pcr: int, tag: int, root: Path):
    """Render tasks of ``n`` patients of one site's protocol, on a bench-only seed."""
    params = simulate.model_copy(update={"seed": simulate.seed + BENCH_SEED_OFFSET + tag,
                                         "cohorts": {site_name: CohortSize(n=n, n_pcr=n_pcr)}})
    tasks = plan_site(params, site_name, sites[site_name], root)
    return [t.__class__(**{**t.__dict__, "patient_id": f"b{tag}-{t.patient_id}"}) for t in tasks]


def render(job) -> dict:
    """Render one exam in memory; cache its images, box and spacing, and its truth, PK and image features."""
    task, out = job
    from her2pcr.synth.image_features import box_zero_based, exam_features

    row_file = out.with_suffix(".json")
    if row_file.exists() and out.exists():  # an interrupted run resumes exam by exam
        return json.loads(row_file.read_text())
    exam, box, truth = render_task(task)
    image = np.stack(exam.phases)
    acq = exam.acquisition
    spacing = (acq.slice_thickness_mm, acq.pixel_spacing_mm, acq.pixel_spacing_mm)
    box0 = [box[k] - 1 for k in ("row_start", "row_end", "column_start", "column_end", "slice_start", "slice_end")]
    np.savez_compressed(out, image=image, spacing=np.array(spacing), box=np.array(box0))
    row = {**truth, "age": task.draw.clinical.age}
    with contextlib.suppress(PKError):  # no voxel over the PK threshold: the PK model imputes the median
        row.update({f"pk_{k}": v for k, v in pk_features(image, acq.phase_times_s, box0, spacing).items()})
    row.update({f"img_{k}": v for k, v in exam_features(list(exam.phases), box_zero_based(box, 1), spacing).items()})
    row_file.write_text(json.dumps(row, default=float))
    return row


def preprocess(job) -> None:
    """The chain's inputs of one cached exam (float16, like data/processed)."""
    raw, chain_config, out = job
    if out.exists():
        return
    with np.load(raw) as exam:
        stacks = PreprocessChain(chain_config)(exam["image"].astype(np.float32), tuple(exam["spacing"]),
                                               tuple(int(v) for v in exam["box"]))
    np.savez_compressed(out, **{k: v.astype(np.float16) for k, v in stacks.items()})


def build_cache(args, params) -> tuple[pd.DataFrame, Path]:
    """Rendered exams keyed by the simulator's code and the sizes; the chain's inputs keyed by its fingerprint."""
    sites = load_sites(REPO / params.simulate.sites_file)
    chain = PreprocessChain(params.preprocess.chain_config())
    key = hashlib.sha256(repr((synth_fingerprint(), params.simulate.seed, params.simulate.matrix,
                               params.simulate.slices, args.pool, args.external)).encode()).hexdigest()[:12]
    raw_dir = args.cache / key
    inputs_dir = raw_dir / chain.fingerprint()
    inputs_dir.mkdir(parents=True, exist_ok=True)
    n_train = args.pool
    tasks = [(t, "train") for t in plan(params.simulate, sites, "inst1", n_train, n_train // 2, 0, raw_dir)]
    external = {s: c for s, c in params.simulate.cohorts.items() if s != "inst1"}
    total = sum(c.n for c in external.values())
    for k, (site, size) in enumerate(sorted(external.items())):
        n = int(round(args.external * size.n / total))
        n_pcr = int(round(n * size.n_pcr / size.n))
        tasks += [(t, "external") for t in plan(params.simulate, sites, site, n, n_pcr, k + 1, raw_dir)]
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        rows = list(pool.map(render, [(t, raw_dir / f"{t.patient_id}.npz") for t, _ in tasks], chunksize=2))
        rendered = time.perf_counter()
        list(pool.map(preprocess, [(raw_dir / f"{t.patient_id}.npz", chain.config, inputs_dir / f"{t.patient_id}.npz")
                                   for t, _ in tasks], chunksize=2))
    print(f"{len(rows)} exams: rendered in {rendered - start:.0f} s, preprocessed in "
          f"{time.perf_counter() - rendered:.0f} s (cached under {inputs_dir})", flush=True)
    table = pd.DataFrame(rows)
    table["set"] = [s for _, s in tasks]
    return table.set_index("patient_id"), inputs_dir


def image_ceiling(params) -> LogisticRegression:
    sites = load_sites(REPO / params.simulate.sites_file)
    rng = np.random.default_rng(params.simulate.seed + BENCH_SEED_OFFSET)
    draws = [draw_patient(rng, params.simulate.truth, sites["inst1"].pcr_logit_offset)
             for _ in range(CEILING_PATIENTS)]
    x = np.array([[getattr(d.phenotype, f) for f in IMAGE_PHENOTYPES] for d in draws])
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, [d.pcr for d in draws])


def fitted_scores(train: pd.DataFrame, test: pd.DataFrame, columns: list[str], c: float = 1.0) -> np.ndarray:
    columns = [col for col in columns if train[col].notna().all()]
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
    fill = train[columns].median()
    model.fit(train[columns], train.pcr)
    return model.predict_proba(test[columns].fillna(fill))[:, 1]


def fold_standardised_logits(result, external: StackSet, order: pd.Index) -> tuple[np.ndarray, pd.Series, pd.Series]:
    """The ensemble's external probabilities, and the CNN score the combined model uses
    (``baselines.combined.fold_standardisation``): out-of-fold for the training patients, the mean of the
    members' standardised logits for an external patient."""
    from her2pcr.baselines.combined import fold_standardisation, member_score, out_of_fold_score
    from her2pcr.models.cnn import ensemble_members, predict_probability

    out_of_fold = pd.DataFrame({"probability": result.out_of_fold, "fold": result.folds})
    standardisation = fold_standardisation(out_of_fold)
    members = pd.DataFrame({k: patient_probabilities(predict_probability(m, external.inputs),
                                                     external.patient_ids).loc[order]
                            for k, m in enumerate(ensemble_members(result.model))})
    # the ensemble's output is the mean of its members' probabilities, stack by stack and so patient by patient
    return (members.mean(axis=1).to_numpy(), out_of_fold_score(out_of_fold, standardisation),
            member_score(members, standardisation))


def stratified_subset(table: pd.DataFrame, n: int, draw: int = 0) -> list[str]:
    """Half pCR, half not: the first patients by id for draw 0, a seeded random choice for the other draws."""
    chosen = []
    for label, k in ((1, n // 2), (0, n - n // 2)):
        ids = table[table.pcr == label].index.sort_values()
        rng = np.random.default_rng(draw)
        chosen += (ids[:k] if draw == 0 else rng.choice(ids, size=k, replace=False)).tolist()
    return sorted(chosen)


def ci(y, s) -> str:
    r = delong(y, s)
    return f"{r.auc:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[85, 200, 400])
    parser.add_argument("--pool", type=int, default=400,
                        help="institution-1 patients rendered; each training set is a stratified subset of them")
    parser.add_argument("--external", type=int, default=300)
    parser.add_argument("--cache", type=Path, default=REPO / "data/bench/learn")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--draws", type=int, default=1,
                        help="training sets per size: draw 0 in full, then the CNN's spread over other draws")
    parser.add_argument("--in-site", action="store_true",
                        help="per-epoch AUC on held-out institution-1 patients (recipe selection); no external set")
    parser.add_argument("--input-shift", action="store_true",
                        help="per-site scale of the chain's inputs (label-free); no training")
    parser.add_argument("--train", type=json.loads, default={}, help="train-section overrides, as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("her2pcr").setLevel(logging.INFO)
    params = load_params(args.params)
    if max(args.sizes) > args.pool:
        parser.error(f"--pool {args.pool} is smaller than --sizes {max(args.sizes)}")
    params = params.model_copy(update={"train": params.train.model_copy(update=args.train)})
    table, folder = build_cache(args, params)
    train_pool = table[table.set == "train"]
    input_shift(table, folder, params.train.phases)
    if args.input_shift:
        return
    if args.in_site:
        for n in args.sizes:
            in_site(args.draws, n, train_pool, params, folder)
        return
    test = table[table.set == "external"]
    y = test.pcr.to_numpy()
    ceiling = image_ceiling(params).predict_proba(test[IMAGE_PHENOTYPES].to_numpy())[:, 1]
    oracle = test.p_true.to_numpy()
    pk_cols = [c for c in table.columns if c.startswith("pk_")]
    img_cols = [c for c in table.columns if c.startswith("img_")]
    tp = params.train
    print(f"external set: {len(test)} patients ({int(y.sum())} pCR) from {sorted(test.institution.unique())}; "
          f"model inputs {tp.phases}, selection {tp.selection}, {tp.epochs} epochs")
    print(f"oracle {ci(y, oracle)}   image ceiling {ci(y, ceiling)}")
    from her2pcr.models.cnn import predict_probability
    from her2pcr.training.fit import fit_cv_ensemble, seed_everything

    for n in args.sizes:
        ids = stratified_subset(train_pool, n)
        train = train_pool.loc[ids]
        seed_everything(tp)
        stacks = load_stacks(folder, ids, tp.phases, train_pool.pcr, tp.max_stacks_per_patient)
        start = time.perf_counter()
        result = fit_cv_ensemble(tp, stacks)
        seconds = time.perf_counter() - start
        per_epoch = float(np.mean([h["seconds"].mean() for h in result.fold_histories]))
        external = load_stacks(folder, list(test.index), tp.phases, test.pcr).central(tp.central_stack_fraction)
        cnn, train_z, test_z = fold_standardised_logits(result, external, test.index)
        scored = stacks.central(tp.central_stack_fraction)
        in_sample = patient_probabilities(predict_probability(result.model, scored.inputs),
                                          scored.patient_ids).loc[ids].to_numpy()
        combined = fitted_scores(train.assign(cnn_z=train_z.loc[ids]), test.assign(cnn_z=test_z),
                                 ["cnn_z", *CLINICAL])
        others = {
            "image ceiling": ceiling, "oracle": oracle,
            "CNN + clinical": combined,
            "image features": fitted_scores(train, test, img_cols, c=0.1) if img_cols else None,
            "clinical": fitted_scores(train, test, CLINICAL),
            "PK": fitted_scores(train, test, pk_cols, c=0.1),
        }
        print(f"\n== {n} training patients: CNN {ci(y, cnn)}  (train in-sample "
              f"{delong(train.pcr, in_sample).auc:.3f}, out-of-fold {result.best_val_patient_auc:.3f}, "
              f"{result.weights_text()}, {per_epoch:.1f} s/epoch/fold, {seconds:.0f} s in all)")
        for name, scores in others.items():
            if scores is None:
                continue
            paired = delong_paired(y, cnn, scores)
            print(f"  {name:16s} {ci(y, scores)}   CNN - it {paired.difference:+.3f} "
                  f"(paired DeLong p {paired.p_value:.3g})")
        sites = test.institution.to_numpy()
        print("  per site, CNN / image ceiling: " + ", ".join(
            f"{site} (n {int((sites == site).sum())}) {roc_auc_score(y[sites == site], cnn[sites == site]):.3f} / "
            f"{roc_auc_score(y[sites == site], ceiling[sites == site]):.3f}" for site in sorted(set(sites))))
        size_rho = spearmanr(cnn, test.tumour_diameter_drawn_mm).statistic
        print(f"  CNN vs tumour diameter: Spearman {size_rho:+.2f} (image ceiling "
              f"{spearmanr(ceiling, test.tumour_diameter_drawn_mm).statistic:+.2f})")
        r_cnn, r_comb = delong(y, cnn).auc, delong(y, combined).auc
        print(f"  CNN / image ceiling {r_cnn / delong(y, ceiling).auc:.3f}   "
              f"CNN + clinical / oracle {r_comb / delong(y, oracle).auc:.3f}", flush=True)
        if args.draws > 1:
            spread(args.draws, n, train_pool, test, tp, folder, r_cnn, others["image features"])


def input_shift(table: pd.DataFrame, folder: Path, phases: list[str]) -> None:
    """Per site, the median over its exams of each input's 95th percentile, and the max / min ratio of the sites."""
    rows = []
    for pid, site in table.institution.items():
        with np.load(folder / f"{pid}.npz") as inputs:
            rows.append({"site": site, **{p: float(np.percentile(inputs[p], 95)) for p in phases}})
    medians = pd.DataFrame(rows).groupby("site").median()
    print("input shift (median of each exam's 95th percentile): " + "; ".join(
        f"{p}: " + ", ".join(f"{site} {v:.3f}" for site, v in medians[p].items())
        + f" (max / min {medians[p].max() / medians[p].min():.2f})" for p in phases), flush=True)


IN_SITE_PATIENTS = 150  # held-out institution-1 patients per draw
IN_SITE_STACKS = 12  # stacks per held-out patient, spread over the VOI
LAST_EPOCHS = 5  # the score of a recipe: the mean over its last epochs, not the luckiest one


def in_site(draws: int, n: int, train_pool: pd.DataFrame, params, folder: Path) -> None:
    """Per draw, one model's patient-level AUC after every epoch on held-out institution-1 patients."""
    from her2pcr.training.fit import fit_stacks, seed_everything

    tp = params.train
    ceiling = image_ceiling(params)
    img_cols = [c for c in train_pool.columns if c.startswith("img_")]
    scores = []
    for draw in range(draws):
        ids = stratified_subset(train_pool, n, draw)
        rest = train_pool.drop(ids)
        held = rest.loc[stratified_subset(rest, min(IN_SITE_PATIENTS, len(rest)), 100 + draw)]
        seed_everything(tp)
        train = load_stacks(folder, ids, tp.phases, train_pool.pcr, tp.max_stacks_per_patient)
        validation = load_stacks(folder, list(held.index), tp.phases, train_pool.pcr, IN_SITE_STACKS)
        _, history, _ = fit_stacks(tp, train, validation)
        curve = history["val_patient_auc"]
        scores.append(float(curve.iloc[-LAST_EPOCHS:].mean()))
        references = {
            "image ceiling": ceiling.predict_proba(held[IMAGE_PHENOTYPES].to_numpy())[:, 1],
            "image features": fitted_scores(train_pool.loc[ids], held, img_cols, c=0.1),
            "oracle": held.p_true.to_numpy()}
        print(f"  draw {draw}: CNN last-{LAST_EPOCHS}-epoch mean {scores[-1]:.3f}, per epoch "
              f"{' '.join(f'{v:.3f}' for v in curve)}; " + ", ".join(
                  f"{name} {roc_auc_score(held.pcr, s):.3f}" for name, s in references.items()), flush=True)
    print(f"in-site, {n} training patients, {len(held)} held out per draw: CNN mean {np.mean(scores):.3f} "
          f"over {draws} draws ({', '.join(f'{v:.3f}' for v in scores)})")


def spread(draws: int, n: int, train_pool: pd.DataFrame, test: pd.DataFrame, tp, folder: Path, first: float,
           first_features) -> None:
    """The CNN's external AUC over other training draws of the same size (its variance across training sets), with
    the image-feature reference fitted on each draw for comparison."""
    from her2pcr.models.cnn import predict_probability
    from her2pcr.training.fit import fit_cv_ensemble, seed_everything

    y = test.pcr.to_numpy()
    img_cols = [c for c in train_pool.columns if c.startswith("img_")]
    external = load_stacks(folder, list(test.index), tp.phases, test.pcr).central(tp.central_stack_fraction)
    cnn_aucs, feature_aucs = [first], [roc_auc_score(y, first_features)]
    for draw in range(1, draws):
        ids = stratified_subset(train_pool, n, draw)
        seed_everything(tp)
        result = fit_cv_ensemble(tp, load_stacks(folder, ids, tp.phases, train_pool.pcr, tp.max_stacks_per_patient))
        scores = patient_probabilities(predict_probability(result.model, external.inputs),
                                       external.patient_ids).loc[test.index].to_numpy()
        cnn_aucs.append(roc_auc_score(y, scores))
        feature_aucs.append(roc_auc_score(y, fitted_scores(train_pool.loc[ids], test, img_cols, c=0.1)))
        print(f"  draw {draw}: CNN {cnn_aucs[-1]:.3f} (out-of-fold {result.best_val_patient_auc:.3f}), "
              f"image features {feature_aucs[-1]:.3f}", flush=True)
    for name, values in (("CNN", cnn_aucs), ("image features", feature_aucs)):
        print(f"  {name} over {draws} training draws of {n}: mean {np.mean(values):.3f}, "
              f"sd {np.std(values, ddof=1):.3f}, range {min(values):.3f}-{max(values):.3f}")


if __name__ == "__main__":
    main()
