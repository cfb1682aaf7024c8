"""The span window (issue 19): the last spans ending at this run's, one artifact each, refused spans left out."""

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx.types import standard_artifacts

from components.resolvers import SpanWindowStrategy

TRANSFORM = "tfx.components.transform.component.Transform"


def _store():
    config = metadata_store_pb2.ConnectionConfig()
    config.fake_database.SetInParent()
    store = metadata_store.MetadataStore(config)
    examples_type = store.put_artifact_type(metadata_store_pb2.ArtifactType(name="Examples"))
    transform_type = store.put_execution_type(metadata_store_pb2.ExecutionType(name=TRANSFORM))
    return store, examples_type, transform_type


def _examples(store, type_id, span):
    [artifact_id] = store.put_artifacts([metadata_store_pb2.Artifact(type_id=type_id)])
    artifact = standard_artifacts.Examples()
    artifact.id = artifact_id
    artifact.set_int_custom_property("span", span)
    return artifact


def _transformed(store, type_id, artifacts, state=metadata_store_pb2.Execution.COMPLETE):
    [execution_id] = store.put_executions([metadata_store_pb2.Execution(type_id=type_id, last_known_state=state)])
    store.put_events([metadata_store_pb2.Event(artifact_id=a.id, execution_id=execution_id,
                                               type=metadata_store_pb2.Event.INPUT) for a in artifacts])


def test_the_window_ends_at_this_runs_span_and_keeps_the_newest_accepted_artifact_of_each_earlier_span():
    store, examples_type, transform_type = _store()
    made = {}
    for name, span in (("s1", 1), ("s2", 2), ("s3_refused", 3), ("s4", 4), ("s4_forced", 4), ("s5", 5)):
        made[name] = _examples(store, examples_type, span)
    _transformed(store, transform_type, [made["s1"]])
    _transformed(store, transform_type, [made["s1"], made["s2"]])
    _transformed(store, transform_type, [made["s3_refused"]], metadata_store_pb2.Execution.FAILED)  # never completed
    _transformed(store, transform_type, [made["s4"]])
    _transformed(store, transform_type, [made["s4_forced"]])
    everything = list(made.values())

    def window(num_spans, artifacts=everything):
        resolved = SpanWindowStrategy(num_spans).resolve_artifacts(store, {"examples": artifacts})
        return [next(n for n, a in made.items() if a.id == r.id) for r in resolved["examples"]]

    assert window(1) == ["s5"]
    # Span 3 never passed a Transform (its data gate refused it); span 4 counts once, its newest artifact.
    assert window(3) == ["s4_forced", "s5"]
    assert window(10) == ["s1", "s2", "s4_forced", "s5"]
    # A span re-run with --force (its examples are the newest artifact): the window ends at that span.
    again = _examples(store, examples_type, 2)
    made["s2_again"] = again
    assert window(2, everything + [again]) == ["s1", "s2_again"]
    assert SpanWindowStrategy(2).resolve_artifacts(store, {"examples": []}) is None
