"""Runs the pipeline in this process with TFX's LocalDagRunner (SQLite ML Metadata)."""

from __future__ import annotations

import contextlib
import gc
import os
from typing import Dict, Iterator, Tuple

from tfx import v1 as tfx

from pipeline import beam_signatures
from pipeline.config import PipelineConfig, with_data_contract
from pipeline.pipeline import create_pipeline
from pipeline.progress import component_progress
from pipeline.run_log import library_log, log_path


def run(config: PipelineConfig, quiet: bool = False) -> Dict[str, Tuple[float, float]]:
    """Runs to completion, printing a line per component; the libraries' logging goes to a file under the output
    dir (its path printed first), and also to the terminal unless `quiet`.

    Returns each component's (start, end) in time.monotonic() seconds, for benchmarks.
    """
    os.makedirs(config.output_dir, exist_ok=True)
    beam_signatures.install()  # ~9 % of a run went to Beam re-inspecting the same functions
    if config.contract is None:  # the data root's reviewed contract, or inferred and written beside the data
        config, _ = with_data_contract(config)
    pipeline = create_pipeline(config)
    with library_log(log_path(config.output_dir, config.pipeline_name), verbose=not quiet) as path:
        print(f"library log: {path}", flush=True)
        with component_progress(len(pipeline.components)) as progress, long_lived_objects_frozen():
            tfx.orchestration.LocalDagRunner().run(pipeline)
    return progress.windows


@contextlib.contextmanager
def long_lived_objects_frozen() -> Iterator[None]:
    """Every component runs in this process beside ~1M objects of TensorFlow, TFX and Beam that live until it ends;
    each full collection walked them all (0.65 s, once or more per component). Frozen, a full collection walks only
    what the run itself allocates: on a 7-day window a warm Trainer went 7.0 -> 6.2 s, Transform 17.5 -> 15.3 s and
    the RankingGate 6.3 -> 4.0 s, for 0.44 s spent here. Collected first, so no garbage is frozen; thawed at the end,
    so a process that runs the pipeline again (the replay benchmark) can still free them."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
