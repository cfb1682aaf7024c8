"""Pipeline wall time and peak memory per component at growing data sizes (a benchmark, not a test).

Usage: .venv/bin/python bench/pipeline_scale.py [--sizes 100000 1000000] [--out bench/results/pipeline_scale.json]
       [--beam-arg=--direct_running_mode=multi_processing --beam-arg=--direct_num_workers=2]

For each size it generates a synthetic dataset, runs the real pipeline with the LocalDagRunner, and
records each component's wall time and the peak resident memory of this process and its children
(Beam workers) while the component ran. "orchestrator overhead" is the run's wall time minus the sum
of the component windows (TFX logs a component as running before its driver and as finished after
publishing to ML Metadata, so that work is inside the windows; what is left is the runner's own loop).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional, Tuple

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import psutil  # noqa: E402

from bench import common  # noqa: E402
from components.training_config import TrainingConfig  # noqa: E402
from data import synthetic  # noqa: E402
from pipeline import local_runner  # noqa: E402
from pipeline.config import PipelineConfig  # noqa: E402


class RssSampler:
    """Samples the resident memory of this process tree every `interval` seconds on a thread."""

    def __init__(self, interval: float = 0.25):
        self.interval, self.samples = interval, []  # (time.monotonic(), bytes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            self.samples.append((time.monotonic(), total))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def peak(self, start: float, end: float):
        """Peak bytes in [start, end], or None when the window was shorter than one sample."""
        inside = [rss for t, rss in self.samples if start <= t <= end]
        return max(inside) if inside else None


def run_size(num_ratings: int, workdir: str, beam_args: List[str], epochs: int, num_items: Optional[int] = None,
             model: Optional[str] = None) -> Dict:
    """One fresh run: users (and, unless `num_items` fixes the catalogue, items) grow as num_ratings / 50."""
    spec = synthetic.SampleSpec(num_ratings=num_ratings, num_users=max(200, num_ratings // 50),
                                num_items=num_items or max(200, num_ratings // 50))
    data = os.path.join(workdir, f"data_{num_ratings}")
    started = time.monotonic()
    synthetic.generate(data, spec)
    generate_s = time.monotonic() - started
    config = PipelineConfig(data_root=data, output_dir=os.path.join(workdir, f"out_{num_ratings}"),
                            training=TrainingConfig(epochs=epochs, **({"model": model} if model else {})),
                            **({"beam_args": tuple(beam_args)} if beam_args else {}))
    with RssSampler() as sampler:
        started = time.monotonic()
        windows: Dict[str, Tuple[float, float]] = local_runner.run(config, quiet=True)
        total = time.monotonic() - started
    components = {
        name: {"wall_s": round(end - start, 2),
               "peak_rss_mb": None if sampler.peak(start, end) is None else round(sampler.peak(start, end) / 2**20, 1)}
        for name, (start, end) in sorted(windows.items(), key=lambda kv: kv[1][0])
    }
    return {
        "interactions": num_ratings, "users": spec.num_users, "items": spec.num_items,
        "generate_s": round(generate_s, 2), "pipeline_wall_s": round(total, 2),
        "orchestrator_overhead_s": round(total - sum(end - start for start, end in windows.values()), 2),
        "peak_rss_mb": round(max(rss for _, rss in sampler.samples) / 2**20, 1),
        "components": components,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--epochs", type=int, default=TrainingConfig.epochs)
    parser.add_argument("--beam-arg", action="append", default=[])
    parser.add_argument("--out", default=os.path.join("bench", "results", "pipeline_scale.json"))
    args = parser.parse_args()
    results = {"cpus": os.cpu_count(), "beam_args": args.beam_arg or list(PipelineConfig.beam_args), "runs": []}
    with tempfile.TemporaryDirectory(prefix="recsys-bench-") as workdir:
        for size in args.sizes:
            print(f"== {size} interactions", flush=True)
            results["runs"].append(run_size(size, workdir, args.beam_arg, args.epochs))
            print(json.dumps(results["runs"][-1], indent=2), flush=True)
    common.write_json(args.out, results)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
