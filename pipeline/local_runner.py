"""Runs the pipeline in this process with TFX's LocalDagRunner (SQLite ML Metadata)."""

from __future__ import annotations

import os

from tfx import v1 as tfx

from pipeline.config import PipelineConfig
from pipeline.pipeline import create_pipeline


def run(config: PipelineConfig) -> None:
    os.makedirs(config.output_dir, exist_ok=True)
    tfx.orchestration.LocalDagRunner().run(create_pipeline(config))
