"""Fit the multi-input CNN, selecting the epoch on patient-level AUC: a holdout cohort, or cross-validation.

``selection: cv`` (default) trains one model per patient-level stratified fold of the training cohorts, picks
the epoch with the best mean out-of-fold AUC, and returns the ensemble of the fold models at that epoch (their
mean probability). Every training patient then has an out-of-fold prediction, which is the honest estimate and
what a CNN + clinical combination is fitted on. ``selection: holdout`` is the paper's: the validation cohorts'
AUC per epoch; the weights of the best epoch are the ones returned (not the last epoch's).

``average_weights`` replaces the choice of one epoch by the mean of every epoch's weights from ``min_epoch`` on
(stochastic weight averaging over the plateau); the held-out predictions are then those of the averaged weights.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import yaml

from her2pcr.config import TrainParams
from her2pcr.models.augment import AugmentConfig, Augmenter, with_augmentation
from her2pcr.models.cnn import CNNConfig, build_ensemble, build_model, encode_labels, predict_probability
from her2pcr.stats.roc import auc
from her2pcr.training.data import StackSet, load_stacks, patient_probabilities, patients_of, read_index

log = logging.getLogger(__name__)
TUNABLE = ("phases", "filters", "dense_units", "dropout", "dense_dropout", "activation", "initializer", "optimizer",
           "learning_rate", "momentum", "decay", "batch_size", "augmentation_strength")


def resolve_params(params: TrainParams) -> tuple[TrainParams, str]:
    """params.yaml's train section, overridden by the search result file when it exists."""
    if not params.best_params_file.exists():
        return params, "params.yaml"
    best = yaml.safe_load(params.best_params_file.read_text(encoding="utf-8")) or {}
    unknown = set(best) - set(TUNABLE)
    if unknown:
        raise ValueError(f"{params.best_params_file}: keys {sorted(unknown)} are not tunable train params")
    return TrainParams.model_validate({**params.model_dump(), **best}), str(params.best_params_file)


def cnn_config(params: TrainParams, input_size: int, channels: int) -> CNNConfig:
    return CNNConfig(phases=list(params.phases), input_size=input_size, channels=channels,
                     blocks=len(params.filters), filters=list(params.filters), padding=params.padding,
                     dropout_rates=list(params.dropout), dense_units=params.dense_units,
                     dense_dropout=params.dense_dropout, activation=params.activation,
                     initializer=params.initializer, normalization=params.normalization, head=params.head)


def make_optimizer(params: TrainParams, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The paper's SGD with momentum and per-epoch inverse-time decay (Keras 2 `decay`), or another optimiser."""
    rate = keras.optimizers.schedules.InverseTimeDecay(params.learning_rate, decay_steps=max(steps_per_epoch, 1),
                                                       decay_rate=params.decay)
    if params.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=rate, momentum=params.momentum)
    if params.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=rate, momentum=params.momentum)
    return {"adagrad": keras.optimizers.Adagrad, "adadelta": keras.optimizers.Adadelta,
            "adam": keras.optimizers.Adam}[params.optimizer](learning_rate=rate)


def training_input(stacks: StackSet, output_units: int, batch_size: int, seed: int, shuffle: bool = True):
    """A tf.data pipeline on TensorFlow (shuffled, batched, prefetched); plain arrays on other backends."""
    targets = encode_labels(stacks.labels, output_units)
    if keras.backend.backend() != "tensorflow":
        return stacks.inputs, targets
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((stacks.inputs, targets))
    if shuffle:
        data = data.shuffle(len(stacks), seed=seed, reshuffle_each_iteration=True)
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def patient_auc(model: keras.Model, stacks: StackSet) -> tuple[float, pd.Series]:
    """Patient-level AUC (mean probability over a patient's stacks) and the patient probabilities."""
    probabilities = patient_probabilities(predict_probability(model, stacks.inputs), stacks.patient_ids)
    labels = stacks.patient_labels().loc[probabilities.index]
    value = auc(labels.to_numpy(), probabilities.to_numpy()) if labels.nunique() == 2 else float("nan")
    return value, probabilities


class EpochSnapshots(keras.callbacks.Callback):
    """After every epoch: patient-level validation AUC (``val_patient_auc``) and a copy of the weights.

    The copies let the selected epoch's weights be restored exactly; the models here are small enough to keep
    every epoch in memory.
    """

    def __init__(self, model: keras.Model, stacks: StackSet | None, on_epoch=None) -> None:
        super().__init__()
        self.inner, self.stacks, self.on_epoch = model, stacks, on_epoch
        self.weights: list[list[np.ndarray]] = []
        self.predictions: list[pd.Series] = []
        self.seconds: list[float] = []
        self._start = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._start)
        self.weights.append([w.copy() for w in self.inner.get_weights()])
        value = float("nan")
        if self.stacks is not None and len(self.stacks):
            value, probabilities = patient_auc(self.inner, self.stacks)
            self.predictions.append(probabilities)
        if logs is not None:
            logs["val_patient_auc"] = value
            logs["seconds"] = self.seconds[-1]
        if self.on_epoch is not None:
            self.on_epoch(epoch, value)


@dataclass
class FitResult:
    model: keras.Model
    history: pd.DataFrame  # per epoch: loss, stack_auc, val_patient_auc (mean over folds under cv), seconds
    best_epoch: int | None  # None when the weights are averaged over averaged_epochs
    best_val_patient_auc: float
    n_train_stacks: int
    n_validation_stacks: int
    train_patients: list[str]
    validation_patients: list[str]
    skipped_patients: list[str]
    selection: str = "holdout"
    out_of_fold: pd.Series | None = None  # cv: each training patient's probability from the fold that held it out
    fold_histories: list[pd.DataFrame] = field(default_factory=list)
    # The patients best_val_patient_auc was computed on (out-of-fold under cv, the validation cohorts under
    # holdout): columns pcr and probability, so two configurations can be compared patient by patient.
    held_out: pd.DataFrame | None = None
    folds: pd.Series | None = None  # cv: the fold (ensemble member, 0-based) that held each training patient out
    averaged_epochs: tuple[int, int] | None = None  # first and last epoch whose weights were averaged

    def weights_text(self) -> str:
        if self.averaged_epochs is None:
            return f"epoch {self.best_epoch}"
        return "epochs {}-{} averaged".format(*self.averaged_epochs)

    def weights_metrics(self) -> dict[str, int]:
        """The returned weights' epoch, or the first and last epoch averaged (MLflow metrics)."""
        if self.averaged_epochs is None:
            return {"best_epoch": self.best_epoch}
        return dict(zip(("averaged_from_epoch", "averaged_to_epoch"), self.averaged_epochs, strict=True))


def seed_everything(params: TrainParams) -> None:
    keras.utils.set_random_seed(params.seed)
    if params.deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    if params.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")


def fit_stacks(params: TrainParams, train: StackSet, validation: StackSet | None, on_epoch=None,
               extra_callbacks: list | None = None, seed_offset: int = 0) -> tuple[keras.Model, pd.DataFrame,
                                                                                     EpochSnapshots]:
    """Train one model for ``params.epochs`` epochs; the snapshots hold every epoch's weights and AUC."""
    keras.utils.set_random_seed(params.seed + seed_offset)
    phases = list(params.phases)
    first = train.inputs[phases[0]]
    config = cnn_config(params, input_size=first.shape[1], channels=first.shape[3])
    model = build_model(config)
    augmenter = Augmenter(AugmentConfig(strength=params.augmentation_strength, seed=params.seed + seed_offset))
    trainable = with_augmentation(model, augmenter)
    steps = int(np.ceil(len(train) / params.batch_size))
    trainable.compile(optimizer=make_optimizer(params, steps), loss="binary_crossentropy",
                      metrics=[keras.metrics.AUC(name="stack_auc")])
    scored = None if validation is None else validation.central(params.central_stack_fraction)
    snapshots = EpochSnapshots(model, scored, on_epoch)
    callbacks = [snapshots, *(extra_callbacks or [])]
    data = training_input(train, config.output_units, params.batch_size, params.seed + seed_offset)
    if isinstance(data, tuple):
        history = trainable.fit(*data, batch_size=params.batch_size, shuffle=True, epochs=params.epochs,
                                callbacks=callbacks, verbose=0)
    else:
        history = trainable.fit(data, epochs=params.epochs, callbacks=callbacks, verbose=0,
                                shuffle=False)  # the dataset shuffles itself
    frame = pd.DataFrame(history.history)
    frame.index.name = "epoch"
    return model, frame, snapshots


def best_epoch(scores: pd.Series, min_epoch: int = 0) -> int:
    """The epoch with the highest score (the earliest on ties); NaN scores never win."""
    eligible = scores.iloc[min_epoch:].fillna(-1)
    return int(eligible.idxmax()) if len(eligible) else int(scores.fillna(-1).idxmax())


def averaged_weights(weights: list[list[np.ndarray]], first: int) -> list[np.ndarray]:
    """The element-wise mean of the epochs' weights from ``first`` on (stochastic weight averaging).

    Batch-norm moving statistics are averaged like the rest: recomputing them on the training stacks under the
    averaged weights scored lower on held-out institution-1 patients (5 draws of 85, bench/learn.py data).
    """
    kept = weights[min(first, len(weights) - 1):]
    return [np.mean([w[i] for w in kept], axis=0).astype(kept[0][i].dtype) for i in range(len(kept[0]))]


def settle_weights(params: TrainParams, models: list[keras.Model], snapshots: list[EpochSnapshots],
                   scores: pd.Series) -> tuple[int | None, tuple[int, int] | None]:
    """Give every model the weights it is returned with: the best epoch's by ``scores`` (from min_epoch on) or,
    with ``average_weights``, the mean over epochs min_epoch..last. Returns (chosen epoch, averaged epochs)."""
    if params.average_weights:
        last = len(snapshots[0].weights) - 1
        for model, snap in zip(models, snapshots, strict=True):
            model.set_weights(averaged_weights(snap.weights, params.min_epoch))
        return None, (min(params.min_epoch, last), last)
    chosen = best_epoch(scores, params.min_epoch)
    for model, snap in zip(models, snapshots, strict=True):
        model.set_weights(snap.weights[chosen])
    return chosen, None


def cv_folds(labels: pd.Series, n_folds: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """Patient-level stratified folds: (train ids, held-out ids) per fold."""
    from sklearn.model_selection import StratifiedKFold

    labels = labels.sort_index()
    n_folds = min(n_folds, int(labels.value_counts().min()))
    if n_folds < 2:
        raise ValueError("cross-validation needs at least 2 patients of each class")
    ids = labels.index.to_numpy()
    splitter = StratifiedKFold(n_folds, shuffle=True, random_state=seed)
    return [(list(ids[a]), list(ids[b])) for a, b in splitter.split(ids, labels.to_numpy())]


def fit_cv_ensemble(params: TrainParams, train: StackSet, on_epoch=None,
                    extra_callbacks: list | None = None) -> FitResult:
    """One model per fold, each with the weights of the best mean out-of-fold epoch (or its averaged weights);
    their ensemble."""
    folds = cv_folds(train.patient_labels(), params.cv_folds, params.seed)
    models, histories, snapshots = [], [], []
    for k, (fit_ids, held_ids) in enumerate(folds):
        def report(epoch, value, k=k):
            log.info("fold %d epoch %d out-of-fold patient AUC %.3f", k, epoch, value)
        model, history, snap = fit_stacks(params, train.subset(fit_ids), train.subset(held_ids), report,
                                          seed_offset=k)
        models.append(model)
        histories.append(history)
        snapshots.append(snap)
    mean_auc = pd.concat([h["val_patient_auc"] for h in histories], axis=1).mean(axis=1)
    chosen, averaged = settle_weights(params, models, snapshots, mean_auc)
    if averaged is None:
        predictions = [snap.predictions[chosen] for snap in snapshots]
    else:
        predictions = [patient_auc(model, train.subset(held_ids).central(params.central_stack_fraction))[1]
                       for model, (_, held_ids) in zip(models, folds, strict=True)]
    out_of_fold = pd.concat(predictions).sort_index()
    folds_of = pd.concat([pd.Series(k, index=p.index) for k, p in enumerate(predictions)]).sort_index()
    labels = train.patient_labels().loc[out_of_fold.index]
    pooled = auc(labels.to_numpy(), out_of_fold.to_numpy())
    history = pd.concat(histories).groupby(level=0).mean()
    history["val_patient_auc"] = mean_auc
    for epoch, value in mean_auc.items():
        if on_epoch is not None:
            on_epoch(int(epoch), float(value))
        for callback in extra_callbacks or []:
            callback.on_epoch_end(int(epoch), {k: float(v) for k, v in history.loc[epoch].items()})
    ensemble = build_ensemble(models)
    ids = sorted(set(train.patient_ids))
    result = FitResult(ensemble, history, chosen, float(pooled), len(train), len(train), ids, ids, [], "cv",
                       out_of_fold, histories, pd.DataFrame({"pcr": labels, "probability": out_of_fold}), folds_of,
                       averaged)
    log.info("cv: weights of %s (pooled out-of-fold AUC %.3f)", result.weights_text(), pooled)
    return result


def fit(params: TrainParams, on_epoch=None, extra_callbacks: list | None = None,
        split: tuple[list[str], list[str]] | None = None) -> FitResult:
    """Train on the processed cohorts; `on_epoch(epoch, val_patient_auc)` lets a tuner report and prune.

    ``split`` gives explicit (train, validation) patient ids (the tuner's folds) and always selects on that
    validation set; otherwise ``params.selection`` decides: cross-validation inside the training cohorts, or
    the validation cohorts as a holdout.
    """
    seed_everything(params)
    index = read_index(params.processed_dir, params.train_cohorts + params.validation_cohorts)
    phases = list(params.phases)
    if split is None:
        train_ids = patients_of(index, params.train_cohorts, phases)
        validation_ids = [] if params.selection == "cv" else patients_of(index, params.validation_cohorts, phases)
        cohorts = params.train_cohorts + ([] if params.selection == "cv" else params.validation_cohorts)
        wanted = index[index.cohort.isin(cohorts)].index
    else:
        usable = set(patients_of(index, sorted(index.cohort.dropna().unique()), phases))
        train_ids = sorted(set(split[0]) & usable)
        validation_ids = sorted(set(split[1]) & usable)
        wanted = pd.Index(list(split[0]) + list(split[1]))
    skipped = sorted(set(wanted) - set(train_ids) - set(validation_ids))
    if skipped:
        log.warning("%d patients lack phase(s) %s and are left out of training: %s", len(skipped), phases, skipped)
    train = load_stacks(params.processed_dir, train_ids, phases, index.pcr, params.max_stacks_per_patient)
    if split is None and params.selection == "cv":
        result = fit_cv_ensemble(params, train, on_epoch, extra_callbacks)
        result.skipped_patients = skipped
        return result
    validation = load_stacks(params.processed_dir, validation_ids, phases, index.pcr, None)
    return fit_holdout(params, train, validation, on_epoch, extra_callbacks, skipped)


def fit_holdout(params: TrainParams, train: StackSet, validation: StackSet, on_epoch=None,
                extra_callbacks: list | None = None, skipped: list[str] | None = None) -> FitResult:
    """Select the epoch on the validation stacks (or average the epochs' weights); return the model with them."""
    model, frame, snapshots = fit_stacks(params, train, validation, on_epoch, extra_callbacks)
    chosen, averaged = settle_weights(params, [model], [snapshots], frame["val_patient_auc"])
    held_out, value = None, float("nan")
    if snapshots.predictions:
        if averaged is None:
            value, predictions = float(frame["val_patient_auc"].iloc[chosen]), snapshots.predictions[chosen]
        else:
            value, predictions = patient_auc(model, validation.central(params.central_stack_fraction))
        held_out = pd.DataFrame({"pcr": validation.patient_labels().loc[predictions.index],
                                 "probability": predictions})
    return FitResult(model, frame, chosen, value, len(train), len(validation), sorted(set(train.patient_ids)),
                     sorted(set(validation.patient_ids)), skipped or [], "holdout", held_out=held_out,
                     averaged_epochs=averaged)


def save_fit(result: FitResult, model_dir: Path, extra: dict) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    result.model.save(model_dir / "model.keras")
    result.history.to_csv(model_dir / "history.csv")
    if result.out_of_fold is not None:
        frame = pd.DataFrame({"probability": result.out_of_fold, "fold": result.folds})
        frame.index.name = "patient_id"
        frame.to_csv(model_dir / "out_of_fold.csv")
    (model_dir / "training.json").write_text(json.dumps({
        "selection": result.selection, "cv_folds": len(result.fold_histories) or None,
        "best_epoch": result.best_epoch, "averaged_epochs": result.averaged_epochs,
        "best_val_patient_auc": result.best_val_patient_auc,
        "n_train_stacks": result.n_train_stacks, "n_validation_stacks": result.n_validation_stacks,
        "train_patients": result.train_patients, "validation_patients": result.validation_patients,
        "skipped_patients": result.skipped_patients, **extra}, indent=1), encoding="utf-8")
