"""Stops the run when ExampleValidator found anomalies, so bad data never reaches Transform.

ExampleValidator only records anomalies; this component turns them into a failed execution with a
message naming each feature and anomaly. The pipeline makes Transform run after it. (No
`from __future__ import annotations` here: TFX reads the component signature's real types.)
"""


from typing import List

from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import v1 as tfx
from tfx.components.example_validator.executor import DEFAULT_FILE_NAME
from tfx.types import artifact_utils
from tfx.utils import io_utils


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


@tfx.dsl.components.component
def DataGate(anomalies: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleAnomalies]) -> None:
    problems: List[str] = []
    for split in artifact_utils.decode_split_names(anomalies.split_names):
        path = f"{artifact_utils.get_split_uri([anomalies], split)}/{DEFAULT_FILE_NAME}"
        proto = anomalies_pb2.Anomalies.FromString(io_utils.read_bytes_file(path))
        problems.extend(describe(proto, split))
    if problems:
        raise DataValidationError("data validation failed: " + "; ".join(problems))
