"""Runs the pipeline in this process with TFX's LocalDagRunner (SQLite ML Metadata)."""

from __future__ import annotations

import os

from tfx import v1 as tfx

from pipeline.config import PipelineConfig
from pipeline.pipeline import create_pipeline
from pipeline.progress import component_progress


def run(config: PipelineConfig, show_progress: bool = True) -> None:
    os.makedirs(config.output_dir, exist_ok=True)
    pipeline = create_pipeline(config)
    if not show_progress:
        tfx.orchestration.LocalDagRunner().run(pipeline)
        return
    with component_progress(len(pipeline.components)):
        tfx.orchestration.LocalDagRunner().run(pipeline)
