"""The pipeline factory: a pure function from a PipelineConfig to a `tfx.dsl.Pipeline`."""

from __future__ import annotations

import json
from typing import Any, Dict

import tensorflow_model_analysis as tfma
from google.protobuf import json_format
from tfx import v1 as tfx

from components import features as F
from components.data_gate import DataGate
from components.example_gen import RatingsExampleGen, split_custom_config
from components.transform import MIN_ID_FREQUENCY
from pipeline import metadata
from pipeline.config import KUBEFLOW, ORCHESTRATORS, EvaluationConfig, PipelineConfig

PREPROCESSING_FN = "components.transform.preprocessing_fn"
RUN_FN = "components.trainer.run_fn"
RMSE = "root_mean_squared_error"


def eval_config(evaluation: EvaluationConfig) -> tfma.EvalConfig:
    """Metrics overall, per user-activity and item-popularity bucket and per genre on the eval split; overall RMSE gates blessing by an absolute and a
    baseline-relative bound."""
    rmse_threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(upper_bound={"value": evaluation.rmse_upper_bound}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.LOWER_IS_BETTER,
            relative={"value": evaluation.max_relative_rmse_regression},
        ),
    )
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name=F.SERVING_DEFAULT, label_key=F.LABEL_KEY)],
        slicing_specs=[tfma.SlicingSpec()] + [tfma.SlicingSpec(feature_keys=[key])
                                              for key in (F.USER_ACTIVITY, F.ITEM_POPULARITY, F.GENRES)],
        metrics_specs=[
            tfma.MetricsSpec(
                metrics=[
                    tfma.MetricConfig(class_name="ExampleCount"),
                    tfma.MetricConfig(class_name="MeanLabel"),
                    tfma.MetricConfig(class_name="MeanPrediction"),
                    tfma.MetricConfig(class_name="MeanSquaredError", config='{"name": "mean_squared_error"}'),
                    tfma.MetricConfig(class_name="MeanAbsoluteError", config='{"name": "mean_absolute_error"}'),
                    # Gate on the overall slice only: a small genre slice must not veto a good model.
                    tfma.MetricConfig(class_name="RootMeanSquaredError", config=f'{{"name": "{RMSE}"}}',
                                      per_slice_thresholds=[tfma.PerSliceMetricThreshold(
                                          slicing_specs=[tfma.SlicingSpec()], threshold=rmse_threshold)]),
                ]
            )
        ],
    )


def _as_json(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return json_format.MessageToJson(value, indent=None)


def _run_values(config: PipelineConfig) -> Dict[str, Any]:
    """What may change from one run to the next, keyed by its Kubeflow runtime parameter name."""
    return {
        "data-root": config.data_root,
        "training-config": config.training.to_custom_config(),
        "train-args": tfx.proto.TrainArgs(splits=["train"], num_steps=config.train_steps),
        "push-destination": tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=config.serving_dir)
        ),
    }


def runtime_parameter_defaults(config: PipelineConfig) -> Dict[str, str]:
    """The Kubeflow runtime parameters' defaults, as the JSON strings a run may override."""
    return {name: _as_json(value) for name, value in _run_values(config).items()}


def _parameters(config: PipelineConfig) -> Dict[str, Any]:
    """Literals locally; RuntimeParameters with the same defaults on Kubeflow."""
    if config.orchestrator != KUBEFLOW:
        return _run_values(config)
    return {name: tfx.dsl.experimental.RuntimeParameter(name=name, ptype=str, default=value)
            for name, value in runtime_parameter_defaults(config).items()}


def create_pipeline(config: PipelineConfig) -> tfx.dsl.Pipeline:
    if config.orchestrator not in ORCHESTRATORS:
        raise ValueError(f"unknown orchestrator {config.orchestrator!r}; choose one of: {', '.join(ORCHESTRATORS)}")
    params = _parameters(config)
    example_gen = RatingsExampleGen(
        input_base=params["data-root"],
        input_config=tfx.proto.Input(splits=[tfx.proto.Input.Split(name="single_split", pattern=F.INTERACTIONS_FILE)]),
        output_config=tfx.proto.Output(
            split_config=tfx.proto.SplitConfig(
                splits=[
                    tfx.proto.SplitConfig.Split(name="train", hash_buckets=config.train_hash_buckets),
                    tfx.proto.SplitConfig.Split(name="eval", hash_buckets=config.eval_hash_buckets),
                ]
            )
        ),
        custom_config=split_custom_config(config.split, config.eval_fraction),
    )
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_gen = tfx.components.ImportSchemaGen(schema_file=config.schema_path)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    data_gate = DataGate(anomalies=example_validator.outputs["anomalies"])
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        custom_config={MIN_ID_FREQUENCY: config.min_id_frequency},
    )
    transform.add_upstream_node(data_gate)  # bad data stops the run before any training
    trainer = tfx.components.Trainer(
        run_fn=RUN_FN,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=params["train-args"],
        eval_args=tfx.proto.EvalArgs(splits=["eval"]),
        custom_config=params["training-config"],
    )
    baseline_resolver = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=baseline_resolver.outputs["model"],
        eval_config=eval_config(config.evaluation),
    )
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=params["push-destination"],
    )
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=[
            example_gen, statistics_gen, schema_gen, example_validator, data_gate, transform,
            trainer, baseline_resolver, evaluator, pusher,
        ],
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata.connection_config(config),
        beam_pipeline_args=list(config.beam_args),
    )
