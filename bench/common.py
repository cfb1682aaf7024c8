"""What the benchmarks share: atomic JSON results, machine facts, latency statistics, and the
artifacts of a finished pipeline run (Transform's output, the Trainer's run directory)."""

from __future__ import annotations

import datetime
import glob
import json
import os
import platform
import statistics
import time
from typing import Callable, Dict, List, Optional, Tuple

from components.atomic_io import atomic_write

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(REPO_ROOT, "bench", "results")
TRANSFORM_TYPE = "Transform"  # the component id in pipeline/pipeline.py (its directory under the pipeline root)


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def machine() -> Dict:
    """Facts the numbers depend on, stored with every result."""
    facts = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
             "generated_at": now_iso()}
    try:
        import psutil

        facts["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:  # pragma: no cover
        pass
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            facts["cpu_model"] = names[0]
    except OSError:  # pragma: no cover
        pass
    try:
        with open("/sys/devices/system/cpu/cpu0/cache/index3/size") as f:
            facts["l3_cache"] = f.read().strip()
    except OSError:
        pass
    return facts


def write_json(path: str, payload: Dict) -> None:
    """Atomically: a temp file in the same directory, then os.replace (readers never see half a file)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, json.dumps(payload, indent=2) + "\n")


def write_text(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, text)


def latency_stats(call: Callable[[], object], requests: int, warmup: int = 10) -> Dict[str, float]:
    """Sequential calls (concurrency 1): p50/p99 latency in ms and throughput."""
    for _ in range(warmup):
        call()
    latencies: List[float] = []
    started = time.perf_counter()
    for _ in range(requests):
        t = time.perf_counter()
        call()
        latencies.append((time.perf_counter() - t) * 1000)
    wall = time.perf_counter() - started
    latencies.sort()
    return {"p50_ms": round(statistics.median(latencies), 3),
            "p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))], 3),
            "throughput_rps": round(len(latencies) / wall, 1), "requests": len(latencies)}


# --- a finished pipeline run ------------------------------------------------------------------------------


def _newest_numbered(pattern: str) -> Optional[str]:
    """The match of `pattern` whose last path component is the largest integer (TFX's execution ids)."""
    import tensorflow as tf

    numbered = [p.rstrip("/") for p in tf.io.gfile.glob(pattern) if os.path.basename(p.rstrip("/")).isdigit()]
    return max(numbered, key=lambda p: int(os.path.basename(p)), default=None)


def _from_metadata(output_dir: str) -> Optional[Tuple[object, str]]:
    """(Examples artifact, transform graph URI) of the newest completed Transform execution in ML Metadata."""
    path = os.path.join(output_dir, "metadata.sqlite")
    if not os.path.exists(path):
        return None
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2
    from tfx.types import artifact_utils

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    store = metadata_store.MetadataStore(config)
    transform_types = [t for t in store.get_execution_types() if t.name.endswith(".Transform")]
    executions = [e for t in transform_types for e in store.get_executions_by_type(t.name)
                  if e.last_known_state == metadata_store_pb2.Execution.COMPLETE]
    if not executions:
        return None
    newest = max(executions, key=lambda e: e.id)
    outputs = {e.path.steps[0].key: e.artifact_id for e in store.get_events_by_execution_ids([newest.id])
               if e.type == metadata_store_pb2.Event.OUTPUT and e.path.steps}
    if "transformed_examples" not in outputs or "transform_graph" not in outputs:
        return None
    by_id = {a.id: a for a in store.get_artifacts_by_id([outputs["transformed_examples"], outputs["transform_graph"]])}
    examples, graph = by_id[outputs["transformed_examples"]], by_id[outputs["transform_graph"]]
    [examples_type] = store.get_artifact_types_by_id([examples.type_id])
    return artifact_utils.deserialize_artifact(examples_type, examples), graph.uri


def transform_output(output_dir: str):
    """(Examples artifact of the transformed examples, transform graph URI) of a pipeline output directory.

    ML Metadata (<output_dir>/metadata.sqlite) first: it knows which Transform execution completed last.
    Without it (a copied pipeline root, a remote store) the newest execution directory under
    <pipeline_root>/Transform/ is used.
    """
    found = None
    try:
        found = _from_metadata(output_dir)
    except Exception as e:  # an unreadable or foreign store: the directory layout still tells
        print(f"ML Metadata not usable ({type(e).__name__}: {e}); globbing the pipeline root")
    if found is not None:
        return found
    from tfx.types import artifact_utils, standard_artifacts

    root = os.path.join(output_dir, "pipeline_root", TRANSFORM_TYPE)
    examples_uri = _newest_numbered(os.path.join(root, "transformed_examples", "*"))
    graph_uri = _newest_numbered(os.path.join(root, "transform_graph", "*"))
    if not examples_uri or not graph_uri:
        raise FileNotFoundError(f"no Transform output under {root}: run the pipeline first")
    examples = standard_artifacts.Examples()
    examples.uri = examples_uri
    examples.split_names = artifact_utils.encode_split_names(["train", "eval"])
    return examples, graph_uri


def trainer_epochs(output_dir: str) -> Dict:
    """Epochs the newest Trainer run trained and how long each took, from its TensorBoard log.

    Early stopping may stop before the epochs asked for. Keras writes one `epoch_loss` event at the end
    of every epoch (after its validation pass), so the gaps between those events are epoch durations
    without the Trainer's fixed work (reading the catalogue, building, exporting); the first epoch has
    no start event and also holds one-time tracing, so `steady_epoch_s` is the median of the later gaps.
    """
    import tensorflow as tf

    run_dir = _newest_numbered(os.path.join(output_dir, "pipeline_root", "Trainer", "model_run", "*"))
    ends: Dict[int, float] = {}
    if run_dir is not None:
        for path in tf.io.gfile.glob(os.path.join(run_dir, "train", "events.out.tfevents.*")):
            for event in tf.compat.v1.train.summary_iterator(path):
                if any(v.tag == "epoch_loss" for v in event.summary.value):
                    ends[event.step] = event.wall_time
    times = [ends[k] for k in sorted(ends)]
    gaps = [round(b - a, 3) for a, b in zip(times, times[1:])]
    return {"epochs_trained": len(times) or None, "epoch_s_after_first": gaps,
            "steady_epoch_s": round(statistics.median(gaps), 3) if gaps else None}


def results_files(results_dir: str = RESULTS_DIR) -> List[str]:
    return sorted(glob.glob(os.path.join(results_dir, "*.json")))
