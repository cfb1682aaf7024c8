"""Runs the pipeline in this process with TFX's LocalDagRunner (SQLite ML Metadata)."""

from __future__ import annotations

import os
from typing import Dict, Tuple

from tfx import v1 as tfx

from pipeline.config import PipelineConfig, with_data_contract
from pipeline.pipeline import create_pipeline
from pipeline.progress import component_progress


def run(config: PipelineConfig, quiet: bool = False) -> Dict[str, Tuple[float, float]]:
    """Runs to completion, printing a line per component; `quiet` also hides TFX's warnings.

    Returns each component's (start, end) in time.monotonic() seconds, for benchmarks.
    """
    os.makedirs(config.output_dir, exist_ok=True)
    if config.contract is None:  # the data root's reviewed contract, or inferred and written beside the data
        config, _ = with_data_contract(config)
    pipeline = create_pipeline(config)
    with component_progress(len(pipeline.components), quiet=quiet) as progress:
        tfx.orchestration.LocalDagRunner().run(pipeline)
    return progress.windows
