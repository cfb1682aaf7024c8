"""The replay benchmark (issue 19, part 7): continuous training over a timeline of daily spans, day by day.

`recsys benchmark --replay [--days 14] [--window 7] [--scale 1] [--output-dir DIR]` (`make bench-replay`).
`recsys sample --kind timeline` data (data/timeline.py: new items and users every day, old hits ageing out, taste
drifting). Each day d = 1 .. days-1, every variant runs `recsys run --span d --window W` into its own output dir:
`warm` starts from the latest blessed model (the default), `cold` with `--cold`. The model the run leaves served
(the new version when blessed, else yesterday's) then answers `recommend` for everyone active on day d+1, and its
lists are scored against what they picked that day: Recall@10 and HitRate@10, beside
- the model frozen after day 1 (the first variant's first served model, never retrained),
- most popular over the window (each user's window items left out), on the same users and day;
and the share of the lists' slots holding items released on day d (day-old items) with the share of those slots
that were picked (their hit rate), for the model and for most popular.
A `recsys serve` of the first variant's serving directory runs throughout in its own process, under a client
process asking for recommendations at a steady pace, so every daily push is swapped in under traffic: its failed
requests are counted. Per day: the
run's and the Trainer's wall time, the ML Metadata file's size. Results: DIR/replay.json and DIR/replay.md.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import itertools
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from typing import Dict, List, Optional, Sequence, Set

import numpy as np
import tensorflow as tf

from components import availability
from components import features as F
from components import ranking_eval
from components.atomic_io import atomic_write
from components.guards import MAX_RECOMMEND_USERS
from data import timeline
from pipeline.config import REPO_ROOT, PipelineConfig

K = 10
FIRST_COMPARED_DAY = 8  # the figure: next days 8-14, once a 7-day window is full


def _read(path: str) -> List[Dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@dataclasses.dataclass
class Day:
    interactions: Dict[str, Set[str]]  # user -> items picked that day
    items: Set[str]  # the catalogue listed that day (active or not)
    active: Set[str] = dataclasses.field(default_factory=set)  # of those, the items still offered


def load_days(root: str, days: int) -> Dict[int, Day]:
    out = {}
    for day in range(1, days + 1):
        directory = timeline.span_dir(root, day)
        picks: Dict[str, Set[str]] = defaultdict(set)
        for row in _read(os.path.join(directory, F.INTERACTIONS_FILE)):
            picks[row[F.USER_ID]].add(row[F.ITEM_ID])
        listed = _read(os.path.join(directory, F.ITEMS_FILE))
        out[day] = Day(dict(picks), {row[F.ITEM_ID] for row in listed},
                       {row[F.ITEM_ID] for row in listed
                        if availability.is_active(row.get(timeline.ACTIVE, ""), F.ITEMS_FILE)})
    return out


def _served(serving_dir: str):
    """The newest pushed version, loaded (None before the first push)."""
    versions = sorted(int(v) for v in os.listdir(serving_dir) if v.isdigit()) if os.path.isdir(serving_dir) else []
    if not versions:
        return None, None
    return versions[-1], tf.saved_model.load(os.path.join(serving_dir, str(versions[-1])))


def model_lists(model, users: Sequence[str]) -> Dict[str, List[str]]:
    recommend = model.signatures[F.RECOMMEND]
    lists = {}
    for start in range(0, len(users), MAX_RECOMMEND_USERS):
        batch = list(users[start:start + MAX_RECOMMEND_USERS])
        out = recommend(**{F.USER_ID: tf.constant(batch), F.K_INPUT: tf.constant(K),
                           F.EXCLUDE_RATED_INPUT: tf.constant(True)})[F.ITEMS_OUTPUT].numpy()
        lists.update({user: [i.decode() for i in row if i] for user, row in zip(batch, out)})
    return lists


def popular_lists(window: Sequence[Day], users: Sequence[str], active: Set[str]) -> Dict[str, List[str]]:
    counts = Counter(item for day in window for items in day.interactions.values() for item in items)
    ranked = [item for item, _ in counts.most_common() if item in active]
    seen: Dict[str, Set[str]] = defaultdict(set)
    for day in window:
        for user, items in day.interactions.items():
            seen[user] |= items
    return {user: [i for i in ranked if i not in seen[user]][:K] for user in users}


def score(lists: Dict[str, List[str]], relevant: Dict[str, Set[str]], day_old: Set[str]) -> Dict[str, float]:
    metrics = ranking_eval.ranking_metrics(lists, relevant, K)
    hits = [bool(set(lists.get(user, ())[:K]) & items) for user, items in relevant.items()]
    slots = [(user, item) for user, items in lists.items() for item in items[:K]]
    fresh = [(user, item) for user, item in slots if item in day_old]
    return {"recall_at_10": round(metrics["recall"], 4), "hit_rate_at_10": round(float(np.mean(hits)), 4),
            "users": metrics["users"],
            "day_old_share": round(len(fresh) / max(1, len(slots)), 4),
            "day_old_hit_rate": round(sum(item in relevant.get(user, ()) for user, item in fresh) / len(fresh), 4)
            if fresh else None}


REQUESTS_PER_SECOND = 20.0  # the client loop's pace: swaps under steady traffic, not a load test


def _client_loop(target: str, users: Sequence[str], rate: float, stop, results) -> None:
    """The client process: `recommend` at `rate` a second until `stop`, then (ok, failed, errors) into `results`."""
    from serving.client import RecsysClient

    client, rng = RecsysClient(target, timeout=5.0), random.Random(0)
    ok = failed = 0
    errors: Counter = Counter()
    while not stop.is_set():
        started = time.monotonic()
        try:
            client.recommend(rng.choice(users), k=K)
            ok += 1
        except Exception as e:  # noqa: BLE001 (every failure counts)
            if ok:  # before the first push there is nothing to serve: not a failure of a swap
                failed += 1
                errors[type(e).__name__ + ": " + str(e)[:120]] += 1
        stop.wait(max(0.0, 1.0 / rate - (time.monotonic() - started)))
    results.send((ok, failed, dict(errors)))


class ClientLoop:
    """A process asking the server for recommendations at a steady pace; counts answers, and failures after the
    first answer. Out of the benchmark's process, as a real client is: the pipeline's time is not shared with it."""

    def __init__(self, target: str, users: Sequence[str], rate: float = REQUESTS_PER_SECOND):
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._results, sender = context.Pipe(duplex=False)
        self._process = context.Process(target=_client_loop, args=(target, list(users), rate, self._stop, sender),
                                        daemon=True)
        self.ok = self.failed = 0
        self.errors: Dict[str, int] = {}

    def __enter__(self):
        self._process.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._results.poll(30):
            self.ok, self.failed, self.errors = self._results.recv()
        self._process.join(timeout=10)


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(serving_dir: str):
    """`recsys serve` of `serving_dir` in its own process (as in production), polling for new versions every 0.5 s;
    yields its gRPC target once it accepts connections."""
    import grpc

    os.makedirs(serving_dir, exist_ok=True)
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO_ROOT, os.environ.get("PYTHONPATH")])))
    server = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "serve", "--model-dir", serving_dir, "--port", str(port),
         "--rest-port", "0", "--poll-interval", "0.5"], cwd=REPO_ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = f"127.0.0.1:{port}"
    try:
        with grpc.insecure_channel(target) as channel:
            grpc.channel_ready_future(channel).result(timeout=120)
        yield target
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def run_day(data: str, out: str, day: int, window: int, cold: bool, run_args: Sequence[str]) -> Dict:
    """`recsys run --span day --window W`; its exit code, wall time and per-component times."""
    from pipeline import cli, local_runner

    windows: Dict[str, tuple] = {}
    original = local_runner.run

    def timed(config, **kwargs):  # the CLI's own run, with the component times it returns kept
        result = original(config, **kwargs)
        windows.update(result or {})
        return result

    local_runner.run = timed
    started = time.monotonic()
    try:
        code = cli.main(["run", "--data-root", data, "--output-dir", out, "--span", str(day), "--window",
                         str(min(window, day)), *(["--cold"] if cold else []), *run_args])
    finally:
        local_runner.run = original
    components = {name: round(end - start, 1) for name, (start, end) in sorted(windows.items(), key=lambda kv: kv[1])}
    return {"exit_code": code, "run_s": round(time.monotonic() - started, 1),
            "trainer_s": components.get("Trainer"), "components_s": components}


def _mean(rows: List[Dict], key: str, days: Set[int]) -> Optional[float]:
    values = [row[key] for row in rows if row["next_day"] in days and row.get(key) is not None]
    return round(float(np.mean(values)), 4) if values else None


def run(work_dir: str, num_days: int = 14, window: int = 7, scale: float = 1.0,
        variants: Sequence[str] = ("warm", "cold"), run_args: Sequence[str] = ()) -> Dict:
    """Generates the timeline under `work_dir` (replacing what is there), replays it; returns the results."""
    variants = list(variants)
    base = timeline.TimelineSpec()
    spec = dataclasses.replace(
        base, days=num_days, initial_users=max(50, int(base.initial_users * scale)),
        initial_items=max(50, int(base.initial_items * scale)),
        new_users_per_day=max(2, int(base.new_users_per_day * scale)),
        new_items_per_day=max(2, int(base.new_items_per_day * scale)))
    data = os.path.join(work_dir, "data")
    shutil.rmtree(work_dir, ignore_errors=True)
    counts = timeline.generate(data, spec)
    days = load_days(data, num_days)
    print(f"== replay: {num_days} days ({sum(len(i) for d in days.values() for i in d.interactions.values())} "
          f"interactions), window {window}, variants {', '.join(variants)}", flush=True)
    rows: List[Dict] = []
    baselines: Dict[int, Dict] = {}
    frozen = None
    first_serving = os.path.join(work_dir, f"out_{variants[0]}", "serving", F.DEFAULT_MODEL_NAME)
    with running_server(first_serving) as target, ClientLoop(target, sorted(days[1].interactions)) as clients:
        # Day by day, each variant in turn: the machine's speed drifts by tens of percent over the half hour, and
        # interleaved runs share that drift, so the warm/cold time ratio compares runs minutes apart.
        for day, variant in itertools.product(range(1, num_days), variants):
            out = os.path.join(work_dir, f"out_{variant}")
            serving_dir = os.path.join(out, "serving", F.DEFAULT_MODEL_NAME)
            ran = run_day(data, out, day, window, variant == "cold", run_args)
            version, model = _served(serving_dir)
            following = days[day + 1]
            users = sorted(following.interactions)
            day_old = days[day].items - days[day - 1].items if day > 1 else set()  # day 1: the first catalogue
            metadata = PipelineConfig(output_dir=os.path.abspath(out)).metadata_path
            row = {"variant": variant, "day": day, "next_day": day + 1, "served_version": version, **ran,
                   "metadata_mb": round(os.path.getsize(metadata) / 2**20, 2) if os.path.exists(metadata) else None}
            if model is not None:
                row.update(score(model_lists(model, users), following.interactions, day_old))
            if frozen is None and model is not None:
                frozen = model  # the first served model, never retrained
            if day not in baselines:
                recent = [days[d] for d in range(max(1, day - window + 1), day + 1)]
                baselines[day] = {
                    "most_popular": score(popular_lists(recent, users, days[day].active),
                                          following.interactions, day_old),
                    "frozen": score(model_lists(frozen, users), following.interactions, day_old)
                    if frozen is not None else None}
            row["most_popular"], row["frozen"] = baselines[day]["most_popular"], baselines[day]["frozen"]
            rows.append(row)
            print(f"   {variant} day {day}: exit {ran['exit_code']}, run {ran['run_s']} s (Trainer "
                  f"{ran['trainer_s']} s), served v{version}: next-day Recall@10 {row.get('recall_at_10')} "
                  f"(most popular {row['most_popular']['recall_at_10']}, frozen "
                  f"{(row['frozen'] or {}).get('recall_at_10')}), day-old share {row.get('day_old_share')}",
                  flush=True)
    # The client process reports its counts when it stops (leaving the block).
    swaps = {"requests_ok": clients.ok, "requests_failed": clients.failed, "errors": dict(clients.errors),
             "requests_per_second": REQUESTS_PER_SECOND}
    # The figure is over next days 8-14 (a full 7-day window); a shorter replay reports every day.
    compared = set(range(FIRST_COMPARED_DAY, num_days + 1)) or set(range(2, num_days + 1))
    summary = summarize(rows, variants, compared)
    machine = {"cpus": os.cpu_count(), "platform": platform.platform()}
    result = {"source": "recsys benchmark --replay", "host": machine,
              "spec": dataclasses.asdict(spec),
              "window": window, "counts": counts, "compared_next_days": sorted(compared), "summary": summary,
              "swaps": swaps, "days": rows}
    return result


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return round(a / b, 3) if a is not None and b else None


def summarize(rows: List[Dict], variants: Sequence[str], compared: Set[int]) -> Dict:
    """Means over the `compared` next days for each variant and for the references (the first variant's rows hold
    them), days blessed, and the ratios the issue's targets are stated in."""
    summary: Dict = {}
    for variant in variants:
        mine = [r for r in rows if r["variant"] == variant]
        summary[variant] = {key: _mean(mine, key, compared) for key in
                            ("recall_at_10", "hit_rate_at_10", "day_old_share", "day_old_hit_rate", "run_s",
                             "trainer_s")}
        summary[variant]["blessed_days"] = sum(r["exit_code"] == 0 for r in mine)
        timed = [r["components_s"] for r in mine if r["next_day"] in compared and r.get("components_s")]
        names = sorted({name for components in timed for name in components})
        summary[variant]["components_s"] = {
            name: round(float(np.mean([c.get(name, 0.0) for c in timed])), 1) for name in names}
    first = [r for r in rows if r["variant"] == variants[0]]
    for name in ("most_popular", "frozen"):
        values = [r[name] for r in first if r["next_day"] in compared and r[name]]
        summary[name] = {key: round(float(np.mean([v[key] for v in values if v[key] is not None])), 4)
                         if any(v[key] is not None for v in values) else None
                         for key in ("recall_at_10", "hit_rate_at_10", "day_old_share", "day_old_hit_rate")}
    ratios = {}
    for variant in variants:
        ratios[f"{variant}_over_frozen_recall"] = _ratio(summary[variant]["recall_at_10"],
                                                         summary["frozen"]["recall_at_10"])
        ratios[f"{variant}_over_most_popular_recall"] = _ratio(summary[variant]["recall_at_10"],
                                                               summary["most_popular"]["recall_at_10"])
    if {"warm", "cold"} <= set(variants):
        ratios["warm_over_cold_recall"] = _ratio(summary["warm"]["recall_at_10"], summary["cold"]["recall_at_10"])
        ratios["warm_over_cold_trainer_s"] = _ratio(summary["warm"]["trainer_s"], summary["cold"]["trainer_s"])
    summary["ratios"] = ratios
    return summary


def write(result: Dict, out_dir: str) -> List[str]:
    """DIR/replay.json and DIR/replay.md, atomically."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, "replay.json"), os.path.join(out_dir, "replay.md")]
    atomic_write(paths[0], json.dumps(result, indent=2, default=str) + "\n")
    atomic_write(paths[1], report(result))
    return paths


def report(result: Dict) -> str:
    s = result["summary"]
    days = result["compared_next_days"]
    lines = [f"## Replay: continuous training over {result['spec']['days']} daily spans, window {result['window']}",
             "", f"Next days {days[0]}-{days[-1]} (means); `recsys benchmark --replay`.", "",
             "| | next-day Recall@10 | HitRate@10 | day-old items in lists | their hit rate | run s | Trainer s | "
             "days blessed |",
             "|---|---|---|---|---|---|---|---|"]
    variants = [v for v in ("warm", "cold") if v in s]
    for name in variants + ["frozen", "most_popular"]:
        row = s[name]
        lines.append(f"| {name.replace('_', ' ')} | {row['recall_at_10']} | {row['hit_rate_at_10']} | "
                     f"{row['day_old_share']} | {row['day_old_hit_rate']} | {row.get('run_s', '')} | "
                     f"{row.get('trainer_s', '')} | {row.get('blessed_days', '')} |")
    for variant in variants:
        spent = sorted(s[variant].get("components_s", {}).items(), key=lambda kv: -kv[1])
        if spent:
            lines += ["", f"Where a {variant} daily run's time goes (means, s): "
                      + ", ".join(f"{name} {seconds}" for name, seconds in spent if seconds >= 0.5) + "."]
    swaps = result["swaps"]
    lines += ["", "Ratios: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in s["ratios"].items()) + ".",
              "", f"Requests during the daily swaps: {swaps['requests_ok']} answered, {swaps['requests_failed']} "
                  f"failed. ML Metadata after the last day: "
              + ", ".join(f"{r['variant']} {r['metadata_mb']} MB" for r in result["days"]
                          if r["day"] == result["spec"]["days"] - 1) + ".", ""]
    return "\n".join(lines)

