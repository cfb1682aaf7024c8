"""bench/report.md (tables) and PNG plots from whatever bench/results/*.json exist.

Usage: .venv/bin/python bench/report.py [--results-dir bench/results] [--out bench/report.md]
       [--started-at EPOCH_SECONDS]

Every row shows its reference (measured in the same run) and the ratio to it; targets say met or
missed. --started-at (what `make bench` records before its first step) adds the wall time of the run
and marks which result files that run wrote; older files are listed as earlier measurements.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import sys
from typing import Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402
from components.atomic_io import atomic_path  # noqa: E402
from components.training_config import TrainingConfig  # noqa: E402

BENCH_BUDGET_S = 15 * 60
PIPELINE_100K_TARGET_S = 180.0
BATCHING_TARGET_RATIO = 2.0  # throughput with batching on / off at concurrency 32
PREDICT_P50_OVERHEAD_TARGET_MS = 1.0  # gRPC Predict p50 minus the in-process call's, concurrency 1
PREDICT_P99_TARGET_MS = 5.0
NEW_CLIENT_TARGET_MS = 1000.0  # every new client answered while 1,000 idle connections / open channels are held


def _load(results_dir: str) -> Dict[str, Dict]:
    out = {}
    for path in sorted(glob.glob(os.path.join(results_dir, "*.json"))):
        try:
            with open(path) as f:
                out[os.path.basename(path)] = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            print(f"skipping {path}: {e}", file=sys.stderr)
    return out


def _met(flag: Optional[bool]) -> str:
    return "n/a" if flag is None else ("**met**" if flag else "**missed**")


def _f(value, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        magnitude = abs(value)
        return f"{value:,.{3 if magnitude < 10 else 2 if magnitude < 100 else digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(header: List[str], rows: List[List]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_f(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return lines + [""]


def _generated_at(payload: Dict) -> Optional[datetime.datetime]:
    stamp = (payload.get("machine") or {}).get("generated_at")
    return datetime.datetime.fromisoformat(stamp) if stamp else None


def _this_run(payload: Dict, started_at: Optional[float]) -> bool:
    stamp = _generated_at(payload)
    if stamp is None:
        return False
    return started_at is None or stamp.timestamp() >= started_at - 1


class Plots:
    def __init__(self, directory: str):
        self.directory, self.written = directory, []
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.plt = plt

    def save(self, fig, name: str) -> str:
        path = os.path.join(self.directory, name)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        self.plt.close(fig)
        self.written.append(path)
        return name


# --- sections -------------------------------------------------------------------------------------------------


def training_section(data: Dict, plots: Plots, summary: List[List], rel: str) -> List[str]:
    lines = ["## 1. Training throughput: the Trainer's input path against in-memory batches", ""]
    lines += [f"Transformed examples: `{data.get('transformed_examples')}` ({_f(data.get('train_examples'))} "
              f"training examples). Reference: the same model fed the same parsed batches cached in memory, "
              f"measured in the same run. input_fn and in-memory are timed over {data.get('epochs_per_fit')} "
              f"epochs (the Trainer's default, so input_fn's one read of the split is spread as in run_fn); "
              f"the streaming variants over {data.get('stream_epochs_per_fit')} (their cost is the same every "
              f"epoch). {data.get('repeats')} rounds, each fitting in-memory then every input path; ex/s are "
              f"medians over rounds, ratios the median of each round's ratio (per round: "
              f"{'; '.join(r['model'] + ' ' + ', '.join(map(str, r.get('rounds_ratio', []))) for r in data.get('rows', []))}).", ""]
    rows = []
    for r in data.get("rows", []):
        rows.append([r["model"], r["batch_size"], r["input_path_eps"], r["in_memory_eps"], f"{r['ratio']:.3f}",
                     f"≥ {r['target']}", _met(r["met"]), r["before"]["eps"], f"{r['before']['ratio']:.3f}",
                     r["streaming"]["eps"], f"{r['streaming']['ratio']:.3f}"])
        summary.append([f"training throughput {r['model']} (bs {r['batch_size']})",
                        f"{r['input_path_eps']:,} ex/s", f"in-memory {r['in_memory_eps']:,} ex/s",
                        f"{r['ratio']:.3f}", f"≥ {r['target']}", _met(r["met"])])
    lines += _table(["model", "batch", "input_fn ex/s", "in-memory ex/s (ref)", "ratio", "target", "",
                     "before: ex/s", "before: ratio", "streaming path ex/s", "streaming ratio"], rows)
    profile = data.get("profile_dataset_alone_eps") or {}
    if profile:
        ref = profile.get("in_memory")
        lines += ["**Profile** (each dataset alone, no model; reference: the in-memory dataset):", ""]
        lines += _table(["stage", "examples/s", "ratio to in-memory"],
                        [[k, v, f"{v / ref:.3f}" if ref else "–"] for k, v in profile.items()])
    for title, key in (("What the profile showed", "profile_findings"), ("What changed", "changes")):
        if data.get(key):
            lines += [f"**{title}:**", ""] + [f"- {item}" for item in data[key]] + [""]
    if isinstance(data.get("tf_profiler_trace"), str):
        lines += [f"TF profiler trace (TensorBoard, not committed): `{data['tf_profiler_trace']}`", ""]
    if data.get("rows"):
        fig, ax = plots.plt.subplots(figsize=(7, 3.5))
        variants = [("before", "input_fn before"), ("streaming", "streaming path"), ("input_path", "input_fn"),
                    ("in_memory", "in memory (ref)")]
        width = 0.2
        for i, (key, label) in enumerate(variants):
            values = [r[f"{key}_eps"] if key in ("input_path", "in_memory") else r[key]["eps"] for r in data["rows"]]
            ax.bar([x + i * width for x in range(len(values))], values, width, label=label)
        ax.set_xticks([x + 1.5 * width for x in range(len(data["rows"]))])
        ax.set_xticklabels([r["model"] for r in data["rows"]])
        ax.set_ylabel("examples / s")
        ax.set_title("model.fit throughput by input path")
        ax.legend(fontsize=8)
        lines += [f"![training throughput]({rel}/{plots.save(fig, 'training_throughput.png')})", ""]
    return lines


def pipeline_section(files: Dict[str, Dict], started_at: Optional[float], plots: Plots, summary: List[List],
                     rel: str) -> List[str]:
    lines = ["## 2. Pipeline wall time per component", ""]
    current = {n: d for n, d in files.items() if _this_run(d, started_at)}
    earlier = {n: d for n, d in files.items() if n not in current}
    runs = [(name, d, run) for name, d in current.items() for run in d.get("runs", [])]
    runs.sort(key=lambda item: item[2]["interactions"])
    for name, d, run in runs:
        wall = run["pipeline_wall_s"]
        asked, trained = run.get("epochs_requested"), run.get("epochs_trained")
        settings = ("the Trainer's default" if asked == TrainingConfig.epochs else
                    f"fewer than the Trainer's default {TrainingConfig.epochs}, to fit `make bench` in 15 minutes")
        lines += [f"**{run['interactions']:,} interactions** ({run['users']:,} users, {run['items']:,} items; "
                  f"`{name}`): pipeline {wall} s; Beam `{' '.join(d.get('beam_args', []))}` (what `recsys run` "
                  f"picks for this input size); {asked} epochs ({settings}), {trained} trained"
                  + (" (early stopping)" if trained and asked and trained < asked else "")
                  + (f"; eval split {run['eval_fraction']:.0%}" if run.get("eval_fraction") else "")
                  + (" (the pipeline's default is 10 %, smaller here to fit the budget)"
                     if run.get("config_overrides") else "")
                  + f"; data generation {run.get('generate_s')} s, not in the pipeline time. "
                  "Reference for the share: the pipeline's wall time.", ""]
        rows = [[c, v["wall_s"], f"{v['wall_s'] / wall:.3f}", v.get("peak_rss_mb")]
                for c, v in run["components"].items()]
        rows.append(["orchestrator overhead", run["orchestrator_overhead_s"],
                     f"{run['orchestrator_overhead_s'] / wall:.4f}", None])
        rows.append(["**pipeline**", wall, "1.000", run.get("peak_rss_mb")])
        lines += _table(["component", "wall s", "share", "peak RSS MB"], rows)
        if run["interactions"] == 100_000:
            met = wall < PIPELINE_100K_TARGET_S
            summary.append(["full local pipeline, 100K interactions", f"{wall} s",
                            f"target {PIPELINE_100K_TARGET_S:.0f} s", f"{wall / PIPELINE_100K_TARGET_S:.3f}",
                            f"< {PIPELINE_100K_TARGET_S:.0f} s", _met(met)])
    if len(runs) >= 2:
        small, large = runs[0][2], runs[-1][2]
        factor = large["interactions"] / small["interactions"]
        lines += [f"**Scaling {small['interactions']:,} → {large['interactions']:,} interactions "
                  f"({factor:.0f}x; reference: the {small['interactions']:,} run of the same make bench):**", ""]
        rows = []
        for c in large["components"]:
            a, b = small["components"].get(c, {}).get("wall_s"), large["components"][c]["wall_s"]
            rows.append([c, a, b, f"{b / a:.2f}" if a and a >= 0.5 else "– (under 0.5 s)"])
        rows.append(["pipeline", small["pipeline_wall_s"], large["pipeline_wall_s"],
                     f"{large['pipeline_wall_s'] / small['pipeline_wall_s']:.2f}"])
        lines += _table(["component", f"{small['interactions']:,} s", f"{large['interactions']:,} s", "ratio"], rows)
        if small.get("epochs_trained") != large.get("epochs_trained") or large.get("config_overrides") or \
                runs[0][1].get("beam_args") != runs[-1][1].get("beam_args"):
            lines += ["Settings differ between the sizes (epochs, eval split, Beam mode; above), so the ratios of "
                      "the Trainer, StatisticsGen and Evaluator mix scale with settings (the larger run evaluates "
                      f"{large.get('eval_fraction', 0) * large['interactions']:,.0f} examples against "
                      f"{small.get('eval_fraction', 0) * small['interactions']:,.0f}); section 4 compares the "
                      "Trainer per epoch.", ""]
    if runs:
        fig, ax = plots.plt.subplots(figsize=(8, 1.2 + 0.6 * len(runs)))
        names = [c for c in runs[-1][2]["components"]]
        left = [0.0] * len(runs)
        colours = plots.plt.cm.tab20.colors
        for i, c in enumerate(names):
            widths = [run["components"].get(c, {}).get("wall_s", 0.0) for _, _, run in runs]
            if max(widths) < 0.5:
                continue
            ax.barh(range(len(runs)), widths, left=left, label=c, color=colours[i % len(colours)])
            left = [a + b for a, b in zip(left, widths)]
        ax.set_yticks(range(len(runs)))
        ax.set_yticklabels([f"{run['interactions']:,}" for _, _, run in runs])
        ax.set_xlabel("seconds")
        ax.set_title("pipeline wall time per component (components over 0.5 s)")
        ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.35))
        lines += [f"![pipeline components]({rel}/{plots.save(fig, 'pipeline_components.png')})", ""]
    if earlier:
        lines += ["Earlier measurements in bench/results (not re-run by this make bench; kept for history):", ""]
        rows = [[name, run["interactions"], " ".join(d.get("beam_args", [])), run["pipeline_wall_s"],
                 run["components"].get("Trainer", {}).get("wall_s")]
                for name, d in earlier.items() for run in d.get("runs", [])]
        lines += _table(["file", "interactions", "Beam", "pipeline s", "Trainer s"], rows)
    return lines


def serving_section(data: Dict, plots: Plots, summary: List[List], rel: str) -> List[str]:
    lines = ["## 3. Serving latency: gRPC against the in-process signature call", "",
             f"Model version {data.get('version')} (the pushed model of the 100K run). Reference: the same "
             f"signature called in-process, same run.", ""]
    rows = []
    for r in data.get("rows", []):
        g, d = r["grpc"], r["in_process"]
        rows.append([r["signature"], r["concurrency"], g["p50_ms"], g["p99_ms"], g["throughput_rps"], d["p50_ms"],
                     d["p99_ms"], d["throughput_rps"], r["p50_overhead_ms"], f"{r['throughput_ratio']:.3f}"])
    lines += _table(["signature", "concurrency", "gRPC p50 ms", "gRPC p99 ms", "gRPC req/s", "in-process p50 ms (ref)",
                     "in-process p99 ms", "in-process req/s (ref)", "p50 overhead ms", "throughput ratio"], rows)
    batching = data.get("batching")
    if batching:
        lines += ["**Server-side batching** (reference: the same server with batching off):", ""]
        lines += _table(["signature", "concurrency", "off req/s (ref)", "on req/s", "ratio"],
                        [[b["signature"], b["concurrency"], b["off_rps"], b["on_rps"], f"{b['ratio']:.3f}"]
                         for b in batching])
        for b in batching:
            summary.append([f"server-side batching, {b['signature']} at concurrency {b['concurrency']}",
                            f"{b['on_rps']:,} req/s", f"off {b['off_rps']:,} req/s", f"{b['ratio']:.3f}",
                            f"≥ {BATCHING_TARGET_RATIO:g}x", _met(b["ratio"] >= BATCHING_TARGET_RATIO)])
        lines += [
            "Why batching gains less than 2x here: the server is Python (TF Serving's binary cannot be installed "
            "here), and per request it spends most of its CPU outside the model call: gRPC's Python handler, "
            "request/response conversion and thread hand-offs, which batching does not remove (py-spy on the "
            "server under this load: the signature call is a minority of the time the GIL is held). For "
            "`recommend` over a large catalogue the per-user work (one row of scores over every item, the "
            "exclusion scatter and top-k over it) grows with the batch; batching saves only the repeated reads "
            "of the item table. The real TF Serving (C++) has no interpreter lock on the request path.", ""]
    else:
        lines += ["(No batching rows in serving_latency.json.)", ""]
    for r in data.get("rows", []):
        if r["signature"] == "predict" and r["concurrency"] == 1:
            overhead, p99 = r["p50_overhead_ms"], r["grpc"]["p99_ms"]
            summary.append(["gRPC Predict p50 at concurrency 1", f"{r['grpc']['p50_ms']} ms",
                            f"in-process {r['in_process']['p50_ms']} ms", f"+{overhead} ms",
                            f"≤ +{PREDICT_P50_OVERHEAD_TARGET_MS:g} ms", _met(overhead <= PREDICT_P50_OVERHEAD_TARGET_MS)])
            summary.append(["gRPC Predict p99 at concurrency 1", f"{p99} ms", f"target {PREDICT_P99_TARGET_MS:g} ms",
                            f"{p99 / PREDICT_P99_TARGET_MS:.3f}", f"< {PREDICT_P99_TARGET_MS:g} ms",
                            _met(p99 < PREDICT_P99_TARGET_MS)])
    if data.get("rows"):
        fig, ax = plots.plt.subplots(figsize=(7, 3.2))
        labels = [f"{r['signature']}\nc={r['concurrency']}" for r in data["rows"]]
        xs = range(len(labels))
        ax.bar([x - 0.2 for x in xs], [r["in_process"]["p50_ms"] for r in data["rows"]], 0.4, label="in-process p50")
        ax.bar([x + 0.2 for x in xs], [r["grpc"]["p50_ms"] for r in data["rows"]], 0.4, label="gRPC p50")
        ax.set_xticks(list(xs))
        ax.set_xticklabels(labels, fontsize=8)
        ax.set_ylabel("ms")
        ax.set_title("serving p50 latency")
        ax.legend(fontsize=8)
        lines += [f"![serving latency]({rel}/{plots.save(fig, 'serving_latency.png')})", ""]
    return lines


def connections_section(data: Dict, summary: List[List]) -> List[str]:
    rows = data.get("rows", [])
    if not rows:
        return []
    held, samples = rows[0]["held"], rows[0]["none_held"]["samples"]
    lines = ["### A thousand clients: a new client while 1,000 connections are held", "",
             f"A new client (connect, one `predict`, answer read; {samples} in a row) while {held:,} connections "
             f"are held open on `recsys serve`, beside the same new client with none held (the reference, same run; "
             f"model version {data.get('version')}). REST: idle connections, half silent and half a partial header, "
             "which the server keeps until its idle timeout; gRPC: connected channels, each its own connection. "
             "`held by the server`: the sockets it still held after the samples; `first`: the first new client "
             f"after the crowd connected. Measured with `{data.get('command', 'bench/serving_latency.py')}`.", ""]
    lines += _table(["API", "held", "none held p50 ms (ref)", "none held p99 ms", "held p50 ms", "held p99 ms",
                     "held max ms", "first ms", "p50 ratio", "held by the server"],
                    [[r["api"], f"{r['held']:,} {r['what']}", r["none_held"]["p50_ms"], r["none_held"]["p99_ms"],
                      r["with_held"]["p50_ms"], r["with_held"]["p99_ms"], r["with_held"]["max_ms"],
                      r["with_held"].get("first_ms"), f"{r['p50_ratio']:.3f}", r["held_by_server"]] for r in rows])
    for r in rows:
        worst = r["with_held"]["max_ms"]
        summary.append([f"{r['api']} new client with {r['held']:,} {r['what']} held (slowest of {samples})",
                        f"{worst} ms (p50 {r['with_held']['p50_ms']} ms)",
                        f"none held: p50 {r['none_held']['p50_ms']} ms",
                        f"{r['p50_ratio']:.3f}", f"< {NEW_CLIENT_TARGET_MS / 1000:g} s",
                        _met(worst < NEW_CLIENT_TARGET_MS)])
    return lines


def scaling_section(data: Dict, plots: Plots, summary: List[List], rel: str) -> List[str]:
    lines = ["## 4. Scaling", "", f"### recommend (top-{data.get('k')}) latency against catalogue size", "",
             f"{data.get('users'):,} users, {data.get('rated_per_user')} rated items each excluded, concurrency 1. "
             "Reference: the smallest catalogue of the same model in the same run; linear growth means "
             "p50 ratio = items ratio (log-log slope 1).", ""]
    rows = []
    for r in data.get("rows", []):
        g = r.get("grpc", {})
        rows.append([r["model"], r["items"], r["in_process"]["p50_ms"], r["in_process"]["p99_ms"], g.get("p50_ms"),
                     g.get("p99_ms"), r.get("items_ratio"), r.get("p50_ratio"), r.get("slope_vs_previous"),
                     r.get("ns_per_item"), r["breakdown_p50_ms"].get("score_all_items"),
                     r["breakdown_p50_ms"].get("score_all_items+top_k"), r.get("saved_model_mb")])
        if "met" in r:
            worst = max(r["in_process"]["p50_ms"], g.get("p50_ms", 0.0))
            summary.append([f"recommend p50, {r['model']} at {r['items']:,} items",
                            f"{r['in_process']['p50_ms']} ms in-process, {_f(g.get('p50_ms'), 3)} ms gRPC",
                            f"target {r['target_p50_ms']} ms", f"{worst / r['target_p50_ms']:.3f}",
                            f"< {r['target_p50_ms']} ms", _met(r["met"])])
    lines += _table(["model", "items", "p50 ms", "p99 ms", "gRPC p50 ms", "gRPC p99 ms", "items ratio",
                     "p50 ratio", "slope", "ns/item", "scores only ms", "+top_k ms", "SavedModel MB"], rows)
    for text in data.get("growth", []):
        lines += [f"- {text}"]
    lines += [""]
    if data.get("rows"):
        fig, ax = plots.plt.subplots(figsize=(6.5, 4))
        for name in sorted({r["model"] for r in data["rows"]}):
            mine = sorted((r for r in data["rows"] if r["model"] == name), key=lambda r: r["items"])
            xs = [r["items"] for r in mine]
            line, = ax.plot(xs, [r["in_process"]["p50_ms"] for r in mine], "o-", label=f"{name} in-process p50")
            if all("grpc" in r for r in mine):
                ax.plot(xs, [r["grpc"]["p50_ms"] for r in mine], "s--", color=line.get_color(), alpha=0.6,
                        label=f"{name} gRPC p50")
            base = mine[0]
            ax.plot(xs, [base["in_process"]["p50_ms"] * x / base["items"] for x in xs], ":", color=line.get_color(),
                    label=f"{name}: linear from {base['items']:,}")
        ax.axhline(data.get("target", {}).get("p50_ms", 10.0), color="red", lw=0.8, label="10 ms target")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("catalogue items")
        ax.set_ylabel("p50 ms")
        ax.set_title("recommend latency against catalogue size")
        ax.legend(fontsize=7)
        lines += [f"![recommend scaling]({rel}/{plots.save(fig, 'recommend_scaling.png')})", ""]
    training = data.get("training") or []
    if training:
        lines += ["### Trainer time against interactions", "",
                  f"From the pipeline runs of section 2 (reference: the {training[0]['interactions']:,} run). The "
                  "runs may train different numbers of epochs (early stopping, or fewer epochs chosen for the "
                  "budget), so the comparable figure is the steady epoch time (median gap between Keras' "
                  "end-of-epoch events in the Trainer's TensorBoard log, validation pass included); the rest of "
                  "the Trainer's wall time is fixed work (catalogue pass, first-epoch tracing, export).", ""]
        lines += _table(["interactions", "train examples", "users / items", "Trainer s", "epochs", "steady s/epoch",
                         "outside steady epochs s", "train examples ratio", "Trainer wall ratio", "per-epoch ratio"],
                        [[t["interactions"], t.get("train_examples"), f"{_f(t.get('users'))} / {_f(t.get('items'))}",
                          t["trainer_wall_s"], t["epochs"], t.get("steady_epoch_s"), t.get("outside_steady_epochs_s"),
                          t.get("train_examples_ratio", t.get("interactions_ratio")), t.get("wall_ratio"),
                          t.get("per_epoch_ratio")] for t in training])
        probe = data.get("training_step_vs_vocabulary") or []
        if probe:
            keys = [k for k in probe[0] if k.startswith("ms_per_step")]
            lines += ["mf train step alone (same batch of 1024, synthetic ids, in memory) at each run's vocabulary "
                      "sizes; reference: the first row:", ""]
            lines += _table(["users", "items"] + [k.replace("ms_per_step_", "ms/step ") for k in keys] +
                            [f"ratio ({k.replace('ms_per_step_', '')})" for k in keys],
                            [[p["users"], p["items"]] + [p[k] for k in keys] +
                             [f"{p[k] / probe[0][k]:.2f}" for k in keys] for p in probe])
        last = training[-1]
        if len(training) >= 2 and last.get("per_epoch_ratio"):
            ratio, factor = last["per_epoch_ratio"], last.get("train_examples_ratio", last["interactions_ratio"])
            shape = ("about linear" if 0.8 * factor <= ratio <= 1.25 * factor else
                     "sublinear" if ratio < 0.8 * factor else "superlinear")
            text = (f"Per epoch the Trainer took {ratio:.2f}x the time for {factor:.1f}x the training examples: "
                    f"{shape}.")
            if len(probe) >= 2:
                key = keys[0]
                step = probe[-1][key] / probe[0][key]
                text += (f" The mf step alone costs {step:.2f}x more at the larger vocabulary with the same batch "
                         f"(the Adam update and the L2 penalty cover whole embedding tables, not just the batch's "
                         f"rows), so {factor:.1f}x the steps at {step:.2f}x the step cost would predict "
                         f"{factor * step:.1f}x per epoch if the step were all of an epoch.")
                if ratio < 0.8 * factor * step:
                    text += (" The measured ratio is below that bound: an epoch is not only training steps "
                             "(validation pass, per-epoch start-up).")
            lines += [text, ""]
    return lines


def by_history_section(name: str, data: Dict, summary: List[List]) -> List[str]:
    """recommend_by_history beside recommend, from a recommend_scaling result's rows (history models only)."""
    rows = [r for r in data.get("rows", []) if r.get("by_history")]
    if not rows:
        return []
    length = rows[0]["by_history"].get("history_length")
    lines = [f"### recommend_by_history beside recommend (`{name}`)", "",
             f"A {length}-item history per request, top-{data.get('k')}: a known user with their "
             f"{data.get('rated_per_user')} stored items and the {length} newest in the request (`user + recent`, "
             f"use_stored_history true) and an anonymous session (`session`, user_id \"\"). Reference: `recommend` of "
             "the same model (rated items excluded) in the same run, the requests measured in turns so each sees the "
             "same load; concurrency 1.", ""]
    table = []
    for r in rows:
        for kind, e in r["by_history"]["requests"].items():
            g = e.get("grpc", {})
            table.append([r["model"], r["items"], kind, e["in_process"]["p50_ms"], e["in_process"]["p99_ms"],
                          r["in_process"]["p50_ms"], f"{e['p50_ratio']:.3f}", g.get("p50_ms"), g.get("p99_ms"),
                          r.get("grpc", {}).get("p50_ms"),
                          f"{e['grpc_p50_ratio']:.3f}" if "grpc_p50_ratio" in e else "–"])
        if "met" in r["by_history"]:
            target = r["by_history"]["target_p50_ratio"]
            for kind, e in r["by_history"]["requests"].items():
                g = e.get("grpc", {})
                summary.append([f"recommend_by_history p50 ({kind}, {length} items), {r['model']} at {r['items']:,} "
                                f"items",
                                f"{e['in_process']['p50_ms']} ms in-process, {_f(g.get('p50_ms'), 3)} ms gRPC",
                                f"recommend {r['in_process']['p50_ms']} ms, {_f(r.get('grpc', {}).get('p50_ms'), 3)} "
                                f"ms gRPC", f"{max(e['p50_ratio'], e.get('grpc_p50_ratio', 0.0)):.3f}",
                                f"≤ {target:g}x", _met(max(e["p50_ratio"], e.get("grpc_p50_ratio", 0.0)) <= target)])
    lines += _table(["model", "items", "request", "p50 ms", "p99 ms", "recommend p50 ms (ref)", "ratio",
                     "gRPC p50 ms", "gRPC p99 ms", "recommend gRPC p50 ms (ref)", "gRPC ratio"], table)
    return lines


def quality_section(name: str, data: Dict, summary: List[List], rel: str) -> List[str]:
    """`recsys benchmark` (bench/results/quality_*.json): every model beside the references of the same run."""
    from components import models

    rows = {r["name"]: r for r in data["rows"]}
    popular = next((r for r in data["rows"] if r["name"].startswith("most popular")), None)
    ease_ref = next((r for r in data["rows"] if r["name"].startswith("EASE")), None)
    trained = [r for r in data["rows"] if r.get("kind") == "model"]
    default = models.candidates(models.DEFAULT_MODEL, data.get("catalogue", 0), TrainingConfig.ease_max_items)[0]
    k = data.get("k", 10)
    if popular and default in rows:
        ratio = rows[default]["recall"] / popular["recall"]
        summary.append([f"default model (`auto` = {default}) Recall@{k} on the sample (`{name}`)",
                        f"{rows[default]['recall']:.4f}",
                        f"most popular {popular['recall']:.4f}", f"{ratio:.2f}", ">= 1.5x", _met(ratio >= 1.5)])
    if ease_ref and trained:
        best = max(trained, key=lambda r: r["recall"])
        ratio = best["recall"] / ease_ref["recall"]
        summary.append([f"best model ({best['name']}) Recall@{k} on the sample (`{name}`)", f"{best['recall']:.4f}",
                        f"EASE reference {ease_ref['recall']:.4f}", f"{ratio:.3f}", ">= 1x", _met(ratio >= 1.0)])
    scope = data.get("scored_from")
    protocol = (f"each user scored from their {scope} interactions ({data.get('history_interactions')}) with only "
                f"those excluded; references fitted on the same interactions in the same run" if scope else
                f"trained on {data.get('train_interactions')} interactions; ranking with only each user's training "
                f"items excluded; references fitted on the same train split in the same run")
    lines = [f"## Ranking and rating quality (`{name}`, `recsys benchmark`)", "",
             f"{data.get('held_out_interactions')} held-out interactions of {data.get('users')} users "
             f"({data.get('held_out')}), ranking over the whole catalogue of {data.get('catalogue')} items; "
             f"{protocol}.", ""]
    lines += _table(["", "kind", f"Recall@{k}", f"NDCG@{k}", f"coverage@{k}", "RMSE", "train s"],
                    [[r["name"], r.get("kind", ""), _f(r.get("recall"), 4), _f(r.get("ndcg"), 4),
                      _f(r.get("coverage"), 3), _f(r.get("rmse"), 4), _f(r.get("train_s"), 1)]
                     for r in data["rows"]])
    png = name.replace(".json", ".png")
    lines += ["", f"![{png}]({rel}/{png})", ""]
    if data.get("history"):
        lines += history_lines(data["history"], summary)
    return lines


SESSIONS_TARGET = 1.5  # unseen sessions' HitRate@10 against most popular's (issue 17)
FRESH_TARGET = 1.2  # HitRate@10 with 3 fresh interactions in the request against without them (issue 17)


def history_lines(history: Dict, summary: List[List]) -> List[str]:
    """`recsys benchmark`'s history section (pipeline/history_benchmark.py) one heading down, and its targets."""
    from pipeline import history_benchmark

    k = history.get("k", 10)
    for m in history.get("models", []):
        s = m.get("sessions")
        if s and s.get("vs_most_popular") is not None:
            summary.append([f"{m['name']}: unseen sessions HitRate@{k}", f"{s['hit_rate']:.4f}",
                            f"most popular {s['most_popular']:.4f}", f"{s['vs_most_popular']:.2f}",
                            f">= {SESSIONS_TARGET:g}x", _met(s["vs_most_popular"] >= SESSIONS_TARGET)])
        for f in m.get("fresh", []):
            if f["j"] == 3 and f.get("lift") is not None:
                summary.append([f"{m['name']}: HitRate@{k} with 3 fresh interactions in the request ({f['users']} "
                                f"users)", f"{f['with']:.4f}", f"without them {f['without']:.4f}", f"{f['lift']:.3f}",
                                f">= {FRESH_TARGET:g}x", _met(f["lift"] >= FRESH_TARGET)])
    text = history_benchmark.to_markdown(history)
    return ["#" + line if line.startswith("## ") else line for line in text.splitlines()] + [""]


def big_catalogue_section(files: Dict[str, Dict], summary: List[List]) -> List[str]:
    """bench/big_catalogue.py: ScaNN beside brute force at a million items; the models above EASE's limit."""
    lines: List[str] = []
    data = files.get("big_catalogue_ann.json")
    if data:
        brute, approx = data["brute_force"], data["scann"]
        lines += ["### Approximate top-k at a million items (`--ann scann`)", "",
                  f"An iALS model over {data['items']:,} items ({data['dim']} factors drawn in clusters with "
                  f"long-tailed norms), {data['users']} users of ~{data['history_per_user']:.0f} items each; one "
                  f"user per `recommend` call in-process, the code the exported signature runs: brute force (every "
                  f"item scored) beside the ScaNN index ({data['leaves']} leaves, {data['leaves_to_search']} searched, "
                  f"{data['reorder']} candidates re-scored exactly; built in {data['index_build_s']} s), same users, "
                  f"same run. Recall@10 is the share of brute force's top 10 the index returns; seen items returned: "
                  f"{data['seen_items_returned']}. Measured with `{data.get('command')}`.", ""]
        lines += _table(["top-k", "p50 ms", "p99 ms", "requests/s", "Recall@10 vs brute force"],
                        [["brute force (reference)", brute["p50_ms"], brute["p99_ms"], brute["throughput_rps"], "1"],
                         ["ScaNN", approx["p50_ms"], approx["p99_ms"], approx["throughput_rps"],
                          data["recall_at_10_vs_brute_force"]]])
        lines.append("")
        target = data["targets"]
        met = approx["p50_ms"] < target["p50_ms"] and data["recall_at_10_vs_brute_force"] >= target["recall"]
        summary.append([f"`recommend` at {data['items']:,} items with `--ann scann` (p50, in-process)",
                        f"{approx['p50_ms']} ms at Recall@10 {data['recall_at_10_vs_brute_force']}",
                        f"brute force {brute['p50_ms']} ms", f"{data['p50_ratio']:.3f}",
                        f"< {target['p50_ms']:g} ms at >= {target['recall']:g}", _met(met)])
    data = files.get("big_catalogue_models.json")
    if data and data.get("rows"):
        lines += ["### Ranking models above EASE's limit", "",
                  f"The movie generator at {data['items']:,} items, {data['users']:,} users, {data['interactions']:,} "
                  f"interactions; one `recsys run` per model on the same data and split (user-time); the ranking "
                  f"gate's eval Recall@10 beside most popular computed in the same run. `auto` fits ials and "
                  f"two_tower and keeps the better on validation. Measured with `{data.get('command')}`.", ""]
        lines += _table(["model", f"Recall@10", "NDCG@10", "most popular (ref)", "lift", "Trainer s", "pipeline s",
                         "blessed"],
                        [[r["model"], f"{r['recall']:.4f}", f"{r['ndcg']:.4f}", f"{r['most_popular_recall']:.4f}",
                          f"{r['lift']:.2f}", r["trainer_s"], r["pipeline_s"], r["blessed"]] for r in data["rows"]])
        lines.append("")
        rows = {r["model"]: r for r in data["rows"]}
        if "ials" in rows:
            r = rows["ials"]
            summary.append([f"ials on {data['items']:,} items: eval Recall@10", f"{r['recall']:.4f}",
                            f"most popular {r['most_popular_recall']:.4f}", f"{r['lift']:.2f}",
                            f">= {data['targets']['lift']:g}x", _met(r["lift"] >= data["targets"]["lift"])])
            summary.append([f"ials Trainer on {data['interactions']:,} interactions, {data['items']:,} items",
                            f"{r['trainer_s']} s", f"budget {data['targets']['trainer_s']:g} s",
                            f"{(r['trainer_s'] or 0) / data['targets']['trainer_s']:.3f}", "< 10 min",
                            _met(r["trainer_s"] is not None and r["trainer_s"] < data["targets"]["trainer_s"])])
            if "two_tower" in rows:
                t = rows["two_tower"]
                summary.append([f"ials vs two_tower on {data['items']:,} items: eval Recall@10", f"{r['recall']:.4f}",
                                f"two_tower {t['recall']:.4f}", f"{r['recall'] / max(1e-9, t['recall']):.3f}",
                                ">= 1", _met(r["recall"] >= t["recall"])])
    return lines


COST_CURVE_PREFIX = "pipeline_scale_catalogue_"  # make bench-scale's results
COST_CURVE_RSS_TARGET_MB = 12 * 1024


def cost_curve_section(files: Dict[str, Dict], summary: List[List]) -> List[str]:
    """make bench-scale: the whole pipeline at 100K, 1M and 10M interactions over one catalogue, per component."""
    runs = sorted((run for name, d in files.items() if name.startswith(COST_CURVE_PREFIX) for run in d.get("runs", [])),
                  key=lambda run: run["interactions"])
    if not runs:
        return []
    beam = next(" ".join(d.get("beam_args", [])) for n, d in files.items()
                if n.startswith(COST_CURVE_PREFIX) and d.get("runs") and d["runs"][-1] is runs[-1])
    lines = ["### Cost curve: 100K → 10M interactions (`make bench-scale`)", "",
             f"The movie generator over one {runs[-1]['items']:,}-item catalogue, users growing with the data "
             f"(interactions / 50), `--model {runs[-1].get('model', 'auto')}`, user-time split (10 % eval, 10 % "
             f"validation); each size a fresh `recsys run` (LocalDagRunner, Beam `{beam}` at the larger sizes, what "
             "`recsys run` picks by input size). Wall seconds and peak resident memory of the whole process tree "
             "(the runner and its Beam workers) while each component ran; the reference for each ratio is the "
             "previous size in the same table.", ""]
    components = list(dict.fromkeys(c for run in runs for c in run["components"]))
    header = ["component"] + [f"{run['interactions']:,}: s / peak MB" for run in runs]
    rows = []
    for c in components:
        if max(run["components"].get(c, {}).get("wall_s") or 0 for run in runs) < 0.5:
            continue
        rows.append([c] + [f"{run['components'][c]['wall_s']} / {run['components'][c].get('peak_rss_mb')}"
                           if c in run["components"] else "–" for run in runs])
    rows.append(["**pipeline**"] + [f"{run['pipeline_wall_s']} / {run['peak_rss_mb']}" for run in runs])
    lines += _table(header, rows)
    lines.append("")
    ratio_rows = []
    for small, large in zip(runs, runs[1:]):
        factor = large["interactions"] / small["interactions"]
        ratio_rows.append([f"{small['interactions']:,} → {large['interactions']:,} ({factor:.0f}x data)",
                           f"{large['pipeline_wall_s'] / small['pipeline_wall_s']:.2f}",
                           f"{large['peak_rss_mb'] / small['peak_rss_mb']:.2f}"])
    lines += _table(["step", "time ratio", "peak memory ratio"], ratio_rows)
    lines += ["", "Peak memory is the DirectRunner's: its runner process keeps each shuffle's input (ExampleGen's "
              "spread records and per-user timestamps, Transform's analyzer inputs) in its own memory, so it grows with "
              "the data; on Dataflow, Flink or Spark the shuffles leave the machine (README, Sizing).", ""]
    largest = runs[-1]
    summary.append([f"pipeline at {largest['interactions']:,} interactions, peak RSS (process tree)",
                    f"{largest['peak_rss_mb'] / 1024:.1f} GB", f"budget {COST_CURVE_RSS_TARGET_MB / 1024:.0f} GB",
                    f"{largest['peak_rss_mb'] / COST_CURVE_RSS_TARGET_MB:.3f}", "< 12 GB",
                    _met(largest["peak_rss_mb"] < COST_CURVE_RSS_TARGET_MB)])
    if len(runs) >= 2:
        small = runs[-2]
        factor = largest["interactions"] / small["interactions"]
        ratio = largest["pipeline_wall_s"] / small["pipeline_wall_s"]
        summary.append([f"pipeline time {small['interactions']:,} → {largest['interactions']:,} interactions",
                        f"{largest['pipeline_wall_s']} s", f"{small['interactions']:,}: {small['pipeline_wall_s']} s",
                        f"{ratio:.2f}", f"<= {factor:.0f} (linear)", _met(ratio <= factor)])
    return lines


def other_section(files: Dict[str, Dict], summary: List[List], rel: str) -> List[str]:
    lines = []
    for name, data in files.items():
        if name.startswith("quality") and data.get("rows"):
            lines += quality_section(name, data, summary, rel)
    return lines


def build(results_dir: str, out: str, started_at: Optional[float] = None) -> str:
    files = _load(results_dir)
    recorded = files.get("bench_run.json", {}).get("started_at") if started_at is None else None
    rel = os.path.relpath(results_dir, os.path.dirname(os.path.abspath(out)) or ".")
    plots = Plots(results_dir)
    summary: List[List] = []
    body: List[str] = []
    facts = next((d["machine"] for d in files.values() if d.get("machine")), None) or common.machine()
    if "training_throughput.json" in files:
        body += training_section(files["training_throughput.json"], plots, summary, rel)
    pipeline_files = {n: d for n, d in files.items()
                      if n.startswith("pipeline_scale") and not n.startswith(COST_CURVE_PREFIX)}
    if pipeline_files:
        body += pipeline_section(pipeline_files, started_at or recorded, plots, summary, rel)
    if "serving_latency.json" in files:
        body += serving_section(files["serving_latency.json"], plots, summary, rel)
    if "serving_connections.json" in files:
        body += connections_section(files["serving_connections.json"], summary)
    if "recommend_scaling.json" in files:
        body += scaling_section(files["recommend_scaling.json"], plots, summary, rel)
    for name, data in files.items():  # recommend_scaling.json and focused runs (recommend_scaling_*.json)
        if name.startswith("recommend_scaling"):
            body += by_history_section(name, data, summary)
    body += big_catalogue_section(files, summary)
    body += cost_curve_section(files, summary)
    body += other_section(files, summary, rel)

    wall = None
    if started_at is not None:
        wall = round(datetime.datetime.now().timestamp() - started_at, 1)
        summary.append(["`make bench` wall time (up to this report)", f"{wall} s", f"budget {BENCH_BUDGET_S} s",
                        f"{wall / BENCH_BUDGET_S:.3f}", "< 15 min", _met(wall < BENCH_BUDGET_S)])
        common.write_json(os.path.join(results_dir, "bench_run.json"), {
            "benchmark": "make_bench", "machine": common.machine(), "started_at": started_at, "wall_s": wall,
            "budget_s": BENCH_BUDGET_S, "met": wall < BENCH_BUDGET_S})
    elif "bench_run.json" in files:
        run = files["bench_run.json"]
        summary.append(["`make bench` wall time (recorded)", f"{run['wall_s']} s", f"budget {run['budget_s']} s",
                        f"{run['wall_s'] / run['budget_s']:.3f}", "< 15 min", _met(run["met"])])

    head = ["# Benchmarks (`make bench`)", "",
            f"Machine: {facts.get('cpus')} CPUs ({facts.get('cpu_model', 'unknown model')}, L3 "
            f"{facts.get('l3_cache', '?')}), "
            f"{facts.get('memory_gb', '?')} GB RAM, {facts.get('platform')}, Python {facts.get('python')}, no GPU. "
            f"Report built {common.now_iso()}" + (f"; results of the `make bench` run started "
                                                   f"{datetime.datetime.fromtimestamp(started_at or recorded, datetime.timezone.utc).isoformat(timespec='seconds')}"
                                                   if started_at or recorded else "") + ".", "",
            "Each row is a ratio against a reference measured in the same run (named in its column or "
            "paragraph). Regenerate with `make bench` (all steps, then this report) or "
            "`.venv/bin/python bench/report.py` (the report from the JSON files alone).", "",
            "## Targets", ""]
    head += _table(["what", "measured", "reference", "ratio", "target", ""], summary)
    text = "\n".join(head + body).rstrip() + "\n"
    common.write_text(out, text)
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results-dir", default=os.path.join("bench", "results"))
    parser.add_argument("--out", default=os.path.join("bench", "report.md"))
    parser.add_argument("--started-at", type=float, default=None)
    args = parser.parse_args(argv)
    build(args.results_dir, args.out, args.started_at)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
