"""What ML Metadata knows about pushed versions: where each came from and how it was judged.

Walks the lineage graph: PushedModel ← Pusher ← Model ← Trainer (hyperparameters, transformed examples,
transform graph), and the Evaluator that read the same Model (its evaluation and blessing).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Dict, List, Optional, Tuple

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

from pipeline import metadata
from pipeline.config import PipelineConfig

_INPUT, _OUTPUT = metadata_store_pb2.Event.INPUT, metadata_store_pb2.Event.OUTPUT
_A = tfx.types.standard_artifacts


@dataclasses.dataclass
class VersionLineage:
    version: int
    model_uri: str
    blessed: bool
    training: Dict  # the Trainer's custom_config: model type and hyperparameters
    examples_uri: Optional[str] = None  # what the Trainer read (Transform's output)
    transform_graph_uri: Optional[str] = None
    evaluation_uri: Optional[str] = None
    data_span: Optional[int] = None  # ExampleGen's span and input fingerprint of the raw data
    data_fingerprint: Optional[str] = None


def _store(config: PipelineConfig) -> metadata_store.MetadataStore:
    return metadata_store.MetadataStore(metadata.connection_config(config))


def _neighbours(store, artifact_id: int, event_type: int) -> List[int]:
    """Executions that consumed (INPUT) or produced (OUTPUT) the artifact."""
    return [e.execution_id for e in store.get_events_by_artifact_ids([artifact_id]) if e.type == event_type]


def _artifacts_of(store, execution_id: int, event_type: int) -> Dict[str, metadata_store_pb2.Artifact]:
    """The execution's input or output artifacts by type name."""
    events = [e for e in store.get_events_by_execution_ids([execution_id]) if e.type == event_type]
    artifacts = store.get_artifacts_by_id([e.artifact_id for e in events])
    types = {t.id: t.name for t in store.get_artifact_types_by_id(list({a.type_id for a in artifacts}))}
    return {types[a.type_id]: a for a in artifacts}


def pushed_versions(config: PipelineConfig) -> Dict[int, str]:
    """version -> the Model artifact URI it was pushed from; the Pusher pushes only blessed models."""
    return {v.version: v.model_uri for v in versions(config)}


def versions(config: PipelineConfig) -> List[VersionLineage]:
    store = _store(config)
    found = []
    for pushed in store.get_artifacts_by_type(_A.PushedModel.TYPE_NAME):
        props = pushed.custom_properties
        if props["pushed"].int_value != 1 or not props["pushed_version"].string_value.isdigit():
            continue
        (pusher,) = _neighbours(store, pushed.id, _OUTPUT)
        pusher_inputs = _artifacts_of(store, pusher, _INPUT)
        model = pusher_inputs[_A.Model.TYPE_NAME]
        blessing = pusher_inputs.get(_A.ModelBlessing.TYPE_NAME)
        (trainer,) = _neighbours(store, model.id, _OUTPUT)
        trainer_execution = store.get_executions_by_id([trainer])[0]
        trainer_inputs = _artifacts_of(store, trainer, _INPUT)
        raw_config = trainer_execution.custom_properties.get("custom_config")
        training = json.loads(raw_config.string_value) if raw_config and raw_config.string_value else {}
        span, fingerprint = None, None
        transformed = trainer_inputs.get(_A.Examples.TYPE_NAME)
        if transformed is not None:
            for transform in _neighbours(store, transformed.id, _OUTPUT):
                raw = _artifacts_of(store, transform, _INPUT).get(_A.Examples.TYPE_NAME)
                if raw is not None:
                    span = _span(raw)
                    fingerprint = raw.custom_properties["input_fingerprint"].string_value or None
        evaluation = None
        for execution_id in _neighbours(store, model.id, _INPUT):
            outputs = _artifacts_of(store, execution_id, _OUTPUT)
            if _A.ModelEvaluation.TYPE_NAME in outputs:
                evaluation = outputs[_A.ModelEvaluation.TYPE_NAME].uri
        found.append(VersionLineage(
            version=int(props["pushed_version"].string_value),
            model_uri=model.uri,
            blessed=bool(blessing and blessing.custom_properties["blessed"].int_value == 1),
            training=training,
            examples_uri=trainer_inputs.get(_A.Examples.TYPE_NAME, metadata_store_pb2.Artifact()).uri or None,
            transform_graph_uri=trainer_inputs.get(_A.TransformGraph.TYPE_NAME, metadata_store_pb2.Artifact()).uri
            or None,
            evaluation_uri=evaluation,
            data_span=span,
            data_fingerprint=fingerprint,
        ))
    return sorted(found, key=lambda v: v.version)


@dataclasses.dataclass(frozen=True)
class EvaluatedRun:
    run_id: str
    evaluation_uri: Optional[str]  # TFMA's (rating models); None when only the ranking gate judged the model
    model_uri: str
    blessed: bool  # the final verdict: the ranking gate's blessing (TFMA's when no gate ran)
    ranking_blessing_uri: Optional[str] = None  # the ranking gate's blessing: its metrics JSON is there
    data_span: Optional[int] = None  # the span of the examples the run was judged on (ExampleGen's, in ML Metadata)
    training_spans: Tuple[int, ...] = ()  # the spans its Transform and Trainer read (a window: several)


def _span(artifact: metadata_store_pb2.Artifact) -> int:
    """ExampleGen's span property (an unset span is span 0: a single snapshot of the data)."""
    return next((props["span"].int_value for props in (artifact.properties, artifact.custom_properties)
                 if "span" in props), 0)


def _training_spans(store, model: metadata_store_pb2.Artifact) -> Tuple[int, ...]:
    """The spans of the raw examples behind a model: Trainer <- transformed examples <- Transform <- examples, or
    Trainer <- examples (a window: the Trainer reads ExampleGen's examples itself)."""
    found = set()
    for trainer in _neighbours(store, model.id, _OUTPUT):
        for event in store.get_events_by_execution_ids([trainer]):
            if event.type != _INPUT or not event.path.steps or event.path.steps[0].key != "examples":
                continue
            raw = [e.artifact_id for transform in _neighbours(store, event.artifact_id, _OUTPUT)
                   for e in store.get_events_by_execution_ids([transform])
                   if e.type == _INPUT and e.path.steps and e.path.steps[0].key == "examples"]
            found.update(_span(a) for a in store.get_artifacts_by_id(raw or [event.artifact_id]))
    return tuple(sorted(found))


def _model_input(store, execution_id: int) -> Optional[metadata_store_pb2.Artifact]:
    events = [e for e in store.get_events_by_execution_ids([execution_id])
              if e.type == _INPUT and e.path.steps and e.path.steps[0].key == "model"]
    return store.get_artifacts_by_id([events[0].artifact_id])[0] if events else None


def _is_blessed(blessing: Optional[metadata_store_pb2.Artifact]) -> bool:
    return bool(blessing and blessing.custom_properties["blessed"].int_value == 1)


def evaluated_runs(config: PipelineConfig) -> List[EvaluatedRun]:
    """Pipeline runs whose Evaluator or ranking gate finished, oldest first."""
    from components.ranking_gate import read_report

    store = _store(config)
    runs = []
    for context in sorted(store.get_contexts_by_type("pipeline_run"), key=lambda c: c.id):
        evaluation, tfma_blessing, gate_blessing, model, span = None, None, None, None, None
        for execution in store.get_executions_by_context(context.id):
            outputs = _artifacts_of(store, execution.id, _OUTPUT)
            blessing = outputs.get(_A.ModelBlessing.TYPE_NAME)
            if _A.ModelEvaluation.TYPE_NAME in outputs:
                evaluation, tfma_blessing = outputs[_A.ModelEvaluation.TYPE_NAME].uri, blessing
            elif blessing is not None and read_report(blessing.uri) is not None:
                gate_blessing = blessing
            else:
                continue
            model = _model_input(store, execution.id) or model
            examples = _artifacts_of(store, execution.id, _INPUT).get(_A.Examples.TYPE_NAME)
            span = _span(examples) if examples is not None else span
        if evaluation is None and gate_blessing is None:
            continue
        runs.append(EvaluatedRun(
            run_id=context.name,
            evaluation_uri=evaluation,
            model_uri=model.uri if model else "",
            blessed=_is_blessed(gate_blessing if gate_blessing is not None else tfma_blessing),
            ranking_blessing_uri=gate_blessing.uri if gate_blessing is not None else None,
            data_span=span,
            training_spans=_training_spans(store, model) if model is not None else (),
        ))
    return runs
