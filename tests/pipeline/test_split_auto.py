"""The default split, `auto`: each user's newest interactions are validation and eval (`user-time`) when the
interactions carry a timestamp, a hash split without one, and always a hash split for BigQuery input; resolved as
soon as the contract is known, so the pipeline runs (and ML Metadata records) the resolved split."""

import dataclasses
import json

import pytest
from google.protobuf import json_format, struct_pb2
from tfx.proto import example_gen_pb2

from components import contract as contract_lib
from components import example_gen
from components import features as F
from pipeline import cli
from pipeline.config import SPLIT_CHOICES, PipelineConfig, resolve_split, with_data_contract
from pipeline.pipeline import create_pipeline

TIMED = contract_lib.DataContract(columns=contract_lib.Columns(timestamp=F.TIMESTAMP))
UNTIMED = contract_lib.DataContract()
IMAGE = "registry.example/recsys-pipeline:1.0"


def _example_gen_split(config: PipelineConfig) -> str:
    (gen,) = [c for c in create_pipeline(config).components if c.id == "RatingsExampleGen"]
    custom = gen.exec_properties["custom_config"]
    custom = json_format.Parse(custom, example_gen_pb2.CustomConfig()) if isinstance(custom, str) else custom
    options = struct_pb2.Struct()
    custom.custom_config.Unpack(options)
    return options["split"]


def test_auto_is_the_default_and_follows_the_timestamp():
    assert PipelineConfig().split == "auto" and SPLIT_CHOICES == ("auto",) + example_gen.SPLITS
    assert PipelineConfig(contract=TIMED).split == "user-time"
    assert PipelineConfig(contract=UNTIMED).split == "hash"
    assert dataclasses.replace(PipelineConfig(), contract=TIMED).split == "user-time"  # wherever it gets its contract
    assert PipelineConfig(contract=TIMED, bigquery_query="SELECT 1").split == "hash"  # BigQuery: hash only
    assert PipelineConfig(bigquery_query="SELECT 1").split == "hash"
    for split in example_gen.SPLITS:  # a split asked for is kept
        assert PipelineConfig(contract=TIMED, split=split).split == split
    assert resolve_split("auto", None) == "auto"  # unknown until the contract is


def test_the_pipeline_splits_by_the_resolved_split(tmp_path):
    assert _example_gen_split(PipelineConfig(contract=TIMED, output_dir=str(tmp_path))) == "user-time"
    assert _example_gen_split(PipelineConfig(contract=UNTIMED, output_dir=str(tmp_path))) == "hash"
    assert _example_gen_split(PipelineConfig(contract=TIMED, output_dir=str(tmp_path), split="hash")) == "hash"


def test_with_data_contract_resolves_auto_from_the_files(tmp_path):
    timed, untimed = tmp_path / "timed", tmp_path / "untimed"
    for root, header, row in ((timed, "user_id,item_id,timestamp", "u1,i1,1000"), (untimed, "user_id,item_id", "u1,i1")):
        root.mkdir()
        (root / F.INTERACTIONS_FILE).write_text(f"{header}\n{row}\n")
    assert with_data_contract(PipelineConfig(data_root=str(timed)))[0].split == "user-time"
    assert with_data_contract(PipelineConfig(data_root=str(untimed)))[0].split == "hash"
    assert with_data_contract(PipelineConfig(data_root=str(timed), split="hash"))[0].split == "hash"


def test_every_command_that_builds_a_pipeline_offers_auto_by_default():
    parser = cli.build_parser()
    for argv in (["run"], ["benchmark"], ["compile", "--image", IMAGE, "--data-root", "d", "--output-dir", "o"]):
        assert parser.parse_args(argv).split == "auto", argv


def _compile(tmp_path, contract, *extra):
    path = tmp_path / "contract.json"
    path.write_text(contract.to_json())
    return cli.main(["compile", "--image", IMAGE, "--output", str(tmp_path / "spec.json"), "--data-root",
                     "gs://bucket/data", "--output-dir", "gs://bucket/run", "--contract", str(path), "--schema",
                     "gs://bucket/data/schema.pbtxt", *extra])


def test_compile_resolves_auto_by_the_contract_and_to_hash_for_bigquery(tmp_path, capsys):
    assert _compile(tmp_path, TIMED) == 0
    assert "split user-time, auto: the interactions have timestamps" in capsys.readouterr().out
    assert _compile(tmp_path, UNTIMED) == 0
    assert "split hash, auto: no timestamp column" in capsys.readouterr().out
    assert _compile(tmp_path, TIMED, "--bigquery-query", "SELECT user_id, item_id, timestamp FROM t") == 0
    assert "split hash, auto: BigQuery input" in capsys.readouterr().out
    assert _compile(tmp_path, TIMED, "--bigquery-query", "SELECT 1", "--split", "user-time") == cli.EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert "--split user-time needs the file ExampleGen" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("command", ["run", "benchmark"])
def test_a_time_split_without_a_timestamp_is_one_line_before_any_work(tmp_path, capsys, command):
    (tmp_path / F.INTERACTIONS_FILE).write_text("user_id,item_id\nu1,i1\nu2,i1\n")
    assert cli.main([command, "--data-root", str(tmp_path), "--output-dir", str(tmp_path / "out"),
                     "--split", "user-time"]) == cli.EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert "--split user-time orders interactions by time" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()
    assert json.loads((tmp_path / contract_lib.CONTRACT_FILE).read_text())  # inferred, then refused: nothing ran
