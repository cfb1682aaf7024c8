"""Compiles the same pipeline for Kubeflow Pipelines v2 (also what Vertex AI Pipelines runs)."""

from __future__ import annotations

import dataclasses
import os

from tfx import v1 as tfx

from components.atomic_io import atomic_path
from pipeline.config import IMAGE_WORKDIR, KUBEFLOW, PipelineConfig  # noqa: F401 (IMAGE_WORKDIR re-exported)
from pipeline.pipeline import create_pipeline, runtime_parameter_defaults


def compile_pipeline(config: PipelineConfig, image: str, output_path: str) -> str:
    """Writes the KFP v2 PipelineJob JSON to `output_path` (temp file, then rename) and returns the path."""
    config = dataclasses.replace(config, orchestrator=KUBEFLOW)
    output_dir, filename = os.path.split(os.path.abspath(output_path))
    os.makedirs(output_dir, exist_ok=True)
    final = os.path.join(output_dir, filename)
    with atomic_path(final) as tmp:  # the runner writes the temp file; it replaces `final` once complete
        runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
            config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
            output_dir=output_dir,
            output_filename=os.path.basename(tmp),
        )
        runner.run(create_pipeline(config), parameter_values=runtime_parameter_defaults(config), write_out=True)
    return final
