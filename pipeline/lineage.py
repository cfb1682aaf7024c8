"""What ML Metadata knows about pushed versions: which were pushed by a blessed pipeline run."""

from __future__ import annotations

from typing import Dict

from ml_metadata import metadata_store
from tfx import v1 as tfx

from pipeline import metadata
from pipeline.config import PipelineConfig


def pushed_versions(config: PipelineConfig) -> Dict[int, str]:
    """version -> the Model artifact URI it was pushed from; the Pusher pushes only blessed models."""
    store = metadata_store.MetadataStore(metadata.connection_config(config))
    versions = {}
    for artifact in store.get_artifacts_by_type(tfx.types.standard_artifacts.PushedModel.TYPE_NAME):
        props = artifact.custom_properties
        if props["pushed"].int_value == 1 and props["pushed_version"].string_value.isdigit():
            versions[int(props["pushed_version"].string_value)] = artifact.uri
    return versions
