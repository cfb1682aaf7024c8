"""Tuner's entry point: a KerasTuner search for a rating model on the validation split (by default within a time
budget; `recsys run --tune` runs every trial; `--no-tune` skips it).

It searches the settings that decide whether a rating model over- or under-fits a new dataset
(embedding size, per-occurrence L2, learning rate) and, for mf and hybrid with `rating_history` auto,
whether the model carries SVD++'s implicit term; trains each trial with the Trainer's own input path
and model registry, and scores it by validation RMSE with early stopping. The first trials are the
configured defaults (each form), so the search is judged against them; with `tuner_budget_s` no trial
starts once the budget is spent (the default search a rating model gets; `--tune` lifts the budget).
TFX writes the best values as the `best_hyperparameters` artifact; the Trainer reads them as
`fn_args.hyperparameters` and applies them with `TrainingConfig.with_hyperparameters`.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List

import keras_tuner
import tensorflow as tf
import tensorflow_transform as tft
from tfx import v1 as tfx

from components import catalog, models
from components import contract as contract_lib
from components.models.base import ModelDims
from components.trainer import compile_rating_model, input_fn
from components.training_config import RATING_HISTORY_AUTO, TrainingConfig

OBJECTIVE = "val_rmse"
PROJECT_NAME = "recsys_tuning"
# The search space: around the defaults, wide enough to move a model from under- to over-fitting.
EMBEDDING_DIMS = (16, 32, 64)
L2_RANGE = (0.02, 0.3)  # rating_l2, per occurrence (components/models/base.py RowL2Embedding)
LEARNING_RATE_RANGE = (1e-3, 1e-2)  # slower rates do not converge within tuner_epochs


def search_space(hp: keras_tuner.HyperParameters, config: TrainingConfig) -> Dict[str, Any]:
    """Registers the tuned TrainingConfig fields in `hp` (defaults: `config`'s values) and returns their values."""
    dims = sorted(set(EMBEDDING_DIMS) | {config.embedding_dim})
    forms = {}
    if config.rating_history == RATING_HISTORY_AUTO:
        choices = models.rating_history_forms(config.model, config.rating_history)
        if len(choices) > 1:
            forms["rating_history"] = hp.Choice("rating_history", list(choices), default=choices[0])
    return {**forms,
        "embedding_dim": hp.Choice("embedding_dim", dims, default=config.embedding_dim),
        "rating_l2": hp.Float("rating_l2", *L2_RANGE, sampling="log",
                              default=min(max(config.rating_l2, L2_RANGE[0]), L2_RANGE[1])),
        "learning_rate": hp.Float("learning_rate", *LEARNING_RATE_RANGE, sampling="log",
                                  default=min(max(config.learning_rate, LEARNING_RATE_RANGE[0]),
                                              LEARNING_RATE_RANGE[1])),
    }


class DefaultsFirstOracle(keras_tuner.oracles.RandomSearchOracle):
    """Random search whose first trials are the configured defaults (once per model form), then random ones while
    the time budget lasts (`budget_s` seconds from the first trial; 0: only max_trials bounds the search)."""

    def __init__(self, *args, budget_s: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.budget_s, self.started = float(budget_s), None

    def _starts(self) -> List[Dict[str, Any]]:
        defaults = dict(self.hyperparameters.values)
        forms = [defaults]
        for hp in self.hyperparameters.space:
            if hp.name == "rating_history":
                forms += [{**defaults, hp.name: value} for value in hp.values if value != defaults.get(hp.name)]
        return [values for values in forms if values]

    def populate_space(self, trial_id):
        status = keras_tuner.engine.trial.TrialStatus
        if self.started is None:
            self.started = time.monotonic()
        elif self.budget_s and time.monotonic() - self.started >= self.budget_s:
            print(f"tuner: budget of {self.budget_s:.0f} s spent after {len(self.trials)} trial(s)", flush=True)
            return {"status": status.STOPPED, "values": None}
        for values in self._starts():
            if not self._duplicate(values):
                return {"status": status.RUNNING, "values": values}
        return super().populate_space(trial_id)


class KerasTrialTuner(keras_tuner.engine.base_tuner.BaseTuner):
    """Runs each trial as a plain `model.fit` and reports its best validation RMSE.

    keras_tuner.Tuner expects Keras 3 models (keras_tuner picks Keras 3 when it is installed), while the
    models here are tf.keras under TF_USE_LEGACY_KERAS; the base tuner only needs a score per trial.
    """

    def run_trial(self, trial, *fit_args, **fit_kwargs) -> Dict[str, float]:
        tf.keras.backend.clear_session()
        model = self.hypermodel.build(trial.hyperparameters)
        history = model.fit(*fit_args, **fit_kwargs).history
        if not history.get(OBJECTIVE):
            raise ValueError(f"trial {trial.trial_id} reported no {OBJECTIVE} (is the validation split empty?)")
        return {OBJECTIVE: float(min(history[OBJECTIVE]))}


class RatingHyperModel(keras_tuner.HyperModel):
    """Builds the configured rating model with a trial's values, compiled as the Trainer compiles it."""

    def __init__(self, config: TrainingConfig, dims: ModelDims, rows):
        super().__init__(name=config.model)
        self.config, self.dims, self.rows = config, dims, rows  # rows: the training split's history per user

    def build(self, hp: keras_tuner.HyperParameters) -> tf.keras.Model:
        config = self.config.with_hyperparameters(search_space(hp, self.config))
        forms = models.rating_history_forms(config.model, config.rating_history)
        config = config.with_hyperparameters({"rating_history": forms[0]})  # an undecided `auto`: the first form
        tf.keras.utils.set_random_seed(config.seed)
        return compile_rating_model(models.get(config.model).build(self.dims, config, self.rows), config)


# TFX calls this by name (Tuner's `tuner_fn`).
def tuner_fn(fn_args: tfx.components.FnArgs) -> tfx.components.TunerFnResult:
    config = TrainingConfig.from_custom_config(fn_args.custom_config)
    is_ranking = getattr(models, "is_ranking", lambda name: False)
    if is_ranking(config.model):
        raise ValueError(f"the Tuner tunes rating models only; --model {config.model} is a ranking model")
    models.get(config.model)  # an unknown name fails here, in one line
    tft_output = tft.TFTransformOutput(fn_args.transform_graph_path)
    layout = catalog.content_layout(contract_lib.from_custom_config(fn_args.custom_config), tft_output)
    num_users, num_items = catalog.vocabulary_sizes(tft_output)
    raw = catalog.raw_examples(fn_args.custom_config)
    global_mean, items = catalog.build(fn_args.train_files, tft_output, layout, raw)
    dims = ModelDims(num_users, num_items, layout.item_width, global_mean, layout.user_width)

    def dataset(files, shuffle):
        return input_fn(files, tft_output, layout, batch_size=config.batch_size,
                        shuffle=shuffle, seed=config.seed, in_memory_max_mb=config.in_memory_input_max_mb, raw=raw)

    train = dataset(fn_args.train_files, True)
    steps_per_epoch = None
    if fn_args.train_steps:
        steps_per_epoch = max(1, fn_args.train_steps // config.tuner_epochs)
        train = train.repeat()
    oracle = DefaultsFirstOracle(objective=keras_tuner.Objective(OBJECTIVE, direction="min"),
                                 max_trials=config.tuner_trials, seed=config.seed, budget_s=config.tuner_budget_s)
    rows = (items.rated_row_splits, items.rated_items)
    tuner = KerasTrialTuner(oracle=oracle, hypermodel=RatingHyperModel(config, dims, rows),
                            directory=fn_args.working_dir, project_name=PROJECT_NAME, overwrite=True)
    return tfx.components.TunerFnResult(tuner=tuner, fit_kwargs={
        "x": train,
        "validation_data": dataset(fn_args.eval_files, False),  # the Tuner's eval_args: the validation split
        "epochs": config.tuner_epochs,
        "steps_per_epoch": steps_per_epoch,
        "validation_steps": fn_args.eval_steps or None,
        "verbose": 2,
        "callbacks": [tf.keras.callbacks.EarlyStopping(
            monitor=OBJECTIVE, patience=config.early_stopping_patience, restore_best_weights=True)],
    })
