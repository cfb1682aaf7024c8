"""What the last pipeline run decided, read back from ML Metadata, the ranking gate's report and TFMA's output."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional

import tensorflow_model_analysis as tfma
from ml_metadata import metadata_store
from tfx import v1 as tfx

from components.ranking_gate import OVERALL, read_report
from pipeline import lineage, metadata
from pipeline.config import PipelineConfig
from pipeline.pipeline import RMSE


@dataclasses.dataclass(frozen=True)
class RunSummary:
    blessed: bool
    metrics: Dict[str, float]
    failures: List[str]
    pushed_to: Optional[str]
    ranking: Optional[Dict[str, Any]] = None  # the ranking gate's report (components/ranking_gate.py)

    def describe(self) -> str:
        lines = []
        if self.metrics:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(self.metrics.items()) if k != "example_count")
            lines.append(f"evaluation: {shown}" + (f" on {int(self.metrics['example_count'])} examples"
                                                    if "example_count" in self.metrics else ""))
        if self.ranking:
            lines.append(describe_ranking(self.ranking))
        if self.blessed:
            lines.append(f"model blessed and pushed to {self.pushed_to}")
        return "\n".join(lines)

    def refusal(self, output_dir: str) -> str:
        """The model gate's verdict on an unblessed model, in one line: why, and where the full report is."""
        return ("model NOT blessed, nothing pushed: " + ("; ".join(self.failures) or "see the Evaluator output")
                + f" (`recsys runs show --output-dir {output_dir}` writes the report; the gate's thresholds are "
                  f"recsys run's --min-lift-over-popular, --max-recall-regression, --rmse-threshold)")


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


def describe_ranking(report: Dict[str, Any]) -> str:
    """One line: the model's Recall/NDCG@k on the eval split beside most popular (and the baseline)."""
    k, overall = report["k"], report["model"][OVERALL]
    popular = report["most_popular"][OVERALL]
    line = (f"ranking on eval ({overall['users']} users): recall@{k} {overall['recall']:.4f}, ndcg@{k} "
            f"{overall['ndcg']:.4f}; most popular {popular['recall']:.4f}, {popular['ndcg']:.4f}")
    if report.get("baseline"):
        base = report["baseline"][OVERALL]
        line += f"; latest blessed model {base['recall']:.4f}, {base['ndcg']:.4f}"
    if not report.get("gated_on_ranking", True):
        line += " (reported, not gating this rating model)"
    return line


def run_failures(evaluation_uri: Optional[str], ranking: Optional[Dict[str, Any]]) -> List[str]:
    """TFMA's threshold failures, then the ranking gate's."""
    failures = threshold_failures(evaluation_uri) if evaluation_uri else []
    return failures + [f for f in (ranking or {}).get("failures", []) if not (failures and "RMSE gate" in f)]


def latest(config: PipelineConfig) -> RunSummary:
    store = metadata_store.MetadataStore(metadata.connection_config(config))
    runs = lineage.evaluated_runs(config)
    pushed = _latest(store, tfx.types.standard_artifacts.PushedModel.TYPE_NAME)
    metrics: Dict[str, float] = {}
    failures: List[str] = []
    ranking = None
    is_blessed = False
    if runs:
        run = runs[-1]
        ranking = read_report(run.ranking_blessing_uri) if run.ranking_blessing_uri else None
        if run.evaluation_uri:
            metrics = metrics_by_slice(run.evaluation_uri).get("overall", {})
        failures = run_failures(run.evaluation_uri, ranking)
        is_blessed = run.blessed
    pushed_to = None
    if pushed is not None and pushed.custom_properties["pushed"].int_value == 1:
        pushed_to = pushed.custom_properties["pushed_destination"].string_value
    return RunSummary(blessed=is_blessed and pushed_to is not None, metrics=metrics,
                      failures=failures, pushed_to=pushed_to, ranking=ranking)


__all__ = ["RunSummary", "latest", "metrics_by_slice", "threshold_failures", "run_failures", "describe_ranking",
           "RMSE"]
