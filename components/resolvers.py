"""Resolver strategies: inputs that may not exist yet, and the window of spans a run trains on.

TFX's LatestArtifactStrategy returns None when a channel has no artifact, which the LocalDagRunner
logs as an ERROR with a traceback ("Input resolution error ... returned None") although a first run
with nothing earlier to compare is normal. This strategy resolves to an empty list instead; the
consumer sees an absent optional input and says so in one progress line. Kubeflow's compiler accepts
only TFX's own strategy classes (by identity), so the pipeline uses this one on the local runner only.
"""

from typing import Dict, List, Optional, Set

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2
from tfx import types
from tfx.dsl.components.common.resolver import ResolverStrategy
from tfx.dsl.input_resolution.strategies.latest_artifact_strategy import LatestArtifactStrategy


class LatestArtifactIfAnyStrategy(LatestArtifactStrategy):
    """The latest artifact of each channel, or none (not a failure) when the channel has none yet."""

    def resolve_artifacts(self, store: mlmd.MetadataStore,
                          input_dict: Dict[str, List[types.Artifact]]) -> Optional[Dict[str, List[types.Artifact]]]:
        return self._resolve(input_dict)


SPAN_PROPERTY = "span"  # ExampleGen's (tfx.components.example_gen.utils.SPAN_PROPERTY_NAME)


def _span(artifact: types.Artifact) -> int:
    text = artifact.get_string_custom_property(SPAN_PROPERTY)  # older TFX wrote it as a string
    return int(text) if text else artifact.get_int_custom_property(SPAN_PROPERTY)


class SpanWindowStrategy(ResolverStrategy):
    """The last `num_spans` spans of ExampleGen's output, ending at the newest one (this run's): for each earlier span
    the newest of its Examples that a Transform consumed in a completed run (a span the data gate refused never
    reached Transform, so it never enters a window), and the newest span's own examples. Unlike TFX's
    SpanRangeStrategy it keeps one artifact per span (a span re-run with --force counts once) and leaves refused
    spans out. LocalDagRunner only: Kubeflow's compiler accepts TFX's own strategies alone."""

    def __init__(self, num_spans: int):
        self.num_spans = int(num_spans)

    @staticmethod
    def _consumed_by_transform(store: mlmd.MetadataStore, artifact_ids: List[int]) -> Set[int]:
        events = [e for e in store.get_events_by_artifact_ids(artifact_ids)
                  if e.type == metadata_store_pb2.Event.INPUT]
        executions = {x.id: x for x in store.get_executions_by_id(list({e.execution_id for e in events}))}
        type_names = {t.id: t.name for t in store.get_execution_types_by_id(
            list({x.type_id for x in executions.values()}))} if executions else {}
        done = {x_id for x_id, x in executions.items()
                if x.last_known_state == metadata_store_pb2.Execution.COMPLETE
                and type_names.get(x.type_id, "").endswith("Transform")}
        return {e.artifact_id for e in events if e.execution_id in done}

    def resolve_artifacts(self, store: mlmd.MetadataStore,
                          input_dict: Dict[str, List[types.Artifact]]) -> Optional[Dict[str, List[types.Artifact]]]:
        result = {}
        for key, artifacts in input_dict.items():
            if not artifacts:
                return None
            newest = max(artifacts, key=lambda a: a.id)
            first = _span(newest) - self.num_spans + 1
            earlier = [a for a in artifacts if a.id != newest.id and first <= _span(a) < _span(newest)]
            consumed = self._consumed_by_transform(store, [a.id for a in earlier]) if earlier else set()
            per_span = {}
            for artifact in sorted(earlier, key=lambda a: a.id):
                if artifact.id in consumed:
                    per_span[_span(artifact)] = artifact  # the newest accepted one of each span
            result[key] = [per_span[s] for s in sorted(per_span)] + [newest]
        return result
