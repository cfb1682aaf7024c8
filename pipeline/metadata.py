"""Which ML Metadata store a run records into: the cluster's, a MySQL server, or a local SQLite file."""

from __future__ import annotations

from typing import Optional

from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

from pipeline.config import KUBEFLOW, PipelineConfig


def connection_config(config: PipelineConfig) -> Optional[metadata_store_pb2.ConnectionConfig]:
    """None on Kubeflow, where the orchestrator brings its own store."""
    if config.orchestrator == KUBEFLOW:
        return None
    if config.mysql is not None:
        m = config.mysql
        return tfx.orchestration.metadata.mysql_metadata_connection_config(
            host=m.host, port=m.port, database=m.database, username=m.user, password=m.password
        )
    return tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path)
