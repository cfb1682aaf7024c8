"""Stops the run when the data broke the schema or drifted from the previous run's, so bad data never reaches Transform.

ExampleValidator only records anomalies, and it never sees the previous run's statistics; this
component turns its anomalies, and the schema's drift comparators applied between the previous
run's train statistics and this run's, into a failed execution with one message naming each
feature. The pipeline makes Transform run after it. (No `from __future__ import annotations` here:
TFX reads the component signature's real types.)
"""


from typing import List

import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2
from tfx import v1 as tfx
from tfx.components.example_validator.executor import DEFAULT_FILE_NAME
from tfx.components.statistics_gen import stats_artifact_utils
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import io_utils

from components import features as F

DRIFT_PREFIX = "drift vs the previous run"
# Reason types the schema's comparators produce; every other reason is ExampleValidator's business.
_COMPARATOR_TYPE_PREFIX = "COMPARATOR_"
# A side without the feature is not drift: a feature new since the previous run has nothing to be
# compared with, and a feature missing now is ExampleValidator's (presence) finding.
_NOT_COMPARED = ("COMPARATOR_CONTROL_DATA_MISSING", "COMPARATOR_TREATMENT_DATA_MISSING")


class DataValidationError(RuntimeError):
    """The data broke the schema contract; the message lists every anomaly."""


def describe(anomalies: anomalies_pb2.Anomalies, split: str) -> List[str]:
    problems = [
        f"{split} split, feature '{name}': {info.short_description or info.description}"
        for name, info in sorted(anomalies.anomaly_info.items())
    ]
    if anomalies.HasField("dataset_anomaly_info"):
        problems.append(f"{split} split: {anomalies.dataset_anomaly_info.description}")
    return problems


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
    parsed_schema = io_utils.SchemaReader().read(io_utils.get_only_uri_in_dir(artifact_utils.get_single_uri([schema])))
    return drift_problems(
        stats_artifact_utils.load_statistics(statistics, F.TRAIN_SPLIT).proto(),
        stats_artifact_utils.load_statistics(baseline, F.TRAIN_SPLIT).proto(),
        parsed_schema,
    )


@tfx.dsl.components.component
def DataGate(
    anomalies: tfx.dsl.components.InputArtifact[standard_artifacts.ExampleAnomalies],
    accepted_statistics: tfx.dsl.components.OutputArtifact[standard_artifacts.ExampleStatistics],
    statistics: tfx.dsl.components.InputArtifact[standard_artifacts.ExampleStatistics] = None,
    baseline_statistics: tfx.dsl.components.InputArtifact[standard_artifacts.ExampleStatistics] = None,
    schema: tfx.dsl.components.InputArtifact[standard_artifacts.Schema] = None,
    allow_drift: tfx.dsl.components.Parameter[bool] = False,
) -> None:
    problems: List[str] = []
    for split in artifact_utils.decode_split_names(anomalies.split_names):
        path = f"{artifact_utils.get_split_uri([anomalies], split)}/{DEFAULT_FILE_NAME}"
        proto = anomalies_pb2.Anomalies.FromString(io_utils.read_bytes_file(path))
        problems.extend(describe(proto, split))
    # First run: no baseline (the resolver finds no previous statistics), so no drift check.
    if statistics is not None and baseline_statistics is not None and schema is not None:
        drift = _artifact_drift(statistics, baseline_statistics, schema)
        if drift and allow_drift:
            print("data drift (allowed, not failing the run): " + "; ".join(drift))
        else:
            problems.extend(drift)
    if problems:
        raise DataValidationError("data validation failed: " + "; ".join(problems))
    # What the next run's drift check compares with: only statistics this gate let through (a rejected span
    # must not become the baseline, or re-running the same command would pass).
    if statistics is not None:
        io_utils.copy_dir(statistics.uri, accepted_statistics.uri)
        accepted_statistics.split_names = statistics.split_names
