"""The pipeline factory: config in, pipeline out, and no local-only file access in component code."""

import ast
import dataclasses
import json
import pathlib

import pytest

from components import features as F
from components.training_config import TrainingConfig
from components.contract import CATEGORICAL, Columns, DataContract, Feature
from pipeline.config import (IN_MEMORY_BEAM_ARGS, KUBEFLOW, MULTI_PROCESSING_MIN_BYTES, MySQLMetadata,
                             PipelineConfig, default_beam_args)
from pipeline.pipeline import create_pipeline

REPO = pathlib.Path(__file__).resolve().parents[2]
# Explicit feedback with one categorical item attribute (what the factory needs to know of the data).
CONTRACT = DataContract(columns=Columns(rating=F.RATING, timestamp=F.TIMESTAMP), items_file=F.ITEMS_FILE,
                        item_features=(Feature("category", CATEGORICAL),))


def test_local_pipeline_records_into_sqlite_under_the_output_dir(tmp_path):
    config = PipelineConfig(contract=CONTRACT, data_root=str(tmp_path / "data"), output_dir=str(tmp_path / "out"))
    pipeline = create_pipeline(config)
    assert pipeline.metadata_connection_config.sqlite.filename_uri == config.metadata_path
    assert {"RatingsExampleGen", "DataGate", "Transform", "Trainer", "RankingGate", "Pusher"} <= {
        c.id for c in pipeline.components}
    transform = next(c for c in pipeline.components if c.id == "Transform")
    assert "DataGate" in {n.id for n in transform.upstream_nodes}


def _components(config):
    return {c.id: c for c in create_pipeline(config).components}


def test_three_splits_train_fits_train_and_early_stops_on_validation(tmp_path):
    parts = _components(PipelineConfig(contract=CONTRACT, output_dir=str(tmp_path), split="user-time"))
    from google.protobuf import json_format
    from tfx.proto import example_gen_pb2

    output_config = parts["RatingsExampleGen"].exec_properties["output_config"]
    splits = json_format.Parse(output_config, example_gen_pb2.Output()).split_config.splits
    assert [(s.name, s.hash_buckets) for s in splits] == [(F.TRAIN_SPLIT, 8), (F.VALIDATION_SPLIT, 1),
                                                          (F.EVAL_SPLIT, 1)]
    trainer = parts["Trainer"].exec_properties
    assert json.loads(trainer["train_args"])["splits"] == [F.TRAIN_SPLIT]
    assert json.loads(trainer["eval_args"])["splits"] == [F.VALIDATION_SPLIT]
    transform = parts["Transform"].exec_properties["splits_config"]
    if isinstance(transform, str):
        from tfx.proto import transform_pb2

        transform = json_format.Parse(transform, transform_pb2.SplitsConfig())
    assert list(transform.analyze) == [F.TRAIN_SPLIT] and list(transform.transform) == list(F.SPLIT_NAMES)


def test_ranking_models_are_gated_by_the_ranking_gate_alone(tmp_path):
    parts = _components(PipelineConfig(contract=CONTRACT, output_dir=str(tmp_path), training=TrainingConfig(model="auto")))
    assert "Evaluator" not in parts
    gate, pusher = parts["RankingGate"], parts["Pusher"]
    assert pusher.inputs["model_blessing"].producer_component_id == "RankingGate"
    assert gate.inputs["baseline_model"].producer_component_id == "latest_blessed_model_resolver"
    assert "rating_blessing" not in gate.inputs
    assert json.loads(gate.exec_properties["training_config"])["training"]["model"] == "auto"
    assert gate.exec_properties["k"] == 10 and gate.exec_properties["max_relative_recall_regression"] == 0.02


def test_rating_models_keep_the_rmse_gate_on_the_eval_split_and_the_ranking_gate_combines_it(tmp_path):
    parts = _components(PipelineConfig(contract=CONTRACT, output_dir=str(tmp_path), training=TrainingConfig(model="mf")))
    evaluator, gate = parts["Evaluator"], parts["RankingGate"]
    assert json.loads(evaluator.exec_properties["example_splits"]) == [F.EVAL_SPLIT]
    assert gate.inputs["rating_blessing"].producer_component_id == "Evaluator"
    assert parts["Pusher"].inputs["model_blessing"].producer_component_id == "RankingGate"


def test_mysql_metadata_is_used_when_configured(tmp_path):
    config = PipelineConfig(contract=CONTRACT, output_dir=str(tmp_path), mysql=MySQLMetadata(host="mlmd.internal", port=3307,
                                                                          database="recsys", user="tfx"))
    mysql = create_pipeline(config).metadata_connection_config.mysql
    assert (mysql.host, mysql.port, mysql.database, mysql.user) == ("mlmd.internal", 3307, "recsys", "tfx")


def test_kubeflow_pipeline_leaves_metadata_to_the_cluster(tmp_path):
    config = dataclasses.replace(PipelineConfig(contract=CONTRACT, output_dir=str(tmp_path)), orchestrator=KUBEFLOW)
    assert create_pipeline(config).metadata_connection_config is None


def test_unknown_orchestrator_is_refused():
    with pytest.raises(ValueError, match="unknown orchestrator 'airflow'"):
        create_pipeline(PipelineConfig(contract=CONTRACT, orchestrator="airflow"))


def _local_file_calls(path: pathlib.Path):
    """Calls of builtin open() and os.path.* that would not work on gs:// or s3:// artifact URIs."""
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id == "open":
            yield f"{path.name}:{node.lineno} open()"
        if (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Attribute)
                and isinstance(func.value.value, ast.Name) and func.value.value.id == "os"
                and func.value.attr == "path"):
            yield f"{path.name}:{node.lineno} os.path.{func.attr}()"


def test_the_local_file_check_finds_what_it_looks_for(tmp_path):
    sample = tmp_path / "bad.py"
    sample.write_text("import os\nf = open('x')\np = os.path.join('a', 'b')\n")
    assert list(_local_file_calls(sample)) == ["bad.py:2 open()", "bad.py:3 os.path.join()"]


def test_component_code_reads_artifacts_only_through_tf_io_gfile():
    """Everything TFX runs inside a component (on a cluster, with artifacts on object storage)."""
    files = sorted((REPO / "components").rglob("*.py"))
    assert len(files) >= 8
    offenders = [call for path in files for call in _local_file_calls(path)]
    assert offenders == []


def test_local_beam_default_uses_every_core_only_for_large_inputs():
    assert default_beam_args(3 * 2**20, cpus=2) == IN_MEMORY_BEAM_ARGS
    assert default_beam_args(MULTI_PROCESSING_MIN_BYTES, cpus=2) == (
        "--direct_running_mode=multi_processing", "--direct_num_workers=2")
    assert default_beam_args(MULTI_PROCESSING_MIN_BYTES, cpus=1) == IN_MEMORY_BEAM_ARGS


def test_a_span_is_read_through_examplegens_span_pattern_and_a_static_range(tmp_path):
    from google.protobuf import json_format
    from tfx.proto import example_gen_pb2, range_config_pb2

    example_gen = _components(PipelineConfig(contract=CONTRACT, output_dir=str(tmp_path), span=3))["RatingsExampleGen"]
    props = example_gen.exec_properties
    (split,) = json_format.Parse(props["input_config"], example_gen_pb2.Input()).splits
    assert split.pattern == "span-{SPAN}/" + F.INTERACTIONS_FILE
    static = json_format.Parse(props["range_config"], range_config_pb2.RangeConfig()).static_range
    assert (static.start_span_number, static.end_span_number) == (3, 3)
    plain = _components(PipelineConfig(contract=CONTRACT, output_dir=str(tmp_path)))["RatingsExampleGen"]
    assert json_format.Parse(plain.exec_properties["input_config"], example_gen_pb2.Input()).splits[0].pattern == \
        F.INTERACTIONS_FILE and not plain.exec_properties.get("range_config")
