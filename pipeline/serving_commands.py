"""`recsys` commands on served versions: serve, promote, rollback, models."""

from __future__ import annotations

import json
import os

from pipeline import config as C
from pipeline.cli_common import CliError, credentials
from serving.options import ServerOptions


def _serving_root(args) -> str:
    return os.path.abspath(os.path.join(args.output_dir, "serving"))


def _apply_change(args, change) -> int:
    from serving import promotion

    try:
        event = change()
        if args.target:
            promotion.apply(args.target, _serving_root(args), args.model_name,
                            credentials=credentials(args))
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
    for flag, value in (("--rest-max-connections", args.rest_max_connections),
                        ("--rest-max-connections-per-client", args.rest_max_connections_per_client)):
        if value < 1:
            raise CliError(f"{flag} {value}: must be at least 1 (a full cap sheds idle connections, not new ones)")
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
        rest_max_connections=args.rest_max_connections,
        rest_max_connections_per_client=args.rest_max_connections_per_client, rest_timeout=args.rest_timeout,
        fresh_history=args.fresh_history, fresh_history_refresh_s=args.fresh_history_refresh_seconds,
        log_requests=args.log_requests, log_sample_rate=args.log_sample_rate)


def cmd_serve(args) -> int:
    from serving import server

    try:
        server.serve(model_name=args.model_name, base_path=args.model_dir, options=serve_options(args),
                     model_config_file=args.model_config_file)
    except (ValueError, OSError) as e:  # an unreadable config file, a port in use
        raise CliError(str(e)) from None
    return 0

