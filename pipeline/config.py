"""Typed pipeline configuration: built once by the CLI, read by the pipeline factory, never global."""

from __future__ import annotations

import dataclasses
import os
import posixpath
from typing import Mapping, Optional, Tuple

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
SPLIT_AUTO, SPLIT_HASH, SPLIT_USER_TIME = "auto", "hash", "user-time"
SPLIT_CHOICES = (SPLIT_AUTO, SPLIT_HASH, "time", SPLIT_USER_TIME, "leave-last-one-out")


def resolve_split(split: str, contract: Optional[DataContract], bigquery: bool = False) -> str:
    """The split `auto` stands for: `user-time` when the interactions carry a timestamp (each user's newest
    interactions are validation and eval, so tuning, early stopping and the gates measure what serving faces: the
    future), else `hash`; always `hash` for BigQuery input (split by hash only). Any other split is kept, and `auto`
    stays `auto` while the contract is unknown."""
    if split != SPLIT_AUTO:
        return split
    if bigquery:
        return SPLIT_HASH
    if contract is None:
        return split
    return SPLIT_USER_TIME if contract.has_timestamp else SPLIT_HASH


def default_beam_args(interactions_bytes: int, cpus: int) -> Tuple[str, ...]:
    """DirectRunner settings for a local run: all cores for large inputs, one process for small ones."""
    if interactions_bytes >= MULTI_PROCESSING_MIN_BYTES and cpus > 1:
        return ("--direct_running_mode=multi_processing", f"--direct_num_workers={cpus}")
    return IN_MEMORY_BEAM_ARGS


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
    # Users and items with fewer training ratings than this get no embedding of their own (OOV).
    min_id_frequency: int = 1
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    beam_args: Tuple[str, ...] = IN_MEMORY_BEAM_ARGS
    enable_cache: bool = False
    # LOCAL: SQLite ML Metadata under output_dir. KUBEFLOW: the cluster's metadata store, and the
    # per-run knobs (data root, training config, train steps, push destination) become runtime parameters.
    orchestrator: str = LOCAL
    train_steps: int = 0  # 0: whole epochs, as TrainingConfig.epochs says
    # `recsys run --tune`: a Tuner searches the rating model's embedding size, L2 and learning rate on the
    # validation split before the Trainer, which trains with the best values (recorded in ML Metadata).
    tune: bool = False
    mysql: Optional[MySQLMetadata] = None  # None: SQLite at metadata_path (ignored on Kubeflow)

    def __post_init__(self):
        resolved = resolve_split(self.split, self.contract, bigquery=bool(self.bigquery_query))
        if resolved != self.split:  # frozen: set once, here, from the fields the config was built with
            object.__setattr__(self, "split", resolved)

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

    contract, inferred = load_or_infer(config.data_root, mapping, contract_path)
    schema = schema_path or posixpath.join(config.data_root, SCHEMA_FILE)
    try:  # a schema named explicitly is the curated one, even where this machine cannot look (gs:// at compile time)
        exists = bool(schema_path) or tf.io.gfile.exists(schema)
    except tf.errors.OpError:
        exists = False
    return dataclasses.replace(config, contract=contract, schema_path=schema if exists else "",
                               schema_export_path="" if exists else schema), inferred
