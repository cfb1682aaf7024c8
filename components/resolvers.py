"""Resolver strategies for inputs that may not exist yet.

TFX's LatestArtifactStrategy returns None when a channel has no artifact, which the LocalDagRunner
logs as an ERROR with a traceback ("Input resolution error ... returned None") although a first run
with nothing earlier to compare is normal. This strategy resolves to an empty list instead; the
consumer sees an absent optional input and says so in one progress line. Kubeflow's compiler accepts
only TFX's own strategy classes (by identity), so the pipeline uses this one on the local runner only.
"""

from typing import Dict, List, Optional

import ml_metadata as mlmd
from tfx import types
from tfx.dsl.input_resolution.strategies.latest_artifact_strategy import LatestArtifactStrategy


class LatestArtifactIfAnyStrategy(LatestArtifactStrategy):
    """The latest artifact of each channel, or none (not a failure) when the channel has none yet."""

    def resolve_artifacts(self, store: mlmd.MetadataStore,
                          input_dict: Dict[str, List[types.Artifact]]) -> Optional[Dict[str, List[types.Artifact]]]:
        return self._resolve(input_dict)
