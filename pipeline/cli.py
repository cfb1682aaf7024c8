"""The `recsys` command: parse arguments, call one sub-command, print the outcome in a line or two.

The sub-commands live by what they act on: pipeline_commands (data and pipeline runs), serving_commands (served
versions), client_commands (a gRPC client's questions).

Heavy imports (TensorFlow, TFX) happen inside each sub-command, so `recsys --help` is instant.
Every expected failure is one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import os

# TFX 1.16 needs Keras 2; this must be set before TensorFlow is first imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import argparse  # noqa: E402
import importlib  # noqa: E402
import sys  # noqa: E402
from typing import List, Optional  # noqa: E402

from components import features as F  # noqa: E402
from components.training_config import RATING_HISTORY_CHOICES, TrainingConfig  # noqa: E402
from pipeline import config as C  # noqa: E402
from pipeline import client_commands, pipeline_commands, schema_commands, serving_commands  # noqa: E402
from pipeline.cli_common import EXIT_ERROR, EXIT_NOT_BLESSED, CliError  # noqa: E402,F401 (re-exported)
from pipeline.serving_commands import serve_options  # noqa: E402,F401 (re-exported)
from serving.options import DEFAULT_METRICS_PATH, ServerOptions  # noqa: E402

DEFAULT_TARGET = "localhost:8500"


def _add_client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default=DEFAULT_TARGET, help="host:port of the gRPC server (default %(default)s)")
    p.add_argument("--model-name", default=F.DEFAULT_MODEL_NAME)
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="wait up to this long for the server to have a model available")
    p.add_argument("--timeout", type=float, default=10.0, help="per-request deadline in seconds")
    p.add_argument("--label", default=None,
                   help="version label to ask for (default: stable when the served config has it, else the "
                        "server's newest served version; '' for no label)")
    _add_tls_args(p)


def _add_tls_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tls-ca", metavar="PEM", help="talk TLS to --target, trusting this CA certificate")
    p.add_argument("--tls-cert", metavar="PEM", help="client certificate, for servers that verify clients")
    p.add_argument("--tls-key", metavar="PEM", help="the client certificate's private key")


def _add_contract_args(p: argparse.ArgumentParser) -> None:
    for role in ("user", "item", "rating", "timestamp", "weight"):
        p.add_argument(f"--{role}-col", metavar="COLUMN",
                       help=f"interactions column holding the {role} (default: {role if role not in ('user', 'item') else role + '_id'}"
                            f"{'' if role in ('user', 'item') else ', when present'}); used when the contract is inferred")
    p.add_argument("--contract", metavar="JSON", help="the data contract (default DATA_ROOT/contract.json; inferred "
                                                      "from the files and written there when missing)")
    p.add_argument("--schema", metavar="PBTXT", help="the curated schema (default DATA_ROOT/schema.pbtxt; inferred by "
                                                     "SchemaGen on the first run and written there for review)")
    p.add_argument("--schema-dir", action=schema_commands.SchemaDirAction, metavar="DIR",
                   help="the reviewed pair `recsys schema export` wrote, e.g. schema/movies: stands for --contract "
                        "DIR/contract.json --schema DIR/schema.pbtxt")


def _add_split_arg(p: argparse.ArgumentParser, what: str = "", note: str = "") -> None:
    p.add_argument("--split", choices=C.SPLIT_CHOICES, default=C.PipelineConfig.split,
                   help=f"{what}train/validation/eval split: auto (default: user-time when the interactions have a "
                        f"timestamp, else hash{note}), hash (8:1:1 by a hash of user, item and time), time (newest "
                        f"10%% overall to eval, the next 10%% to validation), user-time (the same within each user's "
                        f"history), leave-last-one-out (each user's newest to eval, the one before to validation), "
                        f"user-hash (recsys run over a --window of spans: 10%% of each span's users held out whole, "
                        f"judged from their earlier spans; auto's choice once the window reaches an earlier span)")


def _add_beam_args(p: argparse.ArgumentParser, runners: str) -> None:
    p.add_argument("--beam-runner", choices=C.BEAM_RUNNERS, default=None,
                   help=f"the Beam runner of every Beam-powered component: {runners}")
    p.add_argument("--beam-arg", action="append", default=None, metavar="ARG",
                   help="a Beam pipeline option, repeatable (e.g. --beam-arg=--project=P); replaces the derived option "
                        "of the same name (DirectRunner: all of its defaults)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recsys", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="keep TensorFlow's and the libraries' warnings (hidden by default)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sample", help="generate a deterministic synthetic sample dataset")
    p.add_argument("--kind", choices=["movies", "shop", "timeline"], default="movies",
                   help="movies: explicit ratings, genres, year (the default); shop: implicit feedback, category, "
                        "brand, price, free-text description, users.csv; timeline: movies as daily spans "
                        "(span-N/interactions.csv, items.csv, _SUCCESS) with new items and users every day and "
                        "slowly drifting taste")
    p.add_argument("--days", type=int, default=None, help="timeline: how many daily spans (default 14)")
    p.add_argument("--out", default=C.DEFAULT_DATA_ROOT)
    p.add_argument("--num-ratings", "--num-interactions", dest="num_ratings", type=int, default=None,
                   help="default: 100,000 (movies), 60,000 (shop)")
    p.add_argument("--num-users", type=int, default=None, help="default: 2,000 (movies), 1,500 (shop)")
    p.add_argument("--num-items", type=int, default=None, help="default: 2,000 (movies), 3,000 (shop)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--taste-drift", type=float, default=0.0,
                   help="movies: how strongly each user's newest interactions lean one way (0: random order, the "
                        "default; 2: a strong drift of interest, for measuring fresh interactions)")

    p = sub.add_parser("import-movielens", help="convert a MovieLens download you have into the canonical layout")
    p.add_argument("src", help="directory of ml-100k, ml-1m, ml-latest or ml-latest-small files")
    p.add_argument("dest", help="directory to write interactions.csv, items.csv (and users.csv) into")
    p.add_argument("--split", help="ml-100k predefined split (u1..u5, ua, ub): writes DEST/train and DEST/test")

    p = sub.add_parser("run", help="run the TFX pipeline with the LocalDagRunner")
    p.add_argument("--data-root", default=C.DEFAULT_DATA_ROOT,
                   help="directory with interactions.csv|parquet and optional items.*, users.*")
    _add_contract_args(p)
    p.add_argument("--output-dir", default=C.DEFAULT_OUTPUT_DIR, help="pipeline root, ML Metadata and serving dir")
    p.add_argument("--model", default=TrainingConfig.model, help="model to train (default %(default)s)")
    p.add_argument("--model-name", default=F.DEFAULT_MODEL_NAME, help="name the model is served under")
    p.add_argument("--epochs", type=int, default=TrainingConfig.epochs)
    p.add_argument("--batch-size", type=int, default=TrainingConfig.batch_size)
    p.add_argument("--embedding-dim", type=int, default=TrainingConfig.embedding_dim)
    p.add_argument("--learning-rate", type=float, default=TrainingConfig.learning_rate)
    _add_ann_arg(p)
    _add_fit_args(p)
    _add_span_args(p)
    p.add_argument("--force", action="store_true",
                   help="with --span: train even when ML Metadata says this span was already trained and blessed, "
                        "or a newer one was")
    _add_split_arg(p)
    p.add_argument("--min-id-frequency", type=int, default=C.PipelineConfig.min_id_frequency,
                   help="users/items with fewer training ratings share the OOV bucket (default %(default)s)")
    p.add_argument("--rmse-threshold", type=float, default=C.EvaluationConfig.rmse_upper_bound,
                   help="bless only models with eval RMSE below this (default %(default)s)")
    p.add_argument("--max-rmse-regression", type=float, default=C.EvaluationConfig.max_relative_rmse_regression,
                   help="bless only models at most this much worse than the latest blessed one, relative "
                        "(default %(default)s = 1 %%)")
    p.add_argument("--ranking-k", type=int, default=C.EvaluationConfig.ranking_k,
                   help="k of the ranking gate's Recall@k and NDCG@k (default %(default)s)")
    p.add_argument("--min-lift-over-popular", type=float, default=C.EvaluationConfig.min_lift_over_popular,
                   help="bless only models whose Recall@k exceeds most popular's * (1 + this) (default %(default)s)")
    p.add_argument("--max-recall-regression", type=float,
                   default=C.EvaluationConfig.max_relative_recall_regression,
                   help="bless only models whose Recall@k is at most this much below the latest blessed one's, "
                        "relative (default %(default)s = 2 %%)")
    p.add_argument("--regression-confidence", type=float, default=C.EvaluationConfig.regression_confidence,
                   help="...refused only when the paired per-user comparison shows it at this confidence "
                        "(default %(default)s; 0.5: the point comparison)")
    p.add_argument("--gate-rating-models-on-ranking", action="store_true",
                   help="rating models must pass the ranking gate too (default: their top-k is reported only)")
    p.add_argument("--allow-drift", action="store_true",
                   help="report drift against the previous run's statistics instead of stopping the run")
    p.add_argument("--serving-log", metavar="DIR", default="",
                   help="the served model's request log (recsys serve --log-requests DIR): the data gate applies "
                        "the schema's skew comparators between the ids serving was asked about and this run's "
                        "training data")
    p.add_argument("--allow-skew", action="store_true",
                   help="report training/serving skew instead of stopping the run")
    _add_beam_args(p, "only DirectRunner here (Beam on this machine; default: every core for inputs from 16 MiB); "
                      "the others run where a cluster reaches the data: `recsys compile --beam-runner`")
    env = os.environ.get
    p.add_argument("--mlmd-mysql-host", default=env("RECSYS_MLMD_MYSQL_HOST"),
                   help="record ML Metadata in this MySQL server instead of SQLite (env RECSYS_MLMD_MYSQL_HOST)")
    p.add_argument("--mlmd-mysql-port", type=int, default=int(env("RECSYS_MLMD_MYSQL_PORT", "3306")))
    p.add_argument("--mlmd-mysql-database", default=env("RECSYS_MLMD_MYSQL_DATABASE", "mlmd"))
    p.add_argument("--mlmd-mysql-user", default=env("RECSYS_MLMD_MYSQL_USER", "root"),
                   help="the password comes from env RECSYS_MLMD_MYSQL_PASSWORD only")

    p = sub.add_parser("benchmark", help="train every model through the pipeline and compare them on held-out data")
    p.add_argument("--data-root", default=C.DEFAULT_DATA_ROOT)
    p.add_argument("--test-file", help="held-out interactions.csv (e.g. an imported ml-100k u1 test part); "
                                       "default: the pipeline's eval split")
    p.add_argument("--models", default=None, help="comma-separated (default: every registered model)")
    _add_split_arg(p, "the pipeline's split for every model: ")
    p.add_argument("--output-dir", default=os.path.join(C.DEFAULT_OUTPUT_DIR, "benchmark"))
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--epochs", type=int, default=TrainingConfig.epochs,
                   help="the Trainer's epochs, and the cap of each Tuner trial's (default %(default)s)")
    p.add_argument("--rating-variants", action="store_true",
                   help="also run mf and hybrid in each form (the seeds' form, SVD++'s implicit term), with and "
                        "without the refit on train + validation, without the Tuner, beside their defaults")
    p.add_argument("--replay", action="store_true",
                   help="instead: continuous training replayed over a generated timeline of daily spans (warm and "
                        "cold runs each day on the last --window spans, scored on the next day's interactions beside "
                        "a model frozen after day 1 and most popular, under a live server's client loop); writes "
                        "OUTPUT_DIR/replay.json and replay.md (working files under OUTPUT_DIR/replay/)")
    p.add_argument("--days", type=int, default=14, help="with --replay: days of the timeline (default %(default)s)")
    p.add_argument("--window", type=int, default=7, help="with --replay: spans each run trains on (default %(default)s)")
    p.add_argument("--scale", type=float, default=1.0,
                   help="with --replay: the timeline's users and items times this (default 1: ~14,000 interactions "
                        "a day)")

    p = sub.add_parser("compile", help="compile the pipeline for Kubeflow Pipelines v2 / Vertex AI Pipelines")
    p.add_argument("--orchestrator", choices=[C.KUBEFLOW], default=C.KUBEFLOW)
    p.add_argument("--image", required=True, help="pipeline image built from this repository's Dockerfile")
    p.add_argument("--output", default="pipeline.json", help="where to write the KFP PipelineJob JSON")
    p.add_argument("--data-root", required=True, help="default of the data-root runtime parameter (gs://, s3://, ...); "
                                                      "with --bigquery-query, where contract.json and schema.pbtxt live")
    p.add_argument("--bigquery-query", metavar="SQL",
                   help="read the interactions with TFX's BigQueryExampleGen: the query returns the contract's columns "
                        "joined (ids as STRING); pass --beam-arg=--project=... --beam-arg=--temp_location=gs://...")
    _add_contract_args(p)
    _add_split_arg(p, "", " (with --bigquery-query: hash only)")
    p.add_argument("--output-dir", required=True, help="pipeline root and serving dir on shared storage")
    p.add_argument("--model", default=TrainingConfig.model)
    p.add_argument("--model-name", default=F.DEFAULT_MODEL_NAME)
    p.add_argument("--train-steps", type=int, default=0, help="default of train-args num_steps (0: whole epochs)")
    _add_ann_arg(p)
    _add_fit_args(p)
    _add_span_args(p, compile_time=True)
    _add_beam_args(p, "DirectRunner (default: in memory, one process, inside each component's pod), DataflowRunner "
                      "(needs --project, --region, a gs:// temp location), FlinkRunner (--flink_master or "
                      "--job_endpoint), SparkRunner (--spark_master_url or --job_endpoint)")

    p = sub.add_parser("schema", help="keep the reviewed data contract and schema in the repository")
    p.add_argument("what", choices=["export"],
                   help="export: copy DATA_ROOT/contract.json and DATA_ROOT/schema.pbtxt, which a first run inferred "
                        "and curated, to --to for review and commit")
    p.add_argument("--data-root", default=C.DEFAULT_DATA_ROOT, help="the data a first run was made on")
    p.add_argument("--to", required=True, metavar="DIR", help="where the reviewed pair lives, e.g. schema/NAME")

    p = sub.add_parser("serve", help="serve pushed versions over TensorFlow Serving's gRPC and REST APIs")
    p.add_argument("--model-dir", default=os.path.join(C.DEFAULT_OUTPUT_DIR, "serving", F.DEFAULT_MODEL_NAME),
                   help="model base path holding <version>/saved_model.pb")
    p.add_argument("--model-name", default=F.DEFAULT_MODEL_NAME)
    p.add_argument("--model-config-file", help="TF Serving ModelServerConfig (text): several models, version "
                                                "policies and labels; replaces --model-dir/--model-name")
    p.add_argument("--host", default=ServerOptions.host,
                   help="address to listen on (default %(default)s: this machine only; 0.0.0.0 in containers)")
    p.add_argument("--port", type=int, default=ServerOptions.port, help="gRPC port (default %(default)s)")
    p.add_argument("--rest-port", type=int, default=8501,
                   help="REST port, TF Serving's /v1/models API and metrics (default %(default)s; 0: no REST)")
    p.add_argument("--poll-interval", type=float, default=ServerOptions.poll_interval,
                   help="seconds between scans for new versions (default %(default)s)")
    p.add_argument("--max-workers", type=int, default=ServerOptions.max_workers,
                   help="gRPC request threads (default %(default)s)")
    p.add_argument("--max-message-bytes", type=int, default=ServerOptions.max_message_bytes,
                   help="largest request or response; larger ones get RESOURCE_EXHAUSTED (default %(default)s)")
    p.add_argument("--max-request-bytes", type=int, default=ServerOptions.max_request_bytes,
                   help="largest gRPC request or REST body, refused before it is read or parsed (default "
                        "%(default)s)")
    p.add_argument("--request-memory-mb", type=int, default=ServerOptions.request_memory_mb,
                   help="memory the requests in flight may take once parsed (~18x their size); a request that "
                        "does not fit waits for none: RESOURCE_EXHAUSTED (default %(default)s)")
    p.add_argument("--enable-batching", action="store_true",
                   help="batch concurrent requests to a signature (TF Serving's --enable_batching)")
    p.add_argument("--batching-parameters-file",
                   help="TF Serving BatchingParameters (text), e.g. serving/deploy/batching.config; implies "
                        "--enable-batching")
    p.add_argument("--ssl-config-file", help="TF Serving SSLConfig (text): server_key, server_cert PEM, optional "
                                              "custom_ca and client_verify; gRPC then requires TLS")
    p.add_argument("--monitoring-config-file",
                   help="TF Serving MonitoringConfig (text); default: Prometheus metrics at "
                        f"{DEFAULT_METRICS_PATH} on the REST port")
    p.add_argument("--drain-seconds", type=float, default=ServerOptions.drain_seconds,
                   help="on SIGTERM, how long in-flight requests may take to finish (default %(default)s)")
    p.add_argument("--admin-port", type=int, default=None,
                   help="serve ModelService.HandleReloadConfigRequest (recsys promote --target) on this port of "
                        "127.0.0.1 only (default: model management off)")
    p.add_argument("--model-root", action="append", default=None, metavar="DIR",
                   help="a reloaded config's base_path must lie under one of these (repeatable; default: the "
                        "parent directory of each served model)")
    p.add_argument("--max-rows", type=int, default=ServerOptions.max_rows,
                   help="rows (or tf.Examples) per request for any signature (default %(default)s)")
    p.add_argument("--row-limit", action="append", default=None, metavar="SIGNATURE=N",
                   help="rows per request for one signature (repeatable; default: "
                        + ", ".join(f"{s}={n}" for s, n in ServerOptions.row_limits) + ")")
    p.add_argument("--rest-max-connections", type=int, default=ServerOptions.rest_max_connections,
                   help="open REST connections; at the cap a new one closes the longest-idle connection, and is "
                        "refused only when every connection has a request in flight (default %(default)s)")
    p.add_argument("--rest-max-connections-per-client", type=int,
                   default=ServerOptions.rest_max_connections_per_client,
                   help="open REST connections from one IP address, shed the same way (default %(default)s)")
    p.add_argument("--rest-timeout", type=float, default=ServerOptions.rest_timeout,
                   help="idle/header timeout: seconds a REST connection may take to send a request's headers "
                        "(from connecting or from its last answer) or the next body bytes; then it is closed "
                        "(default %(default)s)")
    p.add_argument("--fresh-history", metavar="SOURCE",
                   help="interactions newer than the served model: a data root of spans (the newest complete "
                        "span's interactions.csv) or a CSV file with user_id,item_id[,timestamp]; recommend and "
                        "recommend_filtered (with exclude_rated) then score each user from these too and leave them "
                        "out, without a retrain or a model reload")
    p.add_argument("--fresh-history-refresh-seconds", type=float, default=ServerOptions.fresh_history_refresh_s,
                   help="re-read --fresh-history this often when it changed (atomically; a failed read keeps the "
                        "previous histories; their age is in the metrics) (default %(default)s)")
    p.add_argument("--log-requests", metavar="DIR",
                   help="write a sample of the Predict requests and their answers to DIR as TF Serving's request log "
                        "(PredictionLog TFRecords); `recsys run --serving-log DIR` checks them for skew")
    p.add_argument("--log-sample-rate", type=float, default=ServerOptions.log_sample_rate,
                   help="the share of Predict requests --log-requests keeps, in (0, 1] (default %(default)s)")

    def add_serving_args(p):
        p.add_argument("--output-dir", default=C.DEFAULT_OUTPUT_DIR, help="the pipeline's output dir")
        p.add_argument("--model-name", default=F.DEFAULT_MODEL_NAME)

    def add_change_args(p):
        add_serving_args(p)
        p.add_argument("--target", help="host:port of a running server to apply the new config to (recsys serve: "
                                         "its --admin-port; TF Serving: its gRPC port)")
        _add_tls_args(p)
        p.add_argument("--reason", default="", help="why, for the record")
        p.add_argument("--actor", help="who, for the record (default: the OS user)")

    p = sub.add_parser("promote", help="point a label (canary, stable) at a pushed version")
    p.add_argument("version", type=int)
    p.add_argument("--label", required=True, choices=["canary", "stable"])
    p.add_argument("--force", action="store_true", help="promote a version the Evaluator did not bless (recorded)")
    add_change_args(p)

    p = sub.add_parser("rollback", help="point a label back at its previous version")
    p.add_argument("--label", default="stable", choices=["canary", "stable"])
    add_change_args(p)

    p = sub.add_parser("models", help="pushed versions and their labels, or the promotion history")
    p.add_argument("what", choices=["list", "history"])
    add_serving_args(p)

    p = sub.add_parser("runs", help="an evaluation's metrics per slice and threshold verdicts, with a report")
    p.add_argument("what", choices=["show"])
    p.add_argument("run", nargs="?", help="a pipeline run id (default: the latest run that evaluated a model)")
    add_serving_args(p)

    p = sub.add_parser("predict", help="ask the server for one (user, item) rating")
    p.add_argument("--user", required=True)
    p.add_argument("--item", required=True)
    _add_client_args(p)

    p = sub.add_parser("recommend", help="ask the server for a user's or a session's top-k items")
    p.add_argument("--user", default=None, help="the user (required unless --history is given)")
    p.add_argument("--history", default=None, metavar="ITEM,ITEM",
                   help="item ids just interacted with, oldest first (recommend_by_history): without --user an "
                        "anonymous session; with --user added to the user's stored history. Left out of the answer")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--include-rated", action="store_true", help="also rank items the user already has")
    p.add_argument("--exclude", default="", metavar="ITEM,ITEM", help="leave these item ids out")
    p.add_argument("--allow", default="", metavar="ITEM,ITEM", help="rank only these item ids")
    p.add_argument("--feature", action="append", default=None, metavar="NAME=VALUE",
                   help="a user attribute (repeatable; numbers are sent as numbers): ranks a user the model never "
                        "saw by their attributes (recommend_by_features)")
    _add_client_args(p)

    p = sub.add_parser("similar", help="ask the server for the items most like one item")
    p.add_argument("--item", required=True)
    p.add_argument("--k", type=int, default=10)
    _add_client_args(p)
    return parser


COMMANDS = {
    "sample": pipeline_commands.cmd_sample,
    "import-movielens": pipeline_commands.cmd_import_movielens,
    "run": pipeline_commands.cmd_run,
    "compile": pipeline_commands.cmd_compile,
    "benchmark": pipeline_commands.cmd_benchmark,
    "runs": pipeline_commands.cmd_runs,
    "schema": schema_commands.cmd_schema,
    "serve": serving_commands.cmd_serve,
    "promote": serving_commands.cmd_promote,
    "rollback": serving_commands.cmd_rollback,
    "models": serving_commands.cmd_models,
    "predict": client_commands.cmd_predict,
    "recommend": client_commands.cmd_recommend,
    "similar": client_commands.cmd_similar,
}


def _add_fit_args(p) -> None:
    """How a model is fitted, shared by `run` and `compile`: the implicit term, the refit, the Tuner."""
    p.add_argument("--rating-history", choices=RATING_HISTORY_CHOICES, default=TrainingConfig.rating_history,
                   help="mf, hybrid: SVD++'s implicit term (the user is also the items they chose to rate); off is "
                        "the seeds' model exactly; auto (default) keeps the form with the lower validation RMSE")
    p.add_argument("--tune", action=argparse.BooleanOptionalAction, default=None,
                   help="tune a rating model's embedding size, L2, learning rate and (mf, hybrid) SVD++'s implicit "
                        "term on the validation split first (TFX Tuner; the Trainer uses the best values). By "
                        f"default a rating model gets a search of at most {TrainingConfig.tuner_trials} trials "
                        f"started within {TrainingConfig.tuner_budget_s:.0f} s; --tune lifts the time budget, "
                        "--no-tune skips the search. A ranking model searches its own values on validation "
                        "(EASE's lambda, iALS's alpha and regularisation); over a warm start it keeps the latest "
                        "blessed model's unless --tune")
    p.add_argument("--refit", action=argparse.BooleanOptionalAction, default=True,
                   help="once validation has chosen epochs and settings (and EASE's or iALS's lambda), refit on "
                        "train + validation before export (default); --no-refit exports the model fitted on train")


def _add_span_args(p, compile_time: bool = False) -> None:
    when = ("; on Kubeflow, `latest` is the newest span when each run starts (ExampleGen's driver), so a recurring "
            "run trains each day's span" if compile_time else "")
    p.add_argument("--span", metavar="latest|N", default=None,
                   help="the data root holds dated spans (span-N/interactions.*, optional per-span items.*/users.*, "
                        "a _SUCCESS marker written last): train on the newest one or on span N; a span without its "
                        "marker, empty, or the same as another span is a one-line refusal" + when)
    p.add_argument("--cold", action="store_true",
                   help="train from scratch, searching every hyperparameter again (default: start from the latest "
                        "blessed model: EASE and iALS keep its tuned values unless --tune, iALS its item factors, the "
                        "embedding models its weights, row by row by id)")
    p.add_argument("--window", type=int, default=1, metavar="W",
                   help="with --span: train on the last W spans ending at it (the earlier ones as accepted by earlier "
                        "runs' data gates; ML Metadata holds them); the gates judge the newest span alone (default 1)"
                        + ("; local runner only" if compile_time else ""))


def _add_ann_arg(p) -> None:
    from components import ann

    p.add_argument("--ann", choices=ann.CHOICES, default=TrainingConfig.ann,
                   help="top-k for recommend: none (brute force over the catalogue, exact; default) or scann (an "
                        "approximate ScaNN index in the SavedModel, for ials/two_tower on big catalogues; needs "
                        "ScaNN's ops where it is served: stock TF Serving lacks them)")


def _quiet_libraries() -> None:
    """The TF/Beam/Google client stack warns about deprecations the user cannot act on."""
    import logging
    import warnings

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow's first import
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # gRPC core's own stderr lines (a port it cannot bind)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.verbose:
        _quiet_libraries()
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # one line for expected failures; unexpected ones keep their traceback
        if not _is_expected(e):
            raise
        if args.verbose:  # the refusal's line below, and where it came from
            import traceback

            traceback.print_exc()
        # Beam appends the failing step's name on later lines; the first line is the cause.
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"recsys {args.command}: error: {message}", file=sys.stderr)
        return EXIT_ERROR


def _is_expected(error: Exception) -> bool:
    """Failures a user can fix from the message alone; anything else keeps its traceback."""
    expected = [CliError, FileNotFoundError]
    for module, name in (("components.data_gate", "DataValidationError"), ("components.example_gen", "InputError"),
                         ("serving.client", "ServingError")):
        expected.append(getattr(importlib.import_module(module), name))
    return isinstance(error, tuple(expected))

if __name__ == "__main__":
    sys.exit(main())
