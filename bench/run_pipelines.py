"""The real pipeline at 100K and 1M interactions for `make bench`, through bench/pipeline_scale.py's run_size.

Usage: .venv/bin/python bench/run_pipelines.py [--sizes 100000 1000000] [--epochs 10 2] [--train-buckets 8 18]
       [--work-dir output/bench] [--results-dir bench/results] [--beam-arg=ARG ...]

Unlike pipeline_scale.py's own main (a temporary directory), the outputs are kept under
--work-dir/out_<size>, so the later benchmarks read them: training_throughput.py the 100K run's
Transform output, serving_latency.py its pushed model. Each size is run in a fresh directory (no
baseline model, no cache) and written to <results-dir>/pipeline_scale_<100k|1m>.json in
pipeline_scale.py's format plus the settings used, the epochs the Trainer actually trained (early
stopping may stop before --epochs) and their durations, so training time can be compared per epoch.
The 100K sample runs exactly as `recsys run` would (the run the 3-minute target is about). 1M runs
with 2 epochs (one steady epoch to time) instead of 10 and an 18:1:1 train/validation/eval split (5 % eval) instead
of 8:1:1: at 9:1 (before the validation split) its Beam components alone took 6-7 minutes on 2 cores (the Evaluator 110-140 s of them),
and `make bench` as a whole has 15.

Beam settings are what `recsys run` picks for the input (pipeline.config.default_beam_args on the
size of interactions.csv: in-memory for the sample, every core from 16 MiB) unless --beam-arg is given.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import shutil
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402
from bench import pipeline_scale  # noqa: E402
from components import features as F  # noqa: E402
from data import synthetic  # noqa: E402
from pipeline import config as C  # noqa: E402


def size_label(n: int) -> str:
    return f"{n // 1_000_000}m" if n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)


def beam_args_for(num_ratings: int, workdir: str) -> tuple:
    """What `recsys run` would choose for this input, from the size a small sample of the same shape has
    per rating (generating the full input twice would cost seconds at 1M)."""
    probe = os.path.join(workdir, "beam_probe")
    sample = 20_000
    synthetic.generate(probe, synthetic.SampleSpec(num_ratings=sample, num_users=max(200, num_ratings // 50),
                                                   num_items=max(200, num_ratings // 50)))
    estimate = os.path.getsize(os.path.join(probe, F.INTERACTIONS_FILE)) * num_ratings // sample
    shutil.rmtree(probe, ignore_errors=True)
    return C.default_beam_args(estimate, os.cpu_count() or 1), estimate


@contextlib.contextmanager
def config_overrides(**fields):
    """pipeline_scale.run_size builds its PipelineConfig itself; this adds fields to it for one run, so the
    run stays pipeline_scale's own code (no copy of it here)."""
    if not fields:
        yield
        return
    original = pipeline_scale.PipelineConfig
    pipeline_scale.PipelineConfig = functools.partial(original, **fields)
    try:
        yield
    finally:
        pipeline_scale.PipelineConfig = original


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--epochs", type=int, nargs="+", default=[10, 2],
                        help="epochs per size, in the order of --sizes (the last one repeats)")
    parser.add_argument("--train-buckets", type=int, nargs="+", default=[8, 18],
                        help="train hash buckets per size against 1 validation and 1 eval bucket (the pipeline's "
                             "default is 8: 10%% eval), in the order of --sizes (the last one repeats)")
    parser.add_argument("--work-dir", default=os.path.join("output", "bench"))
    parser.add_argument("--results-dir", default=os.path.join("bench", "results"))
    parser.add_argument("--beam-arg", action="append", default=[])
    parser.add_argument("--items", type=int, default=None,
                        help="a fixed catalogue at every size (default: items grow as users, size / 50)")
    parser.add_argument("--model", default=None, help="--model for the Trainer (default: the pipeline's, auto)")
    parser.add_argument("--label", default="",
                        help="results go to pipeline_scale_<label>_<size>.json (default pipeline_scale_<size>.json)")
    args = parser.parse_args(argv)
    os.makedirs(args.work_dir, exist_ok=True)
    for i, size in enumerate(args.sizes):
        epochs = args.epochs[min(i, len(args.epochs) - 1)]
        buckets = args.train_buckets[min(i, len(args.train_buckets) - 1)]
        overrides = {} if buckets == C.PipelineConfig.train_hash_buckets else {"train_hash_buckets": buckets}
        for stale in (f"data_{size}", f"out_{size}"):  # a fresh run: no baseline model, no old versions
            shutil.rmtree(os.path.join(args.work_dir, stale), ignore_errors=True)
        if args.beam_arg:
            beam_args, input_bytes = tuple(args.beam_arg), None
        else:
            beam_args, input_bytes = beam_args_for(size, args.work_dir)
        print(f"== {size} interactions, {epochs} epochs, beam {' '.join(beam_args)}, "
              f"train:validation:eval buckets {buckets}:1:1", flush=True)
        with config_overrides(**overrides):
            run = pipeline_scale.run_size(size, args.work_dir, list(beam_args), epochs, num_items=args.items,
                                          model=args.model)
        run["config_overrides"] = overrides
        run["model"] = args.model or "auto"
        run["eval_fraction"] = round(1 / (buckets + 2), 4)
        output_dir = os.path.join(args.work_dir, f"out_{size}")
        run["epochs_requested"] = epochs
        run.update(common.trainer_epochs(output_dir))
        run["interactions_csv_bytes_estimated"] = input_bytes
        run["interactions_csv_bytes"] = os.path.getsize(os.path.join(args.work_dir, f"data_{size}", F.INTERACTIONS_FILE))
        run["output_dir"] = output_dir
        run["serving_dir"] = os.path.join(output_dir, "serving", F.DEFAULT_MODEL_NAME)
        result = {"cpus": os.cpu_count(), "beam_args": list(beam_args), "machine": common.machine(),
                  "source": "bench/run_pipelines.py (make bench)", "runs": [run]}
        prefix = f"pipeline_scale_{args.label}_" if args.label else "pipeline_scale_"
        out = os.path.join(args.results_dir, f"{prefix}{size_label(size)}.json")
        common.write_json(out, result)
        print(f"   pipeline {run['pipeline_wall_s']} s (Trainer {run['components'].get('Trainer', {}).get('wall_s')} s, "
              f"{run['epochs_trained']} epochs); wrote {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
