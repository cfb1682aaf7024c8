"""The in-process part of `make bench`: pipelines, training throughput, recommend scaling, in one process.

Usage: .venv/bin/python bench/run_all.py [--work-dir output/bench] [--results-dir bench/results]

Runs, in order, what each script's main() would run from the command line:
  1. bench/run_pipelines.py      --sizes 100000 1000000 --epochs 10 2 --train-buckets 8 18
  2. bench/training_throughput.py --pipeline-output <work>/out_100000 --repeats 3
  3. bench/recommend_scaling.py  --budget-s 1
One process instead of three saves what every process pays before measuring anything on this 2-core
machine: ~15 s of importing TensorFlow and TFX, and ~17 s the first Keras model takes to start
training (the pipeline's Trainer has paid it by step 2). `make bench` then runs
bench/serving_latency.py on the 100K run's pushed model and bench/report.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import recommend_scaling, run_pipelines, training_throughput  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", default=os.path.join("output", "bench"))
    parser.add_argument("--results-dir", default=os.path.join("bench", "results"))
    args = parser.parse_args(argv)
    results = args.results_dir
    steps = [
        ("run_pipelines", run_pipelines.main, [
            "--sizes", "100000", "1000000", "--epochs", "10", "2", "--train-buckets", "8", "18",
            "--work-dir", args.work_dir,
            "--results-dir", results]),
        ("training_throughput", training_throughput.main, [
            "--pipeline-output", os.path.join(args.work_dir, "out_100000"), "--repeats", "3",
            "--out", os.path.join(results, "training_throughput.json")]),
        ("recommend_scaling", recommend_scaling.main, [
            "--work-dir", os.path.join(args.work_dir, "scaling"), "--budget-s", "1",
            "--pipeline-results", os.path.join(results, "pipeline_scale_100k.json"),
            os.path.join(results, "pipeline_scale_1m.json"),
            "--out", os.path.join(results, "recommend_scaling.json")]),
    ]
    for name, step, step_args in steps:
        started = time.monotonic()
        print(f"==> bench/{name}.py {' '.join(step_args)}", flush=True)
        status = step(step_args)
        print(f"==> {name} done in {time.monotonic() - started:.0f} s", flush=True)
        if status:
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main())
