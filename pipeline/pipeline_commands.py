"""`recsys` commands that make data and run the pipeline: sample, import-movielens, run, benchmark, compile, runs."""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Tuple

from components import spans
from components.training_config import TrainingConfig
from pipeline import config as C
from pipeline.cli_common import EXIT_NOT_BLESSED, CliError, check_ann, check_models


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
    if args.kind == "timeline":
        return _timeline_sample(args)
    if args.days is not None:
        raise CliError(f"--days is for --kind timeline (a {args.kind} sample is one file of interactions)")
    from data import synthetic

    if args.num_ratings is not None:
        sizes["num_ratings"] = args.num_ratings
    counts = synthetic.generate(args.out, synthetic.SampleSpec(seed=args.seed, taste_drift=args.taste_drift, **sizes))
    print(f"wrote {counts['interactions']} ratings of {counts['users']} users on {counts['items']} items to {args.out}")
    _print_heldout(args.out, counts)
    _drop_stale_contract(args.out)
    return 0


def _timeline_sample(args) -> int:
    from components import features as F
    from data import timeline

    if args.num_ratings is not None:
        raise CliError("--num-ratings does not apply to --kind timeline: a day's interactions follow from its active "
                       "users (--num-users: users on day 1)")
    spec = timeline.TimelineSpec(seed=args.seed)
    flags = {"days": ("--days", args.days), "initial_users": ("--num-users", args.num_users),
             "initial_items": ("--num-items", args.num_items)}
    for flag, value in flags.values():
        if value is not None and value < 1:
            raise CliError(f"{flag} must be at least 1, not {value}")
    spec = dataclasses.replace(spec, **{field: value for field, (_, value) in flags.items() if value is not None})
    counts = timeline.generate(args.out, spec)
    print(f"wrote {counts['interactions']} ratings in {counts['days']} daily spans "
          f"({timeline.SPAN_DIR.replace('{SPAN}', '1')} .. {timeline.SPAN_DIR.replace('{SPAN}', str(counts['days']))}, "
          f"each with its day's {F.INTERACTIONS_FILE}, the catalogue so far in {F.ITEMS_FILE} and a "
          f"{timeline.SUCCESS_MARKER} marker) of {counts['users']} users on {counts['items']} items to {args.out}")
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
    from pipeline import schema_commands

    mapping = {role: getattr(args, f"{role}_col") for role in contract_lib.ROLES if getattr(args, f"{role}_col", None)}
    contract_file, schema_file = schema_commands.reviewed_files(args)  # --schema-dir, or --contract and --schema
    shown = contract_file or contract_lib.contract_path(config.data_root)
    try:
        config, inferred = C.with_data_contract(config, mapping, contract_file, schema_file)
        if "://" not in config.data_root:  # remote data is checked by ExampleGen where it runs
            # The reviewed contract against the files (columns, kinds) before any component runs; then duplicates.
            contract_lib.check_data(config.files_root, config.contract, shown)
            check_files(config.files_root, config.contract)
    except contract_lib.ContractMismatch as e:
        advice = schema_commands.mismatch_advice(args, args.data_root, shown,
                                                 config.schema_path or config.schema_export_path)
        raise CliError(f"{e}: {advice}") from None
    except (contract_lib.ContractError, InputError) as e:
        raise CliError(str(e)) from None
    if inferred:
        print(f"inferred the data contract from the files; review it (kinds, separators, `ignore`) and commit it: "
              f"{shown}")
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
    if split not in (C.SPLIT_AUTO, C.SPLIT_HASH, C.SPLIT_USER_HASH) and not contract.has_timestamp:
        raise CliError(f"--split {split} orders interactions by time, but {contract.interactions_file} has no "
                       f"timestamp column (name it with --timestamp-col, or use --split auto or hash)")


def _no_span_window(split: str, command: str) -> None:
    if split == C.SPLIT_USER_HASH:
        raise CliError(f"--split {split} scores held-out users from the earlier spans of a window, which only "
                       f"`recsys run --span N --window W` trains on; {command} takes another split")


def _beam(args, direct_defaults, output_dir: str = "", data_root: str = ""):
    """(runner, options) from --beam-runner and --beam-arg, checked: a missing option is one line naming its flag."""
    try:
        return C.beam_settings(args.beam_runner, args.beam_arg or (), direct_defaults, output_dir, data_root)
    except C.BeamOptionsError as e:
        raise CliError(str(e)) from None


def fit_choices(args, training: TrainingConfig) -> TrainingConfig:
    """--rating-history, --refit and --tune into the config: a rating model's full search (every trial, no time
    budget); a ranking model's validation search again (EASE's lambda, iALS's alpha and regularisation) instead of
    the latest blessed model's values."""
    from components import models

    training = dataclasses.replace(training, rating_history=args.rating_history, rating_refit=args.refit,
                                   ease_refit=args.refit, ials_refit=args.refit)
    if args.tune and models.is_ranking(training.model):
        return dataclasses.replace(training, keep_tuned=False)
    return dataclasses.replace(training, tuner_budget_s=0.0) if args.tune else training


def _span(args, data_root: str) -> int:
    """The span this run reads (0: the data root holds the files itself), chosen and checked complete."""
    if args.span is None:
        if spans.is_span_root(data_root) and not any(
                name.startswith("interactions.") for name in os.listdir(data_root)):
            raise CliError(f"{data_root} holds dated spans ({spans.SPAN_DIR}/): pass --span {spans.LATEST} or "
                           f"--span N")
        return 0
    try:
        return spans.choose(data_root, args.span)
    except spans.SpanError as e:
        raise CliError(str(e)) from None


def _blessed_span_check(config: "C.PipelineConfig", span: int) -> str:
    """What ML Metadata says of `span` in this output dir: '' (train it), a line saying it was already trained and
    blessed (nothing to do), or a CliError for a span older than one already blessed (nothing trained)."""
    if config.mysql is None and not os.path.exists(config.metadata_path):
        return ""
    from pipeline import lineage

    blessed = [run for run in lineage.evaluated_runs(config) if run.blessed and run.data_span]
    same = [run for run in blessed if run.data_span == span]
    if same:
        return (f"span {span} was already trained and blessed (run {same[-1].run_id}): nothing to do "
                f"(--force trains it again)")
    newest = max((run.data_span for run in blessed), default=0)
    if newest > span:
        raise CliError(f"span {span} is older than span {newest}, already trained and blessed: nothing trained, the "
                       f"served model stays (--force trains on it anyway)")
    return ""


def cmd_run(args) -> int:
    from components import models
    from components.data_gate import DataValidationError

    try:
        runner = C.beam_runner(args.beam_runner, args.beam_arg or ())
    except C.BeamOptionsError as e:
        raise CliError(str(e)) from None
    if runner != C.DIRECT:  # a local data root and output dir: nothing a cluster's workers can reach
        raise CliError(f"recsys run runs Beam on this machine ({C.DIRECT}); {runner} needs data and outputs its "
                       f"workers reach: compile for the cluster with `recsys compile --beam-runner {runner}`")
    check_models([args.model])
    check_ann(args.model, args.ann)
    if not os.path.isdir(args.data_root):
        raise CliError(f"data root {args.data_root!r} is not a directory (run `recsys sample` for the bundled sample)")
    data_root = os.path.abspath(args.data_root)
    training = dataclasses.replace(
        TrainingConfig(), model=args.model, epochs=args.epochs, batch_size=args.batch_size,
        embedding_dim=args.embedding_dim, learning_rate=args.learning_rate, ann=args.ann,
    )
    training = fit_choices(args, training)
    span = _span(args, data_root)
    if args.window < 1 or (args.window > 1 and not span):
        raise CliError(f"--window {args.window}: give a number of spans of at least 1, with --span")
    if not 0.5 <= args.regression_confidence < 1.0:
        raise CliError(f"--regression-confidence {args.regression_confidence:g}: give a confidence in [0.5, 1)")
    earlier = spans.complete_before(data_root, span, args.window) if span else 0
    if args.split == C.SPLIT_USER_HASH and not earlier:
        raise CliError(f"--split {args.split} scores held-out users from their earlier spans: give --span with a "
                       f"--window that reaches back to a complete span")
    config = _with_data(args, C.PipelineConfig(data_root=data_root, split=args.split, span=span, window=args.window,
                                               earlier_spans=earlier))
    if span:
        try:
            spans.check_content(data_root, span, config.contract.interactions_file)
        except spans.SpanError as e:
            raise CliError(str(e)) from None
        print(f"span {span}: {spans.span_dir(data_root, span)}" +
              (f"; training on the last {args.window} spans accepted so far, ending at it" if args.window > 1 else ""),
              flush=True)
    _check_feedback(args, config.contract)
    if args.serving_log and "://" not in args.serving_log and not os.path.isdir(args.serving_log):
        raise CliError(f"--serving-log {args.serving_log}: no such directory (recsys serve --log-requests DIR "
                       f"writes it)")
    interactions_bytes = os.path.getsize(os.path.join(config.files_root, config.contract.interactions_file))
    _, beam_args = _beam(args, C.default_beam_args(interactions_bytes, os.cpu_count() or 1))
    config = dataclasses.replace(
        config,
        output_dir=os.path.abspath(args.output_dir),
        model_name=args.model_name,
        allow_drift=args.allow_drift,
        serving_log=os.path.abspath(args.serving_log) if args.serving_log and "://" not in args.serving_log
        else args.serving_log,
        allow_skew=args.allow_skew,
        min_id_frequency=args.min_id_frequency,
        warm_start=not args.cold,
        training=training,
        tune=args.tune,
        evaluation=C.EvaluationConfig(rmse_upper_bound=args.rmse_threshold,
                                      max_relative_rmse_regression=args.max_rmse_regression,
                                      ranking_k=args.ranking_k, min_lift_over_popular=args.min_lift_over_popular,
                                      max_relative_recall_regression=args.max_recall_regression,
                                      regression_confidence=args.regression_confidence,
                                      gate_rating_models_on_ranking=args.gate_rating_models_on_ranking),
        mysql=(C.MySQLMetadata(host=args.mlmd_mysql_host, port=args.mlmd_mysql_port,
                               database=args.mlmd_mysql_database, user=args.mlmd_mysql_user,
                               password=os.environ.get("RECSYS_MLMD_MYSQL_PASSWORD", ""))
               if args.mlmd_mysql_host else None),
        beam_args=beam_args,
    )
    from pipeline import local_runner, run_summary

    if span and not args.force:
        done = _blessed_span_check(config, span)
        if done:
            print(done, flush=True)
            return 0
    print(f"running pipeline {config.pipeline_name!r} on {args.data_root} (model {args.model}, split "
          f"{_split_text(args.split, config)}, Beam "
          f"{' '.join(a.lstrip('-') for a in beam_args)}); outputs in {args.output_dir}", flush=True)
    try:
        local_runner.run(config, quiet=not args.verbose)
    except DataValidationError as e:
        raise CliError(f"{e}. {_data_gate_advice(str(e), config)}") from None
    summary = run_summary.latest(config)
    print(summary.describe(), flush=True)
    if summary.blessed:
        return 0
    print(f"recsys run: {summary.refusal(args.output_dir)}", file=sys.stderr)
    return EXIT_NOT_BLESSED


def _data_gate_advice(message: str, config: "C.PipelineConfig") -> str:
    """What to do about a stopped run: fix the delivery, or accept a legitimate change where it is decided."""
    from components.data_gate import DRIFT_PREFIX
    from components.serving_skew import SKEW_PREFIX

    schema = config.schema_path or config.schema_export_path
    advice = (f"Fix the data, or if the change is intended, edit {schema} (the reviewed schema) and commit it")
    if DRIFT_PREFIX in message:
        advice += ("; to accept drift as the new baseline, run again with --allow-drift or raise the feature's "
                   "drift_comparator threshold there")
    if SKEW_PREFIX in message:
        advice += ("; if serving's traffic legitimately differs from the training data, run again with --allow-skew "
                   "or raise the feature's skew_comparator threshold there")
    return advice


def _split_text(requested: str, config: "C.PipelineConfig") -> str:
    if requested != C.SPLIT_AUTO:
        return config.split
    why = ("BigQuery input" if config.bigquery_query else
           f"held-out users judged from {config.earlier_spans} earlier span(s) of the window"
           if config.split == C.SPLIT_USER_HASH else
           "the interactions have timestamps" if config.contract.has_timestamp else "no timestamp column")
    return f"{config.split}, auto: {why}"


def _replay(args) -> int:
    from pipeline import replay_benchmark

    if args.days < 2 or args.window < 1 or args.scale <= 0:
        raise CliError(f"--replay needs --days of at least 2, a --window of at least 1 and a positive --scale (got "
                       f"{args.days}, {args.window}, {args.scale:g})")
    output_dir = os.path.abspath(args.output_dir)
    result = replay_benchmark.run(os.path.join(output_dir, "replay"), args.days, args.window, args.scale)
    paths = replay_benchmark.write(result, output_dir)
    print(replay_benchmark.report(result))
    print(f"wrote {', '.join(paths)}")
    return 0


def cmd_benchmark(args) -> int:
    from components import contract as contract_lib
    from pipeline import quality

    if args.replay:
        return _replay(args)

    names = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else quality.registered_models()
    check_models(names)
    if not os.path.isdir(args.data_root):
        raise CliError(f"data root {args.data_root!r} is not a directory")
    if args.test_file and not os.path.isfile(args.test_file):
        raise CliError(f"test file {args.test_file!r} not found")
    try:
        contract, _ = contract_lib.load_or_infer(os.path.abspath(args.data_root))
    except contract_lib.ContractError as e:
        raise CliError(str(e)) from None
    _check_split(args.split, contract)
    _no_span_window(args.split, "recsys benchmark")
    resolved = C.PipelineConfig(contract=contract, split=args.split)  # auto: by the contract's timestamp
    print(f"benchmark split: {_split_text(args.split, resolved)}", flush=True)
    result = quality.run(os.path.abspath(args.data_root), os.path.abspath(args.output_dir), names,
                         test_file=args.test_file, k=args.k, split=resolved.split,
                         training=dataclasses.replace(TrainingConfig(), epochs=args.epochs,
                                                      tuner_epochs=min(args.epochs, TrainingConfig.tuner_epochs)),
                         rating_variants=args.rating_variants)
    paths = quality.write(result, args.output_dir)
    print(quality.to_markdown(result))
    print(f"wrote {', '.join(paths)}")
    return 0


def _compile_span(args) -> Tuple[int, bool]:
    """(span, newest at run time) for `recsys compile --span`: a span number is read as given; `latest` is whichever
    span is newest when each run starts (ExampleGen's driver), checked here against the newest one present (a
    local data root) or not at all (remote: ExampleGen refuses an incomplete span where it runs)."""
    if args.window != 1:
        raise CliError(f"--window {args.window}: a window of spans runs on the local runner only (Kubeflow's V2 compiler "
                       f"accepts TFX's LatestArtifact and LatestBlessedModel resolvers alone); compile --span latest "
                       f"for a daily run on each new span")
    if args.span is None:
        return (0 if args.bigquery_query or "://" in args.data_root else _span(args, args.data_root)), False
    if args.bigquery_query:
        raise CliError("--span reads dated span directories under --data-root; BigQuery input selects its rows in the "
                       "query")
    if "://" in args.data_root:
        if args.span == spans.LATEST:
            return 0, True
        try:
            return int(args.span), False
        except ValueError:
            raise CliError(f"--span {args.span!r}: give {spans.LATEST} or a span number") from None
    return _span(args, args.data_root), args.span == spans.LATEST


def cmd_compile(args) -> int:
    check_models([args.model])
    check_ann(args.model, args.ann, installed_here=False)  # the image has it (requirements.lock)
    # Before the contract is read: a runner that cannot start is known from the flags alone.
    runner, beam_args = _beam(args, C.PipelineConfig.beam_args, args.output_dir,
                              "" if args.bigquery_query else args.data_root)
    if args.bigquery_query and not args.contract:
        raise CliError("--bigquery-query needs --contract (the contract cannot be inferred from a query at compile time)")
    if args.bigquery_query and args.split not in (C.SPLIT_AUTO, C.SPLIT_HASH):
        raise CliError(f"--split {args.split} needs the file ExampleGen; BigQuery input (--bigquery-query) is split by "
                       f"hash only")
    _no_span_window(args.split, "recsys compile")
    span, at_run_time = _compile_span(args)
    config = _with_data(args, C.PipelineConfig(data_root=args.data_root, split=args.split,
                                               bigquery_query=args.bigquery_query or "", span=span,
                                               latest_span_at_run_time=at_run_time))
    _check_feedback(args, config.contract)
    config = dataclasses.replace(
        config,
        output_dir=args.output_dir,
        model_name=args.model_name,
        training=fit_choices(args, dataclasses.replace(TrainingConfig(), model=args.model, ann=args.ann)),
        tune=args.tune,
        warm_start=not args.cold,
        train_steps=args.train_steps,
        beam_runner=runner,
        beam_args=beam_args,
    )
    from pipeline import kubeflow_runner

    path = kubeflow_runner.compile_pipeline(config, image=args.image, output_path=args.output)
    reads = ("; each run reads the newest span" if at_run_time else f"; span {span}" if span else "")
    print(f"wrote Kubeflow Pipelines v2 spec to {path} (image {args.image}, split {_split_text(args.split, config)}, "
          f"Beam {' '.join(a.lstrip('-') for a in config.beam_pipeline_args)}{reads})")
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
    data = ""
    if run.data_span is not None:
        trained = run.training_spans
        data = f" (data: span {run.data_span}" + (
            f"; trained on spans {', '.join(map(str, trained))}" if len(trained) > 1 else "") + ")"
    print(f"run {run.run_id}: model {run.model_uri}{data}")
    print(report.as_text(metrics, failures, run.blessed, ranking))
    safe_id = "".join(c if c.isalnum() or c in "-_." else "-" for c in run.run_id)
    paths = report.write(os.path.join(os.path.abspath(args.output_dir), "reports", f"run-{safe_id}"),
                         f"Evaluation of run {run.run_id}{data}", metrics, failures, run.blessed, ranking)
    print("report: " + ", ".join(paths))
    return 0

