"""Typed pipeline configuration: built once by the CLI, read by the pipeline factory, never global."""

from __future__ import annotations

import dataclasses
import os
import posixpath
from typing import Mapping, Optional, Sequence, Tuple

from tfx import version as tfx_version

from components import features as F
from components.contract import CONTRACT_FILE, DataContract, load_or_infer
from components.training_config import TrainingConfig

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA_FILE = "schema.pbtxt"  # the curated schema, beside the data and its contract.json
DEFAULT_DATA_ROOT = os.path.join("data", "sample")
DEFAULT_OUTPUT_DIR = "output"
LOCAL = "local"
KUBEFLOW = "kubeflow"
ORCHESTRATORS = (LOCAL, KUBEFLOW)


IN_MEMORY_BEAM_ARGS = ("--direct_running_mode=in_memory", "--direct_num_workers=1")
# Measured on 2 cores (bench/results/pipeline_scale_*.json): multi-processing Beam loses at 100K ratings
# (worker start-up: 113 s vs 80 s for the pipeline) and wins at 1M (Beam stages 198 s vs 267 s).
MULTI_PROCESSING_MIN_BYTES = 16 * 2**20  # interactions.csv size from which every core is used

# Splits (components/example_gen.py: SPLITS); `auto` is resolved as soon as the contract is known (resolve_split).
SPLIT_AUTO, SPLIT_HASH, SPLIT_USER_TIME, SPLIT_USER_HASH = F.SPLIT_AUTO, F.SPLIT_HASH, F.SPLIT_USER_TIME, F.SPLIT_USER_HASH
SPLIT_CHOICES = (SPLIT_AUTO, SPLIT_HASH, F.SPLIT_TIME, SPLIT_USER_TIME, F.SPLIT_LAST_ONE, SPLIT_USER_HASH)


def resolve_split(split: str, contract: Optional[DataContract], bigquery: bool = False,
                  window_history: bool = False) -> str:
    """The split `auto` stands for: `user-time` when the interactions carry a timestamp (each user's newest
    interactions are validation and eval, so tuning, early stopping and the gates measure what serving faces: the
    future), else `hash`; always `hash` for BigQuery input (split by hash only). Any other split is kept, and `auto`
    stays `auto` while the contract is unknown.

    A run over a window of spans with earlier spans in it (`window_history`) holds users out instead (`user-hash`):
    a model fitted on part of a user's day learns that the rest of it is absent, and judged on that rest it loses to
    yesterday's model, which never saw the day, though it wins on the next day (bench/results/replay.md). A held-out
    user's whole day is unseen and scored from their earlier spans: the next day's serving, on today's data."""
    if split != SPLIT_AUTO:
        return split
    if bigquery:
        return SPLIT_HASH
    if contract is None:
        return split
    if window_history:
        return SPLIT_USER_HASH
    return SPLIT_USER_TIME if contract.has_timestamp else SPLIT_HASH


def default_beam_args(interactions_bytes: int, cpus: int) -> Tuple[str, ...]:
    """DirectRunner settings for a local run: all cores for large inputs, one process for small ones."""
    if interactions_bytes >= MULTI_PROCESSING_MIN_BYTES and cpus > 1:
        return ("--direct_running_mode=multi_processing", f"--direct_num_workers={cpus}")
    return IN_MEMORY_BEAM_ARGS


# Beam runners: every Beam-powered component (those on a BeamExecutorSpec; here ExampleGen, StatisticsGen, Transform
# and Evaluator) runs its Beam stages on the pipeline's runner.
DIRECT, DATAFLOW, FLINK, SPARK = "DirectRunner", "DataflowRunner", "FlinkRunner", "SparkRunner"
BEAM_RUNNERS = (DIRECT, DATAFLOW, FLINK, SPARK)
RUNNER_OPTION = "--runner"
# Where the Dockerfile puts this repository inside the pipeline image (the components' working directory): Dataflow
# workers install the components' code from its setup.py unless told otherwise.
IMAGE_WORKDIR = "/pipeline"
DATAFLOW_CODE_OPTIONS = ("--setup_file", "--sdk_container_image", "--extra_package", "--extra_packages")
LOCAL_FLINK_MASTERS = ("[auto]", "[local]")  # Beam's FlinkRunner starts an embedded Flink in the launching process


class BeamOptionsError(ValueError):
    """Beam options a runner cannot work with: one line naming what is missing and the flag that gives it."""


def _option(arg: str) -> str:
    return arg.split("=", 1)[0]


def beam_option(args: Sequence[str], name: str) -> Optional[str]:
    """The value of `--name=value` in Beam arguments (the last one wins, as in Beam); '' for a bare flag."""
    value = None
    for arg in args:
        if _option(arg) == name:
            value = arg.split("=", 1)[1] if "=" in arg else ""
    return value


def _without(args: Sequence[str], names: Sequence[str]) -> Tuple[str, ...]:
    return tuple(a for a in args if _option(a) not in names)


def with_overrides(defaults: Sequence[str], overrides: Sequence[str]) -> Tuple[str, ...]:
    """`defaults` whose options `overrides` name replaced by the overriding values (appended, in their order)."""
    return (*_without(defaults, [_option(a) for a in overrides]), *overrides)


def beam_runner(requested: Optional[str], user_args: Sequence[str]) -> str:
    """The runner `--beam-runner` names, else the one a `--beam-arg=--runner=` names, else DirectRunner."""
    named = beam_option(user_args, RUNNER_OPTION)
    if requested and named and named != requested:
        raise BeamOptionsError(f"--beam-arg={RUNNER_OPTION}={named} conflicts with --beam-runner {requested}: "
                               f"name the runner once")
    return _known(requested or named or DIRECT)


def _known(runner: str) -> str:
    if runner not in BEAM_RUNNERS:
        raise BeamOptionsError(f"unknown Beam runner {runner!r}; choose one of: {', '.join(BEAM_RUNNERS)}")
    return runner


def _on_gcs(path: str) -> bool:
    return path.startswith("gs://")


def _derived_options(runner: str, output_dir: str, user_args: Sequence[str]) -> Tuple[str, ...]:
    """What a runner gets unless the user says otherwise (Dataflow: the image's setup.py, unless the user ships the
    code another way; a temp location beside the pipeline root)."""
    if runner != DATAFLOW:
        return ()
    derived = []
    if not any(beam_option(user_args, name) for name in DATAFLOW_CODE_OPTIONS):
        derived.append(f"--setup_file={posixpath.join(IMAGE_WORKDIR, 'setup.py')}")
    if _on_gcs(output_dir):
        derived.append(f"--temp_location={posixpath.join(output_dir, 'tmp')}")
    return tuple(derived)


def check_runner_options(runner: str, options: Sequence[str], output_dir: str, data_root: str = "") -> None:
    """Raises BeamOptionsError when `options` lack what `runner` needs to leave this machine (Beam's own checks
    come only when a component starts on the cluster)."""
    def flag(name: str, example: str) -> str:
        return f"--beam-arg={name}={example}"

    if runner == DATAFLOW:
        missing = [flag(name, example) for name, example in (("--project", "PROJECT"), ("--region", "REGION"))
                   if not beam_option(options, name)]
        temp = beam_option(options, "--temp_location")
        if not temp:
            missing.append(flag("--temp_location", "gs://BUCKET/tmp") + " (or a gs:// --output-dir)")
        if missing:
            raise BeamOptionsError(f"{DATAFLOW} needs {', '.join(missing)}")
        if not _on_gcs(temp):
            raise BeamOptionsError(f"{DATAFLOW} needs --temp_location on gs://, not {temp!r}: give "
                                   f"{flag('--temp_location', 'gs://BUCKET/tmp')}")
        for what, path in (("--output-dir", output_dir), ("--data-root", data_root)):
            if path and not _on_gcs(path):
                raise BeamOptionsError(f"{DATAFLOW} workers cannot reach {what} {path!r}: give a gs:// one")
    elif runner == FLINK:
        master = beam_option(options, "--flink_master")
        if not beam_option(options, "--job_endpoint") and (not master or master in LOCAL_FLINK_MASTERS):
            raise BeamOptionsError(f"{FLINK} needs the Flink cluster: give {flag('--flink_master', 'HOST:8081')} or "
                                   f"{flag('--job_endpoint', 'HOST:8099')} (a Beam Flink job server)")
    elif runner == SPARK:
        master = beam_option(options, "--spark_master_url")
        if not beam_option(options, "--job_endpoint") and (not master or master.startswith("local")):
            raise BeamOptionsError(f"{SPARK} needs the Spark cluster: give "
                                   f"{flag('--spark_master_url', 'spark://HOST:7077')} or "
                                   f"{flag('--job_endpoint', 'HOST:8099')} (a Beam Spark job server)")
        if beam_option(options, "--spark_submit_uber_jar") is not None and not beam_option(options, "--spark_rest_url"):
            raise BeamOptionsError(f"--spark_submit_uber_jar needs {flag('--spark_rest_url', 'http://HOST:6066')}")


def beam_settings(requested: Optional[str], user_args: Sequence[str], direct_defaults: Tuple[str, ...],
                  output_dir: str = "", data_root: str = "") -> Tuple[str, Tuple[str, ...]]:
    """(runner, its options) from `--beam-runner` and `--beam-arg`s. DirectRunner: the user's arguments as given,
    else `direct_defaults` (as before runners were named). Other runners: their derived options (Dataflow: the image's
    setup.py, a temp location under a gs:// output dir) with the user's of the same name replacing them, checked."""
    runner = beam_runner(requested, user_args)
    if runner == DIRECT:
        return runner, tuple(user_args) or tuple(direct_defaults)
    options = with_overrides(_derived_options(runner, output_dir, user_args), _without(user_args, [RUNNER_OPTION]))
    check_runner_options(runner, options, output_dir, data_root)
    return runner, options


# TFX's BaseBeamExecutor builds an sdist of TFX itself in a new temp directory for every Beam-powered component it
# starts (1.6 s and 49 MB each, never removed: one test suite's worth filled CI's disk) unless an option names the
# workers' code (tfx/utils/dependency_utils.py). DirectRunner workers are this interpreter, its subprocesses or, where
# Beam picks Prism, loopback workers in this process: none starts an image, so a DirectRunner pipeline names TFX's own
# image of this version. (A --setup_file would do too, but Prism's staging builds an sdist of it, 1.3 s a pipeline.)
TFX_CODE_OPTIONS = (*DATAFLOW_CODE_OPTIONS, "--requirements_file", "--worker_harness_container_image")
DIRECT_RUNNER_CODE = f"--sdk_container_image=gcr.io/tfx-oss-public/tfx:{tfx_version.__version__}"


def tfx_beam_args(runner: str, options: Sequence[str]) -> Tuple[str, ...]:
    """What TFX gets as beam_pipeline_args: `pipeline_beam_args`, and for the DirectRunner DIRECT_RUNNER_CODE first
    unless the options already name the workers' code (see TFX_CODE_OPTIONS)."""
    args = pipeline_beam_args(runner, options)
    if runner != DIRECT or any(beam_option(args, name) is not None for name in TFX_CODE_OPTIONS):
        return args
    return (DIRECT_RUNNER_CODE, *args)


def pipeline_beam_args(runner: str, options: Sequence[str]) -> Tuple[str, ...]:
    """TFX's beam_pipeline_args: `--runner=` first for any runner but the DirectRunner (Beam's default, left
    implicit so a local run's arguments stay the ones it was given)."""
    _known(runner)
    named = beam_option(options, RUNNER_OPTION)
    if named and named != runner:
        raise BeamOptionsError(f"Beam options name {RUNNER_OPTION}={named} but the pipeline's runner is {runner}")
    if runner == DIRECT:
        return tuple(options)
    return (f"{RUNNER_OPTION}={runner}", *_without(options, [RUNNER_OPTION]))


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    """Model gates. Ranking (every model, on the eval split): Recall@k over the whole catalogue must beat
    most-popular's by `min_lift_over_popular` and not fall below the latest blessed model's by more than
    `max_relative_recall_regression`. Rating models also pass TFMA's RMSE gate (under the bound, not worse
    than the baseline); their ranking metrics are reported but only gate them with `gate_rating_models_on_ranking`."""

    rmse_upper_bound: float = 1.0
    # Allowed RMSE increase over the latest blessed model, relative (0.01 = 1 % worse at most).
    max_relative_rmse_regression: float = 0.01
    ranking_k: int = 10
    # Recall@k must exceed most-popular's * (1 + this): 0 = strictly above most popular.
    min_lift_over_popular: float = 0.0
    # Allowed Recall@k drop below the latest blessed model's, relative (0.02 = 2 % lower at most).
    max_relative_recall_regression: float = 0.02
    # ... refused only at this confidence: the upper bound of the paired per-user difference must be below the
    # allowed drop (components/ranking_gate.py); 0.5 is the point comparison.
    regression_confidence: float = 0.95
    gate_rating_models_on_ranking: bool = False


@dataclasses.dataclass(frozen=True)
class MySQLMetadata:
    """An ML Metadata store in MySQL, shared by a team or a cluster (instead of the local SQLite file)."""

    host: str
    port: int = 3306
    database: str = "mlmd"
    user: str = "root"
    password: str = ""


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    data_root: str = DEFAULT_DATA_ROOT
    output_dir: str = DEFAULT_OUTPUT_DIR
    pipeline_name: str = "recsys"
    model_name: str = F.DEFAULT_MODEL_NAME
    # What the files hold (components/contract.py): inferred by `recsys run` on the first run, then read back.
    contract: Optional[DataContract] = None
    # The curated schema ImportSchemaGen reads; '' = none yet: SchemaGen infers one from the statistics and
    # the run writes its curated copy to schema_export_path for review (the next run imports it).
    schema_path: str = ""
    schema_export_path: str = ""
    # Drift beyond the schema's comparators vs the previous run's statistics: reported, not fatal.
    allow_drift: bool = False
    # The served model's request log (`recsys serve --log-requests DIR`): the data gate applies the schema's skew
    # comparators between it and this run's training data (components/serving_skew.py); "" skips the check.
    serving_log: str = ""
    allow_skew: bool = False  # print skew instead of failing the run
    # Kubeflow / Vertex: read the interactions from BigQuery (TFX's BigQueryExampleGen) with this query instead of
    # files under data_root. It returns the contract's columns already joined, ids as STRING; hash split only.
    bigquery_query: str = ""
    # hash (TFX's hash buckets), time (the newest interactions overall are eval, the next newest validation),
    # user-time (the same within each user's history) or leave-last-one-out; the buckets give the eval and
    # validation fractions for all of them (1 of 8+1+1 = 10 % each). `auto` (the default) becomes user-time when the
    # contract has a timestamp, else hash (BigQuery: hash), as soon as the config holds its contract (__post_init__),
    # so what runs, and what ML Metadata records in ExampleGen's custom_config, is the resolved split.
    split: str = SPLIT_AUTO
    train_hash_buckets: int = 8
    validation_hash_buckets: int = 1
    eval_hash_buckets: int = 1
    # 0: the interactions are under data_root itself. N: data_root holds dated spans and this run reads span N
    # (DATA_ROOT/span-N/interactions.*, and the span's own items.*/users.* when it has them), through ExampleGen's
    # `{SPAN}` pattern and a RangeConfig naming N (components/spans.py); ML Metadata records the span.
    span: int = 0
    # With a span: train on the last `window` spans ending at it (those a completed run's Transform accepted, and
    # this one), through a resolver over ML Metadata (components/resolvers.py SpanWindowStrategy; local runner).
    # The data gate, the Evaluator and the ranking gate judge the newest span alone; the ranking gate scores its
    # eval users from the window's earlier spans too.
    window: int = 1
    # Complete spans before `span` inside the window (the CLI counts them in the data root): with any, `auto` holds
    # users out (user-hash, resolve_split).
    earlier_spans: int = 0
    # Kubeflow (`recsys compile --span latest`): each run reads the newest span present when it starts (ExampleGen's
    # driver, no RangeConfig); `span` then only names the span the contract was checked against at compile time.
    latest_span_at_run_time: bool = False
    # The Trainer starts from the latest blessed model (TFX's base_model through the baseline's resolver; EASE and
    # iALS keep its tuned values, iALS its item factors, the embedding models its weights by id:
    # components/warm_start.py). False: `--cold`, from scratch.
    warm_start: bool = True
    # Users and items with fewer training ratings than this get no embedding of their own (OOV).
    min_id_frequency: int = 1
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    # The Beam runner of every Beam-powered component and its options (beam_settings); the pipeline hands both to
    # TFX as beam_pipeline_args.
    beam_runner: str = DIRECT
    beam_args: Tuple[str, ...] = IN_MEMORY_BEAM_ARGS
    enable_cache: bool = False
    # LOCAL: SQLite ML Metadata under output_dir. KUBEFLOW: the cluster's metadata store, and the
    # per-run knobs (data root, training config, train steps, push destination) become runtime parameters.
    orchestrator: str = LOCAL
    train_steps: int = 0  # 0: whole epochs, as TrainingConfig.epochs says
    # A Tuner searches the rating model's embedding size, L2, learning rate (and mf's/hybrid's implicit term) on
    # the validation split before the Trainer, which trains with the best values (recorded in ML Metadata).
    # None: a rating model gets the budgeted search (TrainingConfig.tuner_budget_s), a ranking model none (it
    # searches in its Trainer; `--tune` there is TrainingConfig.keep_tuned=False); True: `--tune`; False: `--no-tune`.
    tune: Optional[bool] = None
    mysql: Optional[MySQLMetadata] = None  # None: SQLite at metadata_path (ignored on Kubeflow)

    @property
    def files_root(self) -> str:
        """Where this run's files are: the data root, or its span's directory."""
        from components import spans

        return spans.span_dir(self.data_root, self.span) if self.span else self.data_root

    def __post_init__(self):
        resolved = resolve_split(self.split, self.contract, bigquery=bool(self.bigquery_query),
                                 window_history=bool(self.span and self.window > 1 and self.earlier_spans))
        if resolved != self.split:  # frozen: set once, here, from the fields the config was built with
            object.__setattr__(self, "split", resolved)

    @property
    def beam_pipeline_args(self) -> Tuple[str, ...]:
        return pipeline_beam_args(self.beam_runner, self.beam_args)

    @property
    def tfx_beam_pipeline_args(self) -> Tuple[str, ...]:
        """The runner's options as the pipeline hands them to TFX (`tfx_beam_args`)."""
        return tfx_beam_args(self.beam_runner, self.beam_args)

    @property
    def eval_fraction(self) -> float:
        return self.eval_hash_buckets / self._total_buckets

    @property
    def validation_fraction(self) -> float:
        return self.validation_hash_buckets / self._total_buckets

    @property
    def _total_buckets(self) -> int:
        return self.train_hash_buckets + self.validation_hash_buckets + self.eval_hash_buckets

    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.output_dir, "pipeline_root")

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.output_dir, "metadata.sqlite")

    @property
    def serving_dir(self) -> str:
        """TF Serving's model base path: versions are pushed under it as `<serving_dir>/<version>/`."""
        return os.path.join(self.output_dir, "serving", self.model_name)


def schema_dir_files(schema_dir: str) -> Tuple[str, str]:
    """(contract, schema) of a reviewed pair kept in one directory, e.g. this repository's schema/movies
    (`recsys schema export` writes it, `--schema-dir` reads it)."""
    return posixpath.join(schema_dir, CONTRACT_FILE), posixpath.join(schema_dir, SCHEMA_FILE)


def with_data_contract(config: PipelineConfig, mapping: Optional[Mapping[str, str]] = None, contract_path: str = "",
                       schema_path: str = "") -> Tuple[PipelineConfig, bool]:
    """(config with the data root's contract and schema paths, whether the contract was inferred just now).

    The contract is DATA_ROOT/contract.json (or `contract_path`) when it exists, else inferred from the
    files and written there; the schema is DATA_ROOT/schema.pbtxt (or `schema_path`): imported when it
    exists, else inferred by SchemaGen in this run and written there, curated, for review. A split of `auto`
    is resolved with the contract (resolve_split).
    """
    import tensorflow as tf

    contract, inferred = load_or_infer(config.data_root, mapping, contract_path, files_root=config.files_root)
    schema = schema_path or posixpath.join(config.data_root, SCHEMA_FILE)
    try:  # a schema named explicitly is the curated one, even where this machine cannot look (gs:// at compile time)
        exists = bool(schema_path) or tf.io.gfile.exists(schema)
    except tf.errors.OpError:
        exists = False
    return dataclasses.replace(config, contract=contract, schema_path=schema if exists else "",
                               schema_export_path="" if exists else schema), inferred
