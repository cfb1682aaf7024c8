"""The `recsys` command: parse arguments, call one function, print the outcome in a line or two.

Heavy imports (TensorFlow, TFX) happen inside each sub-command, so `recsys --help` is instant.
Every expected failure is one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import os

# TFX 1.16 needs Keras 2; this must be set before TensorFlow is first imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from typing import List, Optional  # noqa: E402

from components import features as F  # noqa: E402
from components.training_config import TrainingConfig  # noqa: E402
from pipeline import config as C  # noqa: E402
from serving.options import DEFAULT_METRICS_PATH, ServerOptions  # noqa: E402

EXIT_ERROR = 1
EXIT_NOT_BLESSED = 3
DEFAULT_TARGET = "localhost:8500"


class CliError(Exception):
    """An expected failure: printed as one line, exit status 1."""


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


def _add_split_arg(p: argparse.ArgumentParser, what: str = "", note: str = "") -> None:
    p.add_argument("--split", choices=C.SPLIT_CHOICES, default=C.PipelineConfig.split,
                   help=f"{what}train/validation/eval split: auto (default: user-time when the interactions have a "
                        f"timestamp, else hash{note}), hash (8:1:1 by a hash of user, item and time), time (newest "
                        f"10%% overall to eval, the next 10%% to validation), user-time (the same within each user's "
                        f"history), leave-last-one-out (each user's newest to eval, the one before to validation)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recsys", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="keep TensorFlow's and the libraries' warnings (hidden by default)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sample", help="generate a deterministic synthetic sample dataset")
    p.add_argument("--kind", choices=["movies", "shop"], default="movies",
                   help="movies: explicit ratings, genres, year (the default); shop: implicit feedback, category, "
                        "brand, price, free-text description, users.csv")
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
    p.add_argument("--tune", action="store_true",
                   help="tune a rating model's embedding size, L2 and learning rate on the validation split first "
                        f"(TFX Tuner, {TrainingConfig.tuner_trials} trials; the Trainer uses the best values)")
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
    p.add_argument("--gate-rating-models-on-ranking", action="store_true",
                   help="rating models must pass the ranking gate too (default: their top-k is reported only)")
    p.add_argument("--allow-drift", action="store_true",
                   help="report drift against the previous run's statistics instead of stopping the run")
    p.add_argument("--beam-arg", action="append", default=None, metavar="ARG",
                   help="extra Beam pipeline argument, repeatable (e.g. --beam-arg=--direct_num_workers=2)")
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
    p.add_argument("--epochs", type=int, default=TrainingConfig.epochs)

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
    p.add_argument("--beam-arg", action="append", default=None, metavar="ARG")

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
                   help="open REST connections; more are closed at once (default %(default)s)")
    p.add_argument("--rest-timeout", type=float, default=ServerOptions.rest_timeout,
                   help="seconds a REST client may take to send headers or the next body bytes, or stay idle "
                        "(default %(default)s)")

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


def _check_models(names: List[str]) -> None:
    from components import models

    try:
        for name in names:
            models.is_ranking(name)  # raises on an unknown name; `auto` is valid
    except ValueError as e:
        raise CliError(str(e)) from None


def _drop_stale_contract(out: str) -> None:
    """A sample of another shape written over an earlier one: its reviewed contract and schema no longer describe
    the files, so they go (the next run infers them again); a sample of the same shape keeps them."""
    from components import contract as contract_lib
    from components.example_gen import InputError, check_files

    path = contract_lib.contract_path(out)
    if not os.path.exists(path):
        return
    try:
        with open(path) as f:
            check_files(out, contract_lib.DataContract.from_json(f.read()))
    except (InputError, contract_lib.ContractError, ValueError):
        for stale in (path, os.path.join(out, C.SCHEMA_FILE)):
            if os.path.exists(stale):
                os.remove(stale)
        print(f"removed {out}'s contract.json and {C.SCHEMA_FILE}: they described files of another shape")


def _print_heldout(out: str, counts: dict) -> None:
    from data import heldout

    print(f"held out under {os.path.join(out, heldout.HELDOUT_DIR)}: the next item of {counts['next']} users, "
          f"{counts['sessions']} anonymous sessions of new users and their next items (for evaluation; the pipeline "
          f"never reads them)")


def cmd_sample(args) -> int:
    sizes = {key: value for key, value in (("num_users", args.num_users), ("num_items", args.num_items))
             if value is not None}
    if args.kind == "shop":
        from data import shop

        if args.num_ratings is not None:
            sizes["num_interactions"] = args.num_ratings
        counts = shop.generate(args.out, shop.ShopSpec(seed=args.seed, **sizes))
        print(f"wrote {counts['interactions']} interactions of {counts['users']} users on {counts['items']} items "
              f"(shop sample) to {args.out}")
        _print_heldout(args.out, counts)
        _drop_stale_contract(args.out)
        return 0
    from data import synthetic

    if args.num_ratings is not None:
        sizes["num_ratings"] = args.num_ratings
    counts = synthetic.generate(args.out, synthetic.SampleSpec(seed=args.seed, taste_drift=args.taste_drift, **sizes))
    print(f"wrote {counts['interactions']} ratings of {counts['users']} users on {counts['items']} items to {args.out}")
    _print_heldout(args.out, counts)
    _drop_stale_contract(args.out)
    return 0


def cmd_import_movielens(args) -> int:
    from data import movielens

    try:
        result = movielens.import_movielens(args.src, args.dest, split=args.split)
    except movielens.MovieLensImportError as e:
        raise CliError(str(e)) from None
    counts = ", ".join(f"{n} ratings ({part})" if part != "all" else f"{n} ratings" for part, n in result.interactions.items())
    print(f"imported {result.format}: {counts}, {result.items} items, {result.users} users into {args.dest}")
    return 0


def _with_data(args, config: "C.PipelineConfig") -> "C.PipelineConfig":
    """`config` with the data root's contract (reviewed, or inferred now and written for review) and schema."""
    from components import contract as contract_lib
    from components.example_gen import InputError, check_files

    mapping = {role: getattr(args, f"{role}_col") for role in contract_lib.ROLES if getattr(args, f"{role}_col", None)}
    try:
        config, inferred = C.with_data_contract(config, mapping, args.contract or "", args.schema or "")
        if "://" not in config.data_root:  # remote data is checked by ExampleGen where it runs
            check_files(config.data_root, config.contract)
    except (contract_lib.ContractError, InputError) as e:
        raise CliError(str(e)) from None
    if inferred:
        print(f"inferred the data contract from the files; review it (kinds, separators, `ignore`) and commit it: "
              f"{args.contract or contract_lib.contract_path(config.data_root)}")
    print(contract_lib.describe(config.contract), flush=True)
    return config


def _check_feedback(args, contract) -> None:
    from components import models

    if not contract.has_rating and not models.is_ranking(args.model):
        raise CliError(f"--model {args.model} predicts ratings, but {contract.interactions_file} has no rating column "
                       f"(implicit feedback): use {models.AUTO}, {' or '.join(models.RANKING_MODELS)}, or name the "
                       f"rating column with --rating-col")
    _check_split(args.split, contract)


def _check_split(split: str, contract) -> None:
    if split not in (C.SPLIT_AUTO, C.SPLIT_HASH) and not contract.has_timestamp:
        raise CliError(f"--split {split} orders interactions by time, but {contract.interactions_file} has no "
                       f"timestamp column (name it with --timestamp-col, or use --split auto or hash)")


def cmd_run(args) -> int:
    from components import models

    _check_models([args.model])
    if args.tune:
        if models.is_ranking(args.model):
            raise CliError(f"--tune tunes the rating models ({', '.join(models.RATING_MODELS)}); "
                           f"--model {args.model} is a ranking model")
    if not os.path.isdir(args.data_root):
        raise CliError(f"data root {args.data_root!r} is not a directory (run `recsys sample` for the bundled sample)")
    data_root = os.path.abspath(args.data_root)
    training = dataclasses.replace(
        TrainingConfig(), model=args.model, epochs=args.epochs, batch_size=args.batch_size,
        embedding_dim=args.embedding_dim, learning_rate=args.learning_rate,
    )
    config = _with_data(args, C.PipelineConfig(data_root=data_root, split=args.split))
    _check_feedback(args, config.contract)
    interactions_bytes = os.path.getsize(os.path.join(data_root, config.contract.interactions_file))
    beam_args = tuple(args.beam_arg) if args.beam_arg else C.default_beam_args(interactions_bytes, os.cpu_count() or 1)
    config = dataclasses.replace(
        config,
        output_dir=os.path.abspath(args.output_dir),
        model_name=args.model_name,
        allow_drift=args.allow_drift,
        min_id_frequency=args.min_id_frequency,
        training=training,
        tune=args.tune,
        evaluation=C.EvaluationConfig(rmse_upper_bound=args.rmse_threshold,
                                      max_relative_rmse_regression=args.max_rmse_regression,
                                      ranking_k=args.ranking_k, min_lift_over_popular=args.min_lift_over_popular,
                                      max_relative_recall_regression=args.max_recall_regression,
                                      gate_rating_models_on_ranking=args.gate_rating_models_on_ranking),
        mysql=(C.MySQLMetadata(host=args.mlmd_mysql_host, port=args.mlmd_mysql_port,
                               database=args.mlmd_mysql_database, user=args.mlmd_mysql_user,
                               password=os.environ.get("RECSYS_MLMD_MYSQL_PASSWORD", ""))
               if args.mlmd_mysql_host else None),
        beam_args=beam_args,
    )
    from pipeline import local_runner, run_summary

    print(f"running pipeline {config.pipeline_name!r} on {args.data_root} (model {args.model}, split "
          f"{_split_text(args.split, config)}, Beam "
          f"{' '.join(a.lstrip('-') for a in beam_args)}); outputs in {args.output_dir}", flush=True)
    local_runner.run(config, quiet=not args.verbose)
    summary = run_summary.latest(config)
    print(summary.describe())
    return 0 if summary.blessed else EXIT_NOT_BLESSED


def _split_text(requested: str, config: "C.PipelineConfig") -> str:
    if requested != C.SPLIT_AUTO:
        return config.split
    why = ("BigQuery input" if config.bigquery_query else
           "the interactions have timestamps" if config.contract.has_timestamp else "no timestamp column")
    return f"{config.split}, auto: {why}"


def cmd_benchmark(args) -> int:
    from components import contract as contract_lib
    from pipeline import quality

    names = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else quality.registered_models()
    _check_models(names)
    if not os.path.isdir(args.data_root):
        raise CliError(f"data root {args.data_root!r} is not a directory")
    if args.test_file and not os.path.isfile(args.test_file):
        raise CliError(f"test file {args.test_file!r} not found")
    try:
        contract, _ = contract_lib.load_or_infer(os.path.abspath(args.data_root))
    except contract_lib.ContractError as e:
        raise CliError(str(e)) from None
    _check_split(args.split, contract)
    resolved = C.PipelineConfig(contract=contract, split=args.split)  # auto: by the contract's timestamp
    print(f"benchmark split: {_split_text(args.split, resolved)}", flush=True)
    result = quality.run(os.path.abspath(args.data_root), os.path.abspath(args.output_dir), names,
                         test_file=args.test_file, k=args.k, split=resolved.split,
                         training=dataclasses.replace(TrainingConfig(), epochs=args.epochs))
    paths = quality.write(result, args.output_dir)
    print(quality.to_markdown(result))
    print(f"wrote {', '.join(paths)}")
    return 0


def cmd_compile(args) -> int:
    _check_models([args.model])
    if args.bigquery_query and not args.contract:
        raise CliError("--bigquery-query needs --contract (the contract cannot be inferred from a query at compile time)")
    if args.bigquery_query and args.split not in (C.SPLIT_AUTO, C.SPLIT_HASH):
        raise CliError(f"--split {args.split} needs the file ExampleGen; BigQuery input (--bigquery-query) is split by "
                       f"hash only")
    config = _with_data(args, C.PipelineConfig(data_root=args.data_root, split=args.split,
                                               bigquery_query=args.bigquery_query or ""))
    _check_feedback(args, config.contract)
    config = dataclasses.replace(
        config,
        output_dir=args.output_dir,
        model_name=args.model_name,
        training=dataclasses.replace(TrainingConfig(), model=args.model),
        train_steps=args.train_steps,
        **({"beam_args": tuple(args.beam_arg)} if args.beam_arg else {}),
    )
    from pipeline import kubeflow_runner

    path = kubeflow_runner.compile_pipeline(config, image=args.image, output_path=args.output)
    print(f"wrote Kubeflow Pipelines v2 spec to {path} (image {args.image}, split {_split_text(args.split, config)})")
    return 0


def _serving_root(args) -> str:
    return os.path.abspath(os.path.join(args.output_dir, "serving"))


def _apply_change(args, change) -> int:
    from serving import promotion

    try:
        event = change()
        if args.target:
            promotion.apply(args.target, _serving_root(args), args.model_name,
                            credentials=_credentials(args))
    except promotion.PromotionError as e:
        raise CliError(str(e)) from None
    applied = f"; applied to {args.target}" if args.target else "; not applied to a server (no --target)"
    print(f"{event.action}: {args.model_name} {event.label} {event.from_version} -> {event.to_version}"
          f"{' (forced)' if event.forced else ''}{applied}")
    return 0


def cmd_promote(args) -> int:
    from pipeline import lineage
    from serving import promotion

    blessed = args.version in lineage.pushed_versions(C.PipelineConfig(output_dir=os.path.abspath(args.output_dir)))
    return _apply_change(args, lambda: promotion.promote(
        _serving_root(args), args.model_name, args.version, args.label, blessed=blessed, force=args.force,
        actor=args.actor, reason=args.reason))


def cmd_rollback(args) -> int:
    from serving import promotion

    return _apply_change(args, lambda: promotion.rollback(
        _serving_root(args), args.model_name, args.label, actor=args.actor, reason=args.reason))


def cmd_models(args) -> int:
    import datetime

    from pipeline import lineage
    from serving import model_store, promotion

    root = _serving_root(args)
    if args.what == "history":
        for e in promotion.history(root):
            when = datetime.datetime.fromtimestamp(e.time).isoformat(timespec="seconds")
            print(f"{when}  {e.actor:<12} {e.action:<8} {e.label:<7} {e.from_version} -> {e.to_version}"
                  f"{'  FORCED' if e.forced else ''}  {e.reason}")
        return 0
    from pipeline import run_summary
    from pipeline.pipeline import RMSE

    known = {v.version: v for v in lineage.versions(C.PipelineConfig(output_dir=os.path.abspath(args.output_dir)))}
    by_version: dict = {}
    for label, version in promotion.labels(root, args.model_name).items():
        by_version.setdefault(version, []).append(label)
    for version in model_store.list_versions(os.path.join(root, args.model_name)):
        info = known.get(version)
        labels = ",".join(sorted(by_version.get(version, []))) or "-"
        if info is None:
            print(f"{version}  NOT blessed  {labels}  (no pipeline run pushed it)")
            continue
        overall = run_summary.metrics_by_slice(info.evaluation_uri).get("overall", {}) if info.evaluation_uri else {}
        training = info.training.get("training", {})
        print(f"{version}  {'blessed' if info.blessed else 'NOT blessed'}  {labels}  model={training.get('model')}  "
              f"rmse={overall.get(RMSE, float('nan')):.4f}  examples={info.examples_uri}  "
              f"transform_graph={info.transform_graph_uri}")
        print(f"    data: span {info.data_span}, {info.data_fingerprint}")
        print(f"    hyperparameters: {json.dumps(training, sort_keys=True)}")
    return 0


def cmd_runs(args) -> int:
    from pipeline import lineage, report, run_summary

    config = C.PipelineConfig(output_dir=os.path.abspath(args.output_dir))
    runs = lineage.evaluated_runs(config)
    if not runs:
        raise CliError(f"no evaluated run in {args.output_dir} (run the pipeline first)")
    run_id = args.run or runs[-1].run_id
    match = [r for r in runs if r.run_id == run_id]
    if not match:
        raise CliError(f"run {run_id!r} not found; evaluated runs: {', '.join(r.run_id for r in runs)}")
    run = match[0]
    from components.ranking_gate import read_report

    metrics = run_summary.metrics_by_slice(run.evaluation_uri) if run.evaluation_uri else {}
    ranking = read_report(run.ranking_blessing_uri) if run.ranking_blessing_uri else None
    failures = run_summary.run_failures(run.evaluation_uri, ranking)
    print(f"run {run.run_id}: model {run.model_uri}")
    print(report.as_text(metrics, failures, run.blessed, ranking))
    safe_id = "".join(c if c.isalnum() or c in "-_." else "-" for c in run.run_id)
    paths = report.write(os.path.join(os.path.abspath(args.output_dir), "reports", f"run-{safe_id}"),
                         f"Evaluation of run {run.run_id}", metrics, failures, run.blessed, ranking)
    print("report: " + ", ".join(paths))
    return 0


def serve_options(args) -> ServerOptions:
    """The CLI flags as ServerOptions; TF Serving's config files are read here, errors name the file."""
    from serving import options as O

    batching = None
    if args.batching_parameters_file:
        batching = O.read_batching_parameters_file(args.batching_parameters_file)
    elif args.enable_batching:
        batching = O.BatchingOptions()
    row_limits = dict(O.ServerOptions.row_limits)
    for entry in args.row_limit or ():
        signature, _, limit = entry.partition("=")
        if not signature or not limit.isdigit() or int(limit) < 1:
            raise CliError(f"--row-limit {entry!r}: expected SIGNATURE=N with N a positive integer")
        row_limits[signature] = int(limit)
    return O.ServerOptions(
        host=args.host, port=args.port, rest_port=args.rest_port or None, poll_interval=args.poll_interval,
        max_workers=args.max_workers, max_message_bytes=args.max_message_bytes, batching=batching,
        tls=O.read_ssl_config_file(args.ssl_config_file) if args.ssl_config_file else None,
        metrics_path=(O.read_monitoring_config_file(args.monitoring_config_file) if args.monitoring_config_file
                      else O.DEFAULT_METRICS_PATH),
        drain_seconds=args.drain_seconds, admin_port=args.admin_port,
        model_roots=tuple(os.path.abspath(r) if "://" not in r else r for r in args.model_root or ()),
        max_rows=args.max_rows, row_limits=tuple(sorted(row_limits.items())),
        max_request_bytes=args.max_request_bytes, request_memory_mb=args.request_memory_mb,
        rest_max_connections=args.rest_max_connections, rest_timeout=args.rest_timeout)


def cmd_serve(args) -> int:
    from serving import server

    try:
        server.serve(model_name=args.model_name, base_path=args.model_dir, options=serve_options(args),
                     model_config_file=args.model_config_file)
    except (ValueError, OSError) as e:  # an unreadable config file, a port in use
        raise CliError(str(e)) from None
    return 0


def _credentials(args):
    from serving.client import channel_credentials

    return channel_credentials(args.tls_ca, args.tls_cert, args.tls_key)


def _client(args):
    from serving.client import RecsysClient

    client = RecsysClient(target=args.target, model_name=args.model_name, timeout=args.timeout, label=args.label,
                          credentials=_credentials(args))
    if args.wait > 0:
        client.wait_until_ready(args.wait)
    return client


def cmd_predict(args) -> int:
    kind, (value,) = _client(args).predict_output([(args.user, args.item)])
    what = "predicted rating" if kind == F.RATING_OUTPUT else "ranking score (not a rating: a ranking model is served)"
    print(f"{what} of user {args.user} for item {args.item}: {value:.3f}")
    return 0


def _ids(text: str) -> List[str]:
    return [i.strip() for i in text.split(",") if i.strip()]


def _print_ranked(heading: str, ranked) -> None:
    print(heading)
    for rank, rec in enumerate(ranked, 1):
        print(f"{rank:>3}. {rec.item_id:<10} {rec.score:6.3f}  {rec.title}")


def _user_features(pairs: List[str]) -> dict:
    features = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise CliError(f"--feature {pair!r}: expected NAME=VALUE")
        try:
            features[name] = float(value)
        except ValueError:
            features[name] = value
    return features


def cmd_recommend(args) -> int:
    if args.history is not None:
        if args.feature or args.include_rated:
            raise CliError("--history cannot be combined with --feature or --include-rated")
        history = _ids(args.history)
        answer = _client(args).recommend_by_history(history, k=args.k, user_id=args.user or "",
                                                    use_stored_history=bool(args.user),
                                                    exclude=_ids(args.exclude), allow=_ids(args.allow))
        who = f"user {args.user}" if args.user else "an anonymous session"
        _print_ranked(f"top {len(answer.items)} items for {who}, scored from {answer.history_length} known "
                      f"item{'s' if answer.history_length != 1 else ''}:", answer.items)
        if answer.unknown_items:
            print(f"{answer.unknown_items} unknown item id{'s' if answer.unknown_items != 1 else ''} ignored")
        if answer.popularity_fallback:
            print("no known history item: these are the most popular items")
        return 0
    if not args.user:
        raise CliError("recommend needs --user (or --history for an anonymous session)")
    if args.feature:
        if args.exclude or args.allow or args.include_rated:
            raise CliError("--feature cannot be combined with --exclude, --allow or --include-rated")
        recommendations = _client(args).recommend_by_features(args.user, _user_features(args.feature), k=args.k)
    else:
        recommendations = _client(args).recommend(args.user, k=args.k, exclude_rated=not args.include_rated,
                                                  exclude=_ids(args.exclude), allow=_ids(args.allow))
    _print_ranked(f"top {len(recommendations)} items for user {args.user}:", recommendations)
    return 0


def cmd_similar(args) -> int:
    similar = _client(args).similar_items(args.item, k=args.k)
    _print_ranked(f"{len(similar)} items like {args.item}:", similar)
    return 0


COMMANDS = {
    "sample": cmd_sample,
    "import-movielens": cmd_import_movielens,
    "run": cmd_run,
    "compile": cmd_compile,
    "benchmark": cmd_benchmark,
    "serve": cmd_serve,
    "promote": cmd_promote,
    "rollback": cmd_rollback,
    "models": cmd_models,
    "runs": cmd_runs,
    "predict": cmd_predict,
    "recommend": cmd_recommend,
    "similar": cmd_similar,
}


def _quiet_libraries() -> None:
    """The TF/Beam/Google client stack warns about deprecations the user cannot act on."""
    import logging
    import warnings

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow's first import
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
