"""The pipeline factory: a pure function from a PipelineConfig to a `tfx.dsl.Pipeline`."""

from __future__ import annotations

import json
from typing import Any, Dict

import tensorflow_model_analysis as tfma
from google.protobuf import json_format
from tfx import v1 as tfx
from tfx.v1.extensions.google_cloud_big_query import BigQueryExampleGen

from components import availability, catalog
from components import contract as contract_lib
from components import features as F
from components import models
from components import spans
from components.data_gate import DataGate
from components.schema_curation import CuratedSchemaExport
from components.example_gen import RatingsExampleGen
from components.example_gen import custom_config as example_gen_config
from components.ranking_gate import RankingGate
from components.resolvers import LatestArtifactIfAnyStrategy, SpanWindowStrategy
from components.transform import MIN_ID_FREQUENCY
from pipeline import metadata
from pipeline.config import KUBEFLOW, LOCAL, ORCHESTRATORS, EvaluationConfig, PipelineConfig

PREPROCESSING_FN = "components.transform.preprocessing_fn"
RUN_FN = "components.trainer.run_fn"
TUNER_FN = "components.tuner.tuner_fn"
SPAN_WINDOW_ID = "span_window"
RMSE = "root_mean_squared_error"
RANKING_GATE_ID = "RankingGate"
DATA_GATE_ID = "DataGate"


def eval_config(evaluation: EvaluationConfig, slice_features=()) -> tfma.EvalConfig:
    """Metrics overall, per user-activity and item-popularity bucket and per categorical attribute on the eval
    split; overall RMSE gates blessing by an absolute and a baseline-relative bound."""
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
                                              for key in (F.USER_ACTIVITY, F.ITEM_POPULARITY, *slice_features)],
        metrics_specs=[
            tfma.MetricsSpec(
                metrics=[
                    tfma.MetricConfig(class_name="ExampleCount"),
                    tfma.MetricConfig(class_name="MeanLabel"),
                    tfma.MetricConfig(class_name="MeanPrediction"),
                    tfma.MetricConfig(class_name="MeanSquaredError", config='{"name": "mean_squared_error"}'),
                    tfma.MetricConfig(class_name="MeanAbsoluteError", config='{"name": "mean_absolute_error"}'),
                    # Gate on the overall slice only: a small category slice must not veto a good model.
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


def _json_parameter(value: Any) -> Any:
    """A dict as its JSON string; a Kubeflow RuntimeParameter (a JSON string at run time) as it is."""
    return value if isinstance(value, tfx.dsl.experimental.RuntimeParameter) else _as_json(value)


def _run_values(config: PipelineConfig) -> Dict[str, Any]:
    """What may change from one run to the next, keyed by its Kubeflow runtime parameter name (no data root when
    the interactions come from a BigQuery query)."""
    return {
        **({} if config.bigquery_query else {"data-root": config.data_root}),
        "training-config": {**config.training.to_custom_config(), contract_lib.CONFIG_KEY: config.contract.to_json(),
                            **_catalogue_source(config).to_custom_config(),
                            catalog.RAW_EXAMPLES_KEY: _trains_on_a_window(config)},
        "train-args": tfx.proto.TrainArgs(splits=[F.TRAIN_SPLIT], num_steps=config.train_steps),
        "push-destination": tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=config.serving_dir)
        ),
    }


def _trains_on_a_window(config: PipelineConfig) -> bool:
    """A window of spans: the Trainer reads ExampleGen's examples and applies the transform graph itself."""
    return bool(config.span and config.window > 1)


def _interactions_pattern(config: PipelineConfig) -> str:
    """ExampleGen's input pattern under the data root: the interactions file, or the span directory's (`{SPAN}`)."""
    if config.span or config.latest_span_at_run_time:
        return spans.pattern(config.contract.interactions_file)
    return config.contract.interactions_file


def _catalogue_source(config: PipelineConfig) -> availability.CatalogueSource:
    """Where the Trainer finds the items of record (the trained span's items file, else the data root's)."""
    if config.bigquery_query:
        return availability.CatalogueSource()
    pattern = _interactions_pattern(config)
    if config.span and not config.latest_span_at_run_time:  # else the Trainer takes the newest span, as ExampleGen did
        pattern = pattern.replace(spans.SPAN_PLACEHOLDER, str(config.span))
    return availability.CatalogueSource.of(config.data_root, pattern, config.contract)


def runtime_parameter_defaults(config: PipelineConfig) -> Dict[str, str]:
    """The Kubeflow runtime parameters' defaults, as the JSON strings a run may override."""
    return {name: _as_json(value) for name, value in _run_values(config).items()}


def _parameters(config: PipelineConfig) -> Dict[str, Any]:
    """Literals locally; RuntimeParameters with the same defaults on Kubeflow."""
    if config.orchestrator != KUBEFLOW:
        return _run_values(config)
    return {name: tfx.dsl.experimental.RuntimeParameter(name=name, ptype=str, default=value)
            for name, value in runtime_parameter_defaults(config).items()}


def _file_example_gen(config: PipelineConfig, params: Dict[str, Any], output_config) -> RatingsExampleGen:
    """Interactions (CSV or Parquet) under the data root, joined with the item and user files the contract names."""
    contract = config.contract
    pattern, range_config = _interactions_pattern(config), None
    # TFX's driver fills `{SPAN}` with the span the RangeConfig names (without one: the newest) and records it on the
    # artifact.
    if config.span and not config.latest_span_at_run_time:
        range_config = tfx.proto.RangeConfig(static_range=tfx.proto.StaticRange(
            start_span_number=config.span, end_span_number=config.span))
    return RatingsExampleGen(
        input_base=params["data-root"],
        input_config=tfx.proto.Input(splits=[tfx.proto.Input.Split(name="single_split", pattern=pattern)]),
        range_config=range_config,
        output_config=output_config,
        custom_config=example_gen_config(contract, config.split, config.eval_fraction, config.validation_fraction),
    )


def create_pipeline(config: PipelineConfig) -> tfx.dsl.Pipeline:
    """ExampleGen (train / validation / eval) -> data gate -> Transform (vocabularies from train) -> Trainer (fits
    train, early-stops on validation) -> [rating models: TFMA Evaluator, RMSE on eval] -> RankingGate (top-k on
    eval beside most popular and the latest blessed model) -> Pusher (only what the ranking gate blessed)."""
    if config.orchestrator not in ORCHESTRATORS:
        raise ValueError(f"unknown orchestrator {config.orchestrator!r}; choose one of: {', '.join(ORCHESTRATORS)}")
    contract = config.contract
    if contract is None:
        raise ValueError("PipelineConfig.contract is needed (components.contract.load_or_infer)")
    if not contract.has_rating and not models.is_ranking(config.training.model):
        raise ValueError(f"--model {config.training.model} predicts ratings, but {contract.interactions_file} has no "
                         f"rating column (implicit feedback): use a ranking model ({', '.join(models.RANKING_MODELS)}, "
                         f"or {models.AUTO}), or name the rating column with --rating-col")
    params = _parameters(config)
    buckets = {F.TRAIN_SPLIT: config.train_hash_buckets, F.VALIDATION_SPLIT: config.validation_hash_buckets,
               F.EVAL_SPLIT: config.eval_hash_buckets}
    output_config = tfx.proto.Output(split_config=tfx.proto.SplitConfig(
        splits=[tfx.proto.SplitConfig.Split(name=name, hash_buckets=buckets[name]) for name in F.SPLIT_NAMES]))
    if config.bigquery_query:
        if config.split != "hash":
            raise ValueError(f"split {config.split!r} needs the file ExampleGen; BigQuery input is split by hash")
        example_gen = BigQueryExampleGen(query=config.bigquery_query, output_config=output_config)
    else:
        example_gen = _file_example_gen(config, params, output_config)
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_export = []
    if config.schema_path:  # the curated copy: later runs validate against what the user reviewed
        schema_gen = tfx.components.ImportSchemaGen(schema_file=config.schema_path)
    else:  # first run on this data: infer from the statistics, then write the curated copy for review
        schema_gen = tfx.components.SchemaGen(statistics=statistics_gen.outputs["statistics"])
        if config.schema_export_path:
            schema_export = [CuratedSchemaExport(
                schema=schema_gen.outputs["schema"], destination=config.schema_export_path,
                not_in_serving=json.dumps(list(contract.not_in_serving)),
                drift_features=json.dumps(list(contract.drift_features)), source=config.data_root,
                value_ranges=json.dumps({F.RATING: list(contract.rating_range)} if contract.rating_range else {}))]
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    # Drift: the schema's comparators between this run's statistics and those the data gate last accepted
    # (resolved before StatisticsGen runs, so never this run's own; a rejected span never becomes the baseline);
    # nothing to compare on the first run.
    previous_statistics = tfx.dsl.Resolver(
        # Locally, none on a first run is not an error (components/resolvers.py); Kubeflow needs TFX's own class.
        strategy_class=(LatestArtifactIfAnyStrategy if config.orchestrator == LOCAL
                        else tfx.dsl.experimental.LatestArtifactStrategy),
        statistics=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ExampleStatistics,
                                   producer_component_id=DATA_GATE_ID, output_key="accepted_statistics"),
    ).with_id("previous_statistics")
    statistics_gen.add_upstream_node(previous_statistics)
    data_gate = DataGate(anomalies=example_validator.outputs["anomalies"], statistics=statistics_gen.outputs["statistics"],
                         baseline_statistics=previous_statistics.outputs["statistics"],
                         schema=schema_gen.outputs["schema"], allow_drift=config.allow_drift,
                         serving_log=config.serving_log, allow_skew=config.allow_skew).with_id(DATA_GATE_ID)
    training_examples, windows = example_gen.outputs["examples"], []
    if _trains_on_a_window(config):
        if config.orchestrator != LOCAL:
            raise ValueError(f"a window of spans (--window {config.window}) runs on the local runner only: Kubeflow's "
                             f"compiler accepts TFX's own resolver strategies alone")
        window = tfx.dsl.Resolver(
            strategy_class=SpanWindowStrategy, config={"num_spans": config.window},
            examples=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Examples, producer_component_id=example_gen.id),
        ).with_id(SPAN_WINDOW_ID)
        window.add_upstream_node(example_gen)  # this run's span is in ML Metadata before the window is resolved
        training_examples, windows = window.outputs["examples"], [window]
    transform = tfx.components.Transform(
        examples=training_examples,
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        custom_config={MIN_ID_FREQUENCY: config.min_id_frequency, contract_lib.CONFIG_KEY: contract.to_json()},
        # Vocabularies and statistics from train only; every split transformed (validation feeds early stopping).
        splits_config=tfx.proto.SplitsConfig(analyze=[F.TRAIN_SPLIT], transform=list(F.SPLIT_NAMES)),
        # StatisticsGen already describes the raw splits; Transform's own post-transform statistics wait for
        # the transformed examples to be written, which makes the DirectRunner hold all of them in memory
        # (10M interactions: a 13.2 GB peak), and nothing reads them.
        disable_statistics=True,
        # Nothing feeds the analyzer cache back (a rolling window's analysis is a few seconds); writing it cost a
        # window of 7 spans 25 s of its 61 s (21 K interactions, 2 cores).
        disable_analyzer_cache=True,
        # A window's spans are transformed where they are read (the Trainer): writing 3 splits of every span again
        # each day took a 7-day window of 100K interactions 50 of Transform's 75 s.
        materialize=not windows,
    )
    transform.add_upstream_node(data_gate)  # bad data stops the run before any training
    # What the Tuner and the Trainer both read: train to fit, validation to stop early and tune; never eval.
    training_inputs = dict(
        examples=training_examples if windows else transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=params["train-args"],
        eval_args=tfx.proto.EvalArgs(splits=[F.VALIDATION_SPLIT]),
        custom_config=params["training-config"],
    )
    tuning = []
    # The Tuner searches a rating model's hyperparameters; a ranking model's search is its Trainer's own (on
    # validation, `--tune` only re-running it over a warm start: TrainingConfig.keep_tuned).
    if not models.is_ranking(config.training.model) and config.tune is not False:
        # A rating model gets a budgeted search by default (TrainingConfig.tuner_budget_s); `--no-tune` skips it.
        tuning = [tfx.components.Tuner(tuner_fn=TUNER_FN, **training_inputs)]
    baseline_resolver = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        # The final verdict is the ranking gate's (the TFMA Evaluator's blessing is one of its inputs).
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing,
                                       producer_component_id=RANKING_GATE_ID, output_key="blessing"),
    ).with_id("latest_blessed_model_resolver")
    trainer = tfx.components.Trainer(
        run_fn=RUN_FN,
        hyperparameters=tuning[0].outputs["best_hyperparameters"] if tuning else None,
        # Warm start from the latest blessed model (components/warm_start.py); `--cold` trains from scratch.
        base_model=baseline_resolver.outputs["model"] if config.warm_start else None,
        **training_inputs,
    )
    rating_components, rating_blessing = [], None
    if not models.is_ranking(config.training.model):  # a ranking model's predict is a score, not a rating
        evaluator = tfx.components.Evaluator(
            examples=example_gen.outputs["examples"],
            model=trainer.outputs["model"],
            baseline_model=baseline_resolver.outputs["model"],
            eval_config=eval_config(config.evaluation, [f.name for f in contract.used(contract.item_features)
                                                        if f.kind in (contract_lib.CATEGORICAL, contract_lib.MULTI)]),
            example_splits=[F.EVAL_SPLIT],
        )
        rating_components, rating_blessing = [evaluator], evaluator.outputs["blessing"]
    evaluation = config.evaluation
    ranking_gate = RankingGate(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=baseline_resolver.outputs["model"],
        rating_blessing=rating_blessing,
        training_config=_json_parameter(params["training-config"]),
        k=evaluation.ranking_k,
        min_lift_over_popular=evaluation.min_lift_over_popular,
        max_relative_recall_regression=evaluation.max_relative_recall_regression,
        regression_confidence=evaluation.regression_confidence,
        gate_rating_models=evaluation.gate_rating_models_on_ranking,
        # A window's earlier spans: the eval users' history before this span (a held-out user's only one).
        history_examples=windows[0].outputs["examples"] if windows else None,
    ).with_id(RANKING_GATE_ID)
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"],
        model_blessing=ranking_gate.outputs["blessing"],
        push_destination=params["push-destination"],
    )
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=[
            example_gen, previous_statistics, statistics_gen, schema_gen, *schema_export, example_validator, data_gate,
            *windows, transform, *tuning,
            baseline_resolver, trainer, *rating_components, ranking_gate, pusher,
        ],
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata.connection_config(config),
        beam_pipeline_args=list(config.tfx_beam_pipeline_args),
    )
