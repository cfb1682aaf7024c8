"""What the last pipeline run decided, read back from ML Metadata and the Evaluator's output."""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional

import tensorflow_model_analysis as tfma
from ml_metadata import metadata_store
from tfx import v1 as tfx

from pipeline import metadata
from pipeline.config import PipelineConfig
from pipeline.pipeline import RMSE


@dataclasses.dataclass(frozen=True)
class RunSummary:
    blessed: bool
    metrics: Dict[str, float]
    failures: List[str]
    pushed_to: Optional[str]

    def describe(self) -> str:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(self.metrics.items()) if k != "example_count")
        lines = [f"evaluation: {shown}" + (f" on {int(self.metrics['example_count'])} examples"
                                            if "example_count" in self.metrics else "")]
        if self.blessed:
            lines.append(f"model blessed and pushed to {self.pushed_to}")
        else:
            lines.append("model NOT blessed, nothing pushed: " + ("; ".join(self.failures) or "see the Evaluator output"))
        return "\n".join(lines)


def _latest(store: metadata_store.MetadataStore, type_name: str):
    artifacts = store.get_artifacts_by_type(type_name)
    return max(artifacts, key=lambda a: a.id) if artifacts else None


def _slice_name(slice_key) -> str:
    """'overall' or 'feature=value' (TFMA's slice key, flattened)."""
    parts = []
    for single in slice_key.single_slice_keys:
        value = single.bytes_value.decode() if single.HasField("bytes_value") else (
            single.int64_value if single.HasField("int64_value") else single.float_value)
        parts.append(f"{single.column}={value}")
    return ", ".join(parts) or "overall"


def metrics_by_slice(evaluation_uri: str) -> Dict[str, Dict[str, float]]:
    """slice name -> metric name -> value, for the candidate model (baseline diffs left out)."""
    out: Dict[str, Dict[str, float]] = {}
    for slice_metrics in tfma.load_metrics(evaluation_uri):
        values = out.setdefault(_slice_name(slice_metrics.slice_key), {})
        for key in slice_metrics.metric_keys_and_values:
            if not key.key.is_diff and key.value.HasField("double_value") and not key.key.model_name.endswith(
                    "baseline"):
                values[key.key.name] = key.value.double_value.value
    return out


def threshold_failures(evaluation_uri: str) -> List[str]:
    result = tfma.load_validation_result(evaluation_uri)
    return [f"{_slice_name(s.slice_key)}: {f.metric_key.name}: {f.message}"
            for s in result.metric_validations_per_slice for f in s.failures]


def latest(config: PipelineConfig) -> RunSummary:
    store = metadata_store.MetadataStore(metadata.connection_config(config))
    evaluation = _latest(store, tfx.types.standard_artifacts.ModelEvaluation.TYPE_NAME)
    blessing = _latest(store, tfx.types.standard_artifacts.ModelBlessing.TYPE_NAME)
    pushed = _latest(store, tfx.types.standard_artifacts.PushedModel.TYPE_NAME)
    metrics: Dict[str, float] = {}
    failures: List[str] = []
    if evaluation is not None:
        metrics = metrics_by_slice(evaluation.uri).get("overall", {})
        failures = threshold_failures(evaluation.uri)
    is_blessed = bool(blessing and blessing.custom_properties["blessed"].int_value == 1)
    pushed_to = None
    if pushed is not None and pushed.custom_properties["pushed"].int_value == 1:
        pushed_to = pushed.custom_properties["pushed_destination"].string_value
    return RunSummary(blessed=is_blessed and pushed_to is not None, metrics=metrics,
                      failures=failures, pushed_to=pushed_to)


__all__ = ["RunSummary", "latest", "metrics_by_slice", "threshold_failures", "RMSE"]
