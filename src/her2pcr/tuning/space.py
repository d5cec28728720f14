"""The search space: one trial's suggestions -> a complete, validated train configuration."""

from __future__ import annotations

import optuna

from her2pcr.config import TrainParams, TuneParams


def suggest(trial: optuna.Trial, space: TuneParams) -> dict:
    """Tunable train keys for this trial (the keys `train` reads back from best.yaml)."""
    phase_choices = [",".join(p) for p in space.phase_sets]
    phases = trial.suggest_categorical("phases", phase_choices).split(",")
    blocks = trial.suggest_categorical("blocks", space.blocks)
    base = trial.suggest_categorical("base_filters", space.base_filters)
    # Filters double every two blocks, as in the paper's 32-32-64-64.
    filters = [base * 2 ** (block // 2) for block in range(blocks)]
    dropout = [trial.suggest_categorical(f"dropout_{k + 1}", space.dropout) for k in range(blocks // 2)]
    optimizer = trial.suggest_categorical("optimizer", space.optimizer)
    return {
        "phases": phases,
        "filters": filters,
        "dense_units": trial.suggest_categorical("dense_units", space.dense_units),
        "dropout": dropout,
        "dense_dropout": trial.suggest_categorical("dense_dropout", space.dropout),
        "activation": trial.suggest_categorical("activation", space.activation),
        "initializer": trial.suggest_categorical("initializer", space.initializer),
        "optimizer": optimizer,
        "learning_rate": trial.suggest_float("learning_rate", *space.learning_rate, log=True),
        "momentum": trial.suggest_categorical("momentum", space.momentum) if optimizer in ("sgd", "rmsprop")
        else 0.0,
        "decay": trial.suggest_categorical("decay", space.decay),
        "batch_size": trial.suggest_categorical("batch_size", space.batch_size),
        "augmentation_strength": trial.suggest_float("augmentation_strength", *space.augmentation_strength),
    }


def trial_params(base: TrainParams, tune: TuneParams, tunable: dict) -> TrainParams:
    """The train configuration a trial trains with: base params, the trial's values, the search budget."""
    return TrainParams.model_validate({**base.model_dump(), **tunable, "epochs": tune.epochs,
                                       "max_stacks_per_patient": tune.max_stacks_per_patient})


def default_suggestions(base: TrainParams, space: TuneParams) -> dict | None:
    """The suggestions that reproduce ``base``'s tunable keys, or None when one lies outside the space."""
    blocks = len(base.filters)
    filters = [base.filters[0] * 2 ** (block // 2) for block in range(blocks)]
    values = {
        "phases": ",".join(base.phases), "blocks": blocks, "base_filters": base.filters[0],
        **{f"dropout_{k + 1}": rate for k, rate in enumerate(base.dropout)},
        "optimizer": base.optimizer, "dense_units": base.dense_units, "dense_dropout": base.dense_dropout,
        "activation": base.activation, "initializer": base.initializer, "decay": base.decay,
        "batch_size": base.batch_size,
    }
    choices = {
        "phases": [",".join(p) for p in space.phase_sets], "blocks": space.blocks, "base_filters": space.base_filters,
        **{f"dropout_{k + 1}": space.dropout for k in range(len(base.dropout))}, "optimizer": space.optimizer,
        "dense_units": space.dense_units, "dense_dropout": space.dropout, "activation": space.activation,
        "initializer": space.initializer, "decay": space.decay, "batch_size": space.batch_size,
    }
    inside = filters == list(base.filters) and len(base.dropout) == blocks // 2 \
        and all(values[k] in choices[k] for k in choices) \
        and space.learning_rate[0] <= base.learning_rate <= space.learning_rate[1] \
        and space.augmentation_strength[0] <= base.augmentation_strength <= space.augmentation_strength[1]
    if base.optimizer in ("sgd", "rmsprop"):
        inside = inside and base.momentum in space.momentum
        values["momentum"] = base.momentum
    if not inside:
        return None
    return {**values, "learning_rate": base.learning_rate, "augmentation_strength": base.augmentation_strength}
