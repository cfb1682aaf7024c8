"""The Tuner: a budgeted search for rating models by default, `--tune` without the budget, `--no-tune` none; wired to
the Trainer, and a real search."""

import dataclasses
import json

import keras_tuner
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import json_format
from tfx import v1 as tfx

from components import contract as contract_lib
from components import features as F
from components.training_config import TrainingConfig
from components.tuner import search_space
from pipeline.config import PipelineConfig
from pipeline.pipeline import create_pipeline


# Explicit ratings with a timestamp, no attribute files: what create_pipeline needs to know about the data.
RATINGS = contract_lib.DataContract(columns=contract_lib.Columns(rating=F.RATING, timestamp=F.TIMESTAMP),
                                    rating_range=(0.5, 5.0))


def _config(tmp_path, **changes) -> PipelineConfig:
    config = PipelineConfig(data_root=str(tmp_path / "data"), output_dir=str(tmp_path / "out"), contract=RATINGS)
    return dataclasses.replace(config, **changes)


def test_with_hyperparameters_overrides_the_tuned_fields_only():
    base = TrainingConfig(model="mlp", epochs=7)
    tuned = base.with_hyperparameters({"embedding_dim": 64.0, "rating_l2": 0.07, "learning_rate": 0.002})
    assert (tuned.embedding_dim, tuned.rating_l2, tuned.learning_rate) == (64, 0.07, 0.002)
    assert isinstance(tuned.embedding_dim, int)
    assert dataclasses.replace(tuned, embedding_dim=base.embedding_dim, rating_l2=base.rating_l2,
                               learning_rate=base.learning_rate) == base
    # The form TFX hands the Trainer (fn_args.hyperparameters): keras_tuner.HyperParameters.get_config().
    assert base.with_hyperparameters({"space": [], "values": {"rating_l2": 0.2}}).rating_l2 == 0.2
    assert base.with_hyperparameters({}) == base
    with pytest.raises(ValueError, match="unknown hyperparameter.*units"):
        base.with_hyperparameters({"units": 3})


@pytest.mark.parametrize("model, tune, tuned", [("mf", None, True), ("hybrid", None, True), ("mf", False, False),
                                                 ("auto", None, False), ("ease", False, False)])
def test_a_rating_model_is_tuned_by_default_a_ranking_model_not_and_no_tune_skips_it(tmp_path, model, tune, tuned):
    pipeline = create_pipeline(_config(tmp_path, training=TrainingConfig(model=model), tune=tune))
    tuners = [c for c in pipeline.components if isinstance(c, tfx.components.Tuner)]
    trainer = next(c for c in pipeline.components if isinstance(c, tfx.components.Trainer))
    assert len(tuners) == int(tuned)
    assert ("hyperparameters" in trainer.inputs) == tuned


def _search(tmp_path, budget_s, trials, model="mf"):
    """A real search over tiny in-memory ratings with the Tuner's own oracle, tuner and hypermodel."""
    from components import catalog as catalog_lib
    from components.models.base import ModelDims
    from components.tuner import DefaultsFirstOracle, KerasTrialTuner, OBJECTIVE, RatingHyperModel

    rng = np.random.default_rng(0)
    u, i = rng.integers(0, 30, 3000), rng.integers(0, 40, 3000)
    y = (3 + np.sign(np.sin(u) * np.cos(i)) + rng.normal(0, 0.3, 3000)).astype(np.float32)
    config = TrainingConfig(model=model, tuner_trials=trials, tuner_budget_s=budget_s, embedding_dim=4,
                            hidden_units=(8,))
    rows = catalog_lib.ragged_rows(np.stack([u, i], 1), 31)
    dims = ModelDims(31, 41, 1, float(y.mean()))
    data = tf.data.Dataset.from_tensor_slices(({F.USER_INDEX: u, F.ITEM_INDEX: i,
                                                F.ITEM_CONTENT: np.zeros((3000, 1), np.float32)}, y)).batch(512)
    oracle = DefaultsFirstOracle(objective=keras_tuner.Objective(OBJECTIVE, direction="min"), max_trials=trials,
                                 seed=config.seed, budget_s=budget_s)
    tuner = KerasTrialTuner(oracle=oracle, hypermodel=RatingHyperModel(config, dims, rows),
                            directory=str(tmp_path), project_name="t", overwrite=True)
    tuner.search(x=data, validation_data=data, epochs=1, verbose=0)
    return config, [t.hyperparameters.values for t in oracle.trials.values()]


def test_the_search_starts_from_the_defaults_in_each_form_then_draws(tmp_path):
    config, trials = _search(tmp_path, budget_s=0, trials=3)
    assert len(trials) == 3
    defaults = search_space(keras_tuner.HyperParameters(), config)
    assert trials[0] == {**defaults, "rating_history": "on"} and trials[1] == {**defaults, "rating_history": "off"}
    assert trials[2] not in trials[:2]
    _, trials = _search(tmp_path / "mlp", budget_s=0, trials=2, model="mlp")  # no implicit term: no form to choose
    assert "rating_history" not in trials[0]


def test_no_trial_starts_once_the_budget_is_spent(tmp_path, capsys):
    _, trials = _search(tmp_path, budget_s=0.01, trials=5)
    assert len(trials) == 1  # the first trial alone outlasts 10 ms
    assert "tuner: budget of 0 s spent after 1 trial(s)" in capsys.readouterr().out


def test_tune_puts_a_tuner_between_transform_and_trainer(tmp_path):
    pipeline = create_pipeline(_config(tmp_path, training=TrainingConfig(model="mf"), tune=True))
    (tuner,) = [c for c in pipeline.components if isinstance(c, tfx.components.Tuner)]
    trainer = next(c for c in pipeline.components if isinstance(c, tfx.components.Trainer))
    transform = next(c for c in pipeline.components if isinstance(c, tfx.components.Transform))
    assert trainer.inputs["hyperparameters"] is tuner.outputs["best_hyperparameters"]
    assert tuner.inputs["examples"] is transform.outputs["transformed_examples"]
    assert tuner.exec_properties["tuner_fn"] == "components.tuner.tuner_fn"
    eval_args = json_format.Parse(tuner.exec_properties["eval_args"], tfx.proto.EvalArgs())
    train_args = json_format.Parse(tuner.exec_properties["train_args"], tfx.proto.TrainArgs())
    assert list(eval_args.splits) == [F.VALIDATION_SPLIT]  # never the eval split
    assert list(train_args.splits) == [F.TRAIN_SPLIT]
    order = [c.id for c in pipeline.components]
    assert order.index(transform.id) < order.index(tuner.id) < order.index(trainer.id)
    # tuner_fn reads the data contract (the content layout) from its custom_config, as run_fn does.
    for component in (tuner, trainer):
        custom = json.loads(component.exec_properties["custom_config"])
        assert contract_lib.from_custom_config(custom) == RATINGS


def test_a_ranking_model_gets_no_tuner_component_even_with_tune(tmp_path):
    """A ranking model searches its own values in the Trainer; `--tune` re-runs that search over a warm start."""
    pipeline = create_pipeline(_config(tmp_path, training=TrainingConfig(model="ease", keep_tuned=False), tune=True))
    assert not [c for c in pipeline.components if c.id == "Tuner"]


@pytest.mark.slow
def test_tuner_runs_its_trials_on_tiny_transformed_data_and_writes_the_best_values(tiny_data, tmp_path):
    """The factory's pipeline run by TFX up to the Tuner (a partial run): tuner_fn, called by name, searches 2 trials."""
    from tfx.dsl.compiler import compiler
    from tfx.proto.orchestration import pipeline_pb2

    training = TrainingConfig(model="mf", tuner_trials=3, tuner_epochs=2, batch_size=256, tuner_budget_s=0)
    # The contract inferred from the sample's files (not written beside the shared sample: schema inferred here).
    config = _config(tmp_path, data_root=tiny_data, training=training, tune=True,
                     contract=contract_lib.infer(tiny_data))
    ir = compiler.Compiler().compile(create_pipeline(config))
    tfx.orchestration.LocalDagRunner().run_with_ir(
        ir, run_options=pipeline_pb2.RunOptions(partial_run=pipeline_pb2.PartialRun(
            to_nodes=["Tuner"], snapshot_settings=pipeline_pb2.SnapshotSettings(
                latest_pipeline_run_strategy=pipeline_pb2.SnapshotSettings.LatestPipelineRunStrategy()))))

    (results,) = tf.io.gfile.glob(f"{config.pipeline_root}/Tuner/tuner_results/*/tuner_results.json")
    trials = json.loads(tf.io.gfile.GFile(results).read())
    assert len(trials) == 3
    assert all(0.3 < t["score"] < 2.0 for t in trials)  # validation RMSE of a model that trained
    keys = ("embedding_dim", "rating_l2", "learning_rate", "rating_history")
    values = [{k: t[k] for k in keys} for t in trials]
    defaults = search_space(keras_tuner.HyperParameters(), training)  # the config's values, inside the ranges
    # The defaults in each form (with and without the implicit term), then one random point.
    assert {**defaults, "rating_history": "on"} in values and {**defaults, "rating_history": "off"} in values
    assert len({tuple(sorted(v.items())) for v in values}) == 3
    (best,) = tf.io.gfile.glob(f"{config.pipeline_root}/Tuner/best_hyperparameters/*/best_hyperparameters.txt")
    best_values = json.loads(tf.io.gfile.GFile(best).read())["values"]
    winner = min(trials, key=lambda t: t["score"])
    assert {k: best_values[k] for k in defaults} == {k: winner[k] for k in defaults}
    tuned = training.with_hyperparameters(json.loads(tf.io.gfile.GFile(best).read()))
    assert {"embedding_dim": tuned.embedding_dim, "rating_l2": tuned.rating_l2, "learning_rate": tuned.learning_rate,
            "rating_history": tuned.rating_history} == {k: best_values[k] for k in defaults}


def test_tune_with_a_ranking_model_searches_again_instead_of_keeping_the_blessed_values():
    import argparse

    from pipeline.pipeline_commands import fit_choices

    args = argparse.Namespace(tune=True, rating_history="auto", refit=True)
    assert fit_choices(args, TrainingConfig(model="ease")).keep_tuned is False
    assert fit_choices(argparse.Namespace(tune=None, rating_history="auto", refit=True),
                       TrainingConfig(model="ease")).keep_tuned is True
    rating = fit_choices(args, TrainingConfig(model="mf"))
    assert rating.keep_tuned is True and rating.tuner_budget_s == 0.0  # a rating model: the Tuner's full search
