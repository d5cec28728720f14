"""Fit the multi-input CNN on the training cohort, tracked in MLflow, selecting on patient-level validation AUC."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import yaml

from her2pcr.config import TrainParams
from her2pcr.models.augment import AugmentConfig, Augmenter, with_augmentation
from her2pcr.models.cnn import CNNConfig, build_model, encode_labels, predict_probability
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
                     blocks=len(params.filters), filters=list(params.filters),
                     dropout_rates=list(params.dropout), dense_units=params.dense_units,
                     dense_dropout=params.dense_dropout, activation=params.activation,
                     initializer=params.initializer)


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


class PatientAUC(keras.callbacks.Callback):
    """Patient-level validation AUC (mean probability over stacks) after every epoch, as `val_patient_auc`."""

    def __init__(self, model: keras.Model, stacks: StackSet, on_epoch=None) -> None:
        super().__init__()
        self.inner, self.stacks, self.on_epoch = model, stacks, on_epoch
        self.labels = pd.Series(stacks.labels, index=stacks.patient_ids).groupby(level=0).first().sort_index()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        probabilities = patient_probabilities(predict_probability(self.inner, self.stacks.inputs),
                                              self.stacks.patient_ids)
        value = auc(self.labels.to_numpy(), probabilities.loc[self.labels.index].to_numpy()) \
            if self.labels.nunique() == 2 else float("nan")
        if logs is not None:
            logs["val_patient_auc"] = value
        if self.on_epoch is not None:
            self.on_epoch(epoch, value)


class SaveEachEpoch(keras.callbacks.Callback):
    """Checkpoint the bare model (without the training-only augmenter) after every epoch."""

    def __init__(self, model: keras.Model, path: Path) -> None:
        super().__init__()
        self.inner, self.path = model, path

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.inner.save(self.path)


@dataclass
class FitResult:
    model: keras.Model
    history: pd.DataFrame
    best_epoch: int
    best_val_patient_auc: float
    n_train_stacks: int
    n_validation_stacks: int
    train_patients: list[str]
    validation_patients: list[str]
    skipped_patients: list[str]


def fit(params: TrainParams, checkpoint_path: Path | None = None, on_epoch=None,
        extra_callbacks: list | None = None, split: tuple[list[str], list[str]] | None = None) -> FitResult:
    """Train one model; `on_epoch(epoch, val_patient_auc)` lets a tuner report and prune.

    ``split`` gives explicit (train, validation) patient ids (cross-validation); by default the
    train and validation cohorts of ``params`` are used.
    """
    keras.utils.set_random_seed(params.seed)
    if params.deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    if params.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    index = read_index(params.processed_dir)
    phases = list(params.phases)
    if split is None:
        train_ids = patients_of(index, params.train_cohorts, phases)
        validation_ids = patients_of(index, params.validation_cohorts, phases)
        wanted = index[index.cohort.isin(params.train_cohorts + params.validation_cohorts)].index
    else:
        usable = set(patients_of(index, sorted(index.cohort.dropna().unique()), phases))
        train_ids = sorted(set(split[0]) & usable)
        validation_ids = sorted(set(split[1]) & usable)
        wanted = pd.Index(list(split[0]) + list(split[1]))
    skipped = sorted(set(wanted) - set(train_ids) - set(validation_ids))
    if skipped:
        log.warning("%d patients lack phase(s) %s and are left out of training: %s", len(skipped), phases, skipped)
    train = load_stacks(params.processed_dir, train_ids, phases, index.pcr, params.max_stacks_per_patient)
    validation = load_stacks(params.processed_dir, validation_ids, phases, index.pcr, None)
    first = train.inputs[phases[0]]
    config = cnn_config(params, input_size=first.shape[1], channels=first.shape[3])
    model = build_model(config)
    augmenter = Augmenter(AugmentConfig(strength=params.augmentation_strength, seed=params.seed))
    trainable = with_augmentation(model, augmenter)
    steps = int(np.ceil(len(train) / params.batch_size))
    trainable.compile(optimizer=make_optimizer(params, steps), loss="binary_crossentropy",
                      metrics=[keras.metrics.AUC(name="stack_auc")])
    callbacks = [PatientAUC(model, validation, on_epoch)]
    if checkpoint_path is not None:
        callbacks.append(SaveEachEpoch(model, checkpoint_path))
    if params.early_stopping_patience > 0:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_patient_auc", mode="max",
                                                       patience=params.early_stopping_patience,
                                                       restore_best_weights=True))
    callbacks += extra_callbacks or []
    data = training_input(train, config.output_units, params.batch_size, params.seed)
    if isinstance(data, tuple):
        history = trainable.fit(*data, batch_size=params.batch_size, shuffle=True, epochs=params.epochs,
                                callbacks=callbacks, verbose=2)
    else:
        history = trainable.fit(data, epochs=params.epochs, callbacks=callbacks, verbose=2,
                                shuffle=False)  # the dataset shuffles itself
    frame = pd.DataFrame(history.history)
    frame.index.name = "epoch"
    scores = frame["val_patient_auc"].fillna(-1)
    return FitResult(model, frame, int(scores.idxmax()), float(frame["val_patient_auc"].max()), len(train),
                     len(validation), train_ids, validation_ids, skipped)


def save_fit(result: FitResult, model_dir: Path, extra: dict) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    result.model.save(model_dir / "model.keras")
    result.history.to_csv(model_dir / "history.csv")
    (model_dir / "training.json").write_text(json.dumps({
        "best_epoch": result.best_epoch, "best_val_patient_auc": result.best_val_patient_auc,
        "n_train_stacks": result.n_train_stacks, "n_validation_stacks": result.n_validation_stacks,
        "train_patients": result.train_patients, "validation_patients": result.validation_patients,
        "skipped_patients": result.skipped_patients, **extra}, indent=1), encoding="utf-8")
