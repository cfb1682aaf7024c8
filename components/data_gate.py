"""Stops the run when the data broke the schema, drifted from the previous run's, or skewed from what serving was
asked (the request log: components/serving_skew.py), so bad data never reaches Transform.

ExampleValidator only records anomalies, and it never sees the previous run's statistics; this
component turns its anomalies, and the schema's drift comparators applied between the previous
run's train statistics and this run's, into a failed execution with one message naming each
feature. The pipeline makes Transform run after it. (No `from __future__ import annotations` here:
TFX reads the component signature's real types.)
"""


import math
from typing import Dict, List, Mapping, Optional, Tuple

import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2
from tfx import v1 as tfx
from tfx.components.example_validator.executor import DEFAULT_FILE_NAME
from tfx.components.statistics_gen import stats_artifact_utils
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import io_utils

from components import features as F
from components import serving_skew

DRIFT_PREFIX = "drift vs the previous run"
# Reason types the schema's comparators produce; every other reason is ExampleValidator's business.
_COMPARATOR_TYPE_PREFIX = "COMPARATOR_"
# A side without the feature is not drift: a feature new since the previous run has nothing to be
# compared with, and a feature missing now is ExampleValidator's (presence) finding.
_NOT_COMPARED = ("COMPARATOR_CONTROL_DATA_MISSING", "COMPARATOR_TREATMENT_DATA_MISSING")


class DataValidationError(RuntimeError):
    """The data broke the schema contract; the message lists every anomaly."""


# TFDV's range reasons: the schema's domain says which values are allowed, the statistics how many are not.
_RANGE_REASONS = ("FLOAT_TYPE_BIG_FLOAT", "FLOAT_TYPE_SMALL_FLOAT", "INT_TYPE_BIG_INT", "INT_TYPE_SMALL_INT")
_TFDV_PRECISION_NOTE = "(upto six significant digits)"


def _long_description(info: anomalies_pb2.AnomalyInfo) -> str:
    """Each reason's own description ("Unexpectedly high value: 6.5>5"), never the summary "Multiple errors"."""
    texts = [reason.description or reason.short_description for reason in info.reason]
    texts = [text.replace(_TFDV_PRECISION_NOTE, "").strip() for text in texts if text]
    return "; ".join(dict.fromkeys(texts)) or info.description or info.short_description


def _domain(schema: Optional[schema_pb2.Schema], name: str) -> Optional[Tuple[float, float]]:
    for feature in schema.feature if schema is not None else ():
        if feature.name == name:
            domain = feature.float_domain if feature.HasField("float_domain") else (
                feature.int_domain if feature.HasField("int_domain") else None)
            if domain is None:
                return None
            return (domain.min if domain.HasField("min") else -math.inf,
                    domain.max if domain.HasField("max") else math.inf)
    return None


def _share_outside(statistics: Optional[statistics_pb2.DatasetFeatureStatisticsList], name: str,
                   low: float, high: float) -> float:
    """A lower bound on the share of the feature's values outside [low, high]: the standard histogram's buckets
    that lie entirely outside (a bucket straddling a bound may hold allowed values too)."""
    for dataset in statistics.datasets if statistics is not None else ():
        for feature in dataset.features:
            if feature.path.step[-1:] != [name] or not feature.HasField("num_stats"):
                continue
            for histogram in feature.num_stats.histograms:
                if histogram.type != statistics_pb2.Histogram.STANDARD:
                    continue
                total = sum(b.sample_count for b in histogram.buckets)
                outside = sum(b.sample_count for b in histogram.buckets if b.low_value > high or b.high_value < low)
                return outside / total if total else 0.0
    return 0.0


def describe(anomalies: anomalies_pb2.Anomalies, split: str, schema: Optional[schema_pb2.Schema] = None,
             statistics: Optional[statistics_pb2.DatasetFeatureStatisticsList] = None) -> Dict[str, str]:
    """Feature name (or '' for the dataset) -> what is wrong with it in this split, in TFDV's long words, with the
    range the schema allows and at least how many values lie outside it for out-of-range values."""
    problems = {}
    for name, info in sorted(anomalies.anomaly_info.items()):
        text = _long_description(info)
        domain = _domain(schema, name)
        if domain is not None and set(_reason_types(info)) & set(_RANGE_REASONS):
            low, high = domain
            text += f" (the schema allows [{low:g}, {high:g}]"
            share = _share_outside(statistics, name, low, high)
            text += f"; at least {100 * share:.1f} % of the {split} values are outside)" if share else ")"
        problems[name] = text
    if anomalies.HasField("dataset_anomaly_info"):
        problems[""] = _long_description(anomalies.dataset_anomaly_info)
    return problems


def summarize(by_split: Mapping[str, Mapping[str, str]]) -> List[str]:
    """One entry per feature: the splits it broke in, and the first split's description (they say the same)."""
    splits_of: Dict[str, List[str]] = {}
    for split, problems in by_split.items():
        for name in problems:
            splits_of.setdefault(name, []).append(split)
    lines = []
    for name, splits in sorted(splits_of.items()):
        where = f"{', '.join(splits)} split{'s' if len(splits) > 1 else ''}"
        subject = f"feature '{name}' ({where})" if name else where
        lines.append(f"{subject}: {by_split[splits[0]][name]}")
    return lines


def _reason_types(info: anomalies_pb2.AnomalyInfo) -> List[str]:
    return [anomalies_pb2.AnomalyInfo.Type.Name(reason.type) for reason in info.reason]


def _comparator_reasons(info: anomalies_pb2.AnomalyInfo) -> List[str]:
    return [
        reason.description or reason.short_description
        for reason, name in zip(info.reason, _reason_types(info))
        if name.startswith(_COMPARATOR_TYPE_PREFIX) and name not in _NOT_COMPARED
    ]


def drift_problems(
    statistics: statistics_pb2.DatasetFeatureStatisticsList,
    baseline: statistics_pb2.DatasetFeatureStatisticsList,
    schema: schema_pb2.Schema,
) -> List[str]:
    """The schema's drift comparators applied between `baseline` (previous run) and `statistics`.

    Only comparator anomalies are returned: the schema's other constraints are ExampleValidator's,
    which the gate already reports. Features without a drift_comparator, or absent from either
    side, are not compared (the latter noted in one printed line).
    """
    anomalies = tfdv.validate_statistics(statistics, schema, previous_statistics=baseline)
    uncompared = sorted(
        name for name, info in anomalies.anomaly_info.items() if set(_reason_types(info)) & set(_NOT_COMPARED)
    )
    if uncompared:
        print(f"{DRIFT_PREFIX}: not compared, absent from one of the two runs: {', '.join(uncompared)}")
    problems = [
        f"{DRIFT_PREFIX}: feature '{name}': {reason}"
        for name, info in sorted(anomalies.anomaly_info.items())
        for reason in _comparator_reasons(info)
    ]
    if anomalies.HasField("dataset_anomaly_info"):
        problems.extend(f"{DRIFT_PREFIX}: {reason}" for reason in _comparator_reasons(anomalies.dataset_anomaly_info))
    return problems


def _artifact_drift(
    statistics: standard_artifacts.ExampleStatistics,
    baseline: standard_artifacts.ExampleStatistics,
    schema: standard_artifacts.Schema,
) -> List[str]:
    """Drift of the train split; nothing when the baseline is this run's own statistics or lacks the split."""
    if baseline.uri == statistics.uri:
        print(f"{DRIFT_PREFIX}: not checked, the baseline statistics are this run's own ({baseline.uri})")
        return []
    for artifact in (statistics, baseline):
        if F.TRAIN_SPLIT not in artifact_utils.decode_split_names(artifact.split_names):
            print(f"{DRIFT_PREFIX}: not checked, statistics {artifact.uri} have no '{F.TRAIN_SPLIT}' split")
            return []
    return drift_problems(
        stats_artifact_utils.load_statistics(statistics, F.TRAIN_SPLIT).proto(),
        stats_artifact_utils.load_statistics(baseline, F.TRAIN_SPLIT).proto(),
        _read_schema(schema),
    )


def _read_schema(schema: standard_artifacts.Schema) -> schema_pb2.Schema:
    return io_utils.SchemaReader().read(io_utils.get_only_uri_in_dir(artifact_utils.get_single_uri([schema])))


def _split_statistics(statistics: Optional[standard_artifacts.ExampleStatistics],
                      split: str) -> Optional[statistics_pb2.DatasetFeatureStatisticsList]:
    if statistics is None or split not in artifact_utils.decode_split_names(statistics.split_names):
        return None
    return stats_artifact_utils.load_statistics(statistics, split).proto()


@tfx.dsl.components.component
def DataGate(
    anomalies: tfx.dsl.components.InputArtifact[standard_artifacts.ExampleAnomalies],
    accepted_statistics: tfx.dsl.components.OutputArtifact[standard_artifacts.ExampleStatistics],
    statistics: tfx.dsl.components.InputArtifact[standard_artifacts.ExampleStatistics] = None,
    baseline_statistics: tfx.dsl.components.InputArtifact[standard_artifacts.ExampleStatistics] = None,
    schema: tfx.dsl.components.InputArtifact[standard_artifacts.Schema] = None,
    allow_drift: tfx.dsl.components.Parameter[bool] = False,
    serving_log: tfx.dsl.components.Parameter[str] = "",
    allow_skew: tfx.dsl.components.Parameter[bool] = False,
) -> None:
    parsed_schema = _read_schema(schema) if schema is not None else None
    by_split = {}
    for split in artifact_utils.decode_split_names(anomalies.split_names):
        path = f"{artifact_utils.get_split_uri([anomalies], split)}/{DEFAULT_FILE_NAME}"
        proto = anomalies_pb2.Anomalies.FromString(io_utils.read_bytes_file(path))
        split_statistics = _split_statistics(statistics, split) if proto.anomaly_info else None
        by_split[split] = describe(proto, split, parsed_schema, split_statistics)
    problems = summarize(by_split)
    # First run: no baseline (the resolver finds no previous statistics), so no drift check.
    if statistics is not None and baseline_statistics is None:
        print(f"{DRIFT_PREFIX}: skipped, no earlier accepted statistics (the first run in this output dir)")
    if statistics is not None and baseline_statistics is not None and schema is not None:
        drift = _artifact_drift(statistics, baseline_statistics, schema)
        if drift and allow_drift:
            print("data drift (allowed, not failing the run): " + "; ".join(drift))
        else:
            problems.extend(drift)
    if serving_log and statistics is not None and schema is not None:
        training = _split_statistics(statistics, F.TRAIN_SPLIT)
        skew = serving_skew.check(serving_log, training, parsed_schema) if training is not None else []
        if skew and allow_skew:
            print("training/serving skew (allowed, not failing the run): " + "; ".join(skew))
        else:
            problems.extend(skew)
    if problems:
        raise DataValidationError("data validation failed: " + "; ".join(problems))
    # What the next run's drift check compares with: only statistics this gate let through (a rejected span
    # must not become the baseline, or re-running the same command would pass).
    if statistics is not None:
        io_utils.copy_dir(statistics.uri, accepted_statistics.uri)
        accepted_statistics.split_names = statistics.split_names
