"""`recsys schema export`, `--schema-dir`, and a reviewed contract the data no longer fits: one line, exit 1,
before any component runs."""

import json
import os
import shutil

import pytest

from components import contract as contract_lib
from components import features as F
from pipeline import cli
from pipeline import config as C
from pipeline import schema_commands

MOVIES = os.path.join(C.REPO_ROOT, "schema", "movies")  # the committed pair of the movie sample


@pytest.fixture
def data(tmp_path, capsys):
    """A small movie sample: the columns schema/movies describes."""
    root = tmp_path / "data"
    sizes = ["--num-ratings", "300", "--num-users", "30", "--num-items", "20"]
    assert cli.main(["sample", "--out", str(root), *sizes]) == 0
    capsys.readouterr()
    return root


def _first_run_files(root):
    """What a first run leaves beside the data: the inferred contract and the curated schema, with a header naming
    this machine's path and the date (CuratedSchemaExport's writer)."""
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    from components.schema_curation import write_schema_text

    contract_lib.load_or_infer(str(root))
    with open(os.path.join(MOVIES, C.SCHEMA_FILE)) as f:
        schema = text_format.Parse(f.read(), schema_pb2.Schema())
    write_schema_text(schema, str(root / C.SCHEMA_FILE), source=str(root))
    return schema


def _one_error_line(capsys, command="run"):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"recsys {command}: error: "), err
    return err


def test_export_copies_the_first_runs_pair_with_a_header_naming_no_machine(data, tmp_path, capsys):
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    schema = _first_run_files(data)
    assert str(data) in (data / C.SCHEMA_FILE).read_text()  # the first run's copy names where it ran
    to = tmp_path / "repo" / "schema" / "mine"
    assert cli.main(["schema", "export", "--data-root", str(data), "--to", str(to)]) == 0
    assert f"--schema-dir {to}" in capsys.readouterr().out
    assert sorted(os.listdir(to)) == [contract_lib.CONTRACT_FILE, C.SCHEMA_FILE]  # no temp file left
    assert (to / contract_lib.CONTRACT_FILE).read_text() == (data / contract_lib.CONTRACT_FILE).read_text()
    text = (to / C.SCHEMA_FILE).read_text()
    assert text_format.Parse(text, schema_pb2.Schema()) == schema
    assert str(tmp_path) not in text and "UTC" not in text and "recsys schema export" in text
    # Exporting again from another machine's run of the same data writes the same bytes.
    before = text
    assert schema_commands.export(str(data), str(to)) == C.schema_dir_files(str(to))
    assert (to / C.SCHEMA_FILE).read_text() == before


def test_export_before_a_first_run_is_one_line(data, tmp_path, capsys):
    to = tmp_path / "schema" / "mine"
    assert cli.main(["schema", "export", "--data-root", str(data), "--to", str(to)]) == cli.EXIT_ERROR
    err = _one_error_line(capsys, "schema")
    assert f"run `recsys run --data-root {data}` first" in err and contract_lib.CONTRACT_FILE in err
    assert not to.exists()


def test_export_refuses_a_contract_the_files_no_longer_fit(data, tmp_path, capsys):
    _first_run_files(data)
    _add_column(data / F.ITEMS_FILE, "colour", "red")
    assert cli.main(["schema", "export", "--data-root", str(data), "--to", str(tmp_path / "s")]) == cli.EXIT_ERROR
    assert "unknown column 'colour'" in _one_error_line(capsys, "schema")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("extra, message", [
    (lambda d, s: ["--schema-dir", str(d / "nope")], "no such directory"),
    (lambda d, s: ["--schema-dir", s, "--contract", str(d / contract_lib.CONTRACT_FILE)],
     "give either --schema-dir or --contract/--schema"),
    (lambda d, s: ["--schema", str(d / C.SCHEMA_FILE), "--schema-dir", s], "give either --schema-dir"),
    (lambda d, s: (os.remove(os.path.join(s, C.SCHEMA_FILE)), ["--schema-dir", s])[1],
     f"no {C.SCHEMA_FILE} (`recsys schema export"),
])
def test_schema_dir_mistakes_are_one_line(data, tmp_path, capsys, extra, message):
    schema_dir = str(tmp_path / "schema")
    shutil.copytree(MOVIES, schema_dir)
    args = extra(tmp_path, schema_dir)
    assert cli.main(["run", "--data-root", str(data), "--output-dir", str(tmp_path / "out"), *args]) == cli.EXIT_ERROR
    assert message in _one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def _add_column(path, name, value):
    rows = path.read_text().splitlines()
    path.write_text("\n".join([f"{rows[0]},{name}"] + [f"{r},{value}" for r in rows[1:]]) + "\n")


def _drop_column(path, index):
    rows = [r.split(",") for r in path.read_text().splitlines()]  # the movie sample's items have no quoted commas
    path.write_text("\n".join(",".join(r[:index] + r[index + 1:]) for r in rows) + "\n")


def _year_to_text(path):
    rows = path.read_text().splitlines()
    path.write_text("\n".join([rows[0]] + [r.rsplit(",", 1)[0] + ",nineteen-ninety" for r in rows[1:]]) + "\n")


@pytest.mark.parametrize("change, column, file, what", [
    (lambda d: _add_column(d / F.ITEMS_FILE, "colour", "red"), "colour", F.ITEMS_FILE, "unknown column"),
    (lambda d: _add_column(d / F.INTERACTIONS_FILE, "channel", "web"), "channel", F.INTERACTIONS_FILE,
     "unknown column"),
    (lambda d: _drop_column(d / F.ITEMS_FILE, 2), "genres", F.ITEMS_FILE, "no column"),
    (lambda d: _year_to_text(d / F.ITEMS_FILE), "year", F.ITEMS_FILE, "declares it numeric"),
])
def test_data_the_committed_schema_no_longer_fits_is_one_line_before_any_component(data, tmp_path, capsys, change,
                                                                                   column, file, what):
    change(data)
    out = tmp_path / "out"
    assert cli.main(["run", "--data-root", str(data), "--output-dir", str(out), "--schema-dir", MOVIES]) == 1
    err = _one_error_line(capsys)
    assert f"'{column}'" in err and os.path.join(str(data), file) in err and what in err, err
    assert os.path.join(MOVIES, contract_lib.CONTRACT_FILE) in err  # the contract it no longer fits
    assert f"recsys schema export --data-root {data} --to {MOVIES}" in err  # what to do
    assert not out.exists()  # no component ran


def test_the_data_roots_own_contract_says_to_edit_it(data, tmp_path, capsys):
    contract_lib.load_or_infer(str(data))
    _year_to_text(data / F.ITEMS_FILE)
    assert cli.main(["run", "--data-root", str(data), "--output-dir", str(tmp_path / "out")]) == 1
    err = _one_error_line(capsys)
    assert "'year'" in err and f"edit {data / contract_lib.CONTRACT_FILE}" in err and "--schema-dir" not in err


def test_kinds_the_user_chose_stay_valid_and_unreadable_values_do_not(data):
    contract = contract_lib.infer(str(data))
    assert {f.name: f.kind for f in contract.item_features}["year"] == contract_lib.NUMERIC
    chosen = json.loads(contract.to_json())
    for feature in chosen["item_features"]:
        feature["kind"] = {"year": contract_lib.CATEGORICAL, "genres": contract_lib.TEXT}.get(feature["name"],
                                                                                            feature["kind"])
    contract_lib.check_data(str(data), contract_lib.DataContract.from_dict(chosen))  # a numeric code as a category
    _year_to_text(data / F.ITEMS_FILE)
    contract_lib.check_data(str(data), contract_lib.DataContract.from_dict(chosen))  # text is a fine category
    with pytest.raises(contract_lib.ContractMismatch, match=r"column 'year' holds categorical values \(e.g. "
                                                            r"'nineteen-ninety' in record 1\)"):
        contract_lib.check_data(str(data), contract)
    genres = contract_lib.Feature(name="genres", kind=contract_lib.MULTI, separator="|")
    assert contract_lib._unreadable(genres, ["a;b", "c;d", "e"]) == "lists separated by ';', not '|'"
    assert contract_lib._unreadable(genres, ["a|b", "c;d"]) == ""


def test_compile_reads_the_committed_pair(tmp_path, capsys):
    out = tmp_path / "pipeline.json"
    assert cli.main(["compile", "--image", "registry.example/recsys:1", "--data-root", "gs://bucket/data",
                     "--output-dir", "gs://bucket/run", "--output", str(out), "--schema-dir", MOVIES]) == 0
    capsys.readouterr()
    job = json.loads(out.read_text())
    tasks = set(job["pipelineSpec"]["root"]["dag"]["tasks"])
    assert "ImportSchemaGen" in tasks and not {"SchemaGen", "CuratedSchemaExport"} & tasks
    assert os.path.join(MOVIES, C.SCHEMA_FILE) in out.read_text()
    config = json.loads(job["runtimeConfig"]["parameters"]["training-config"]["stringValue"])
    with open(os.path.join(MOVIES, contract_lib.CONTRACT_FILE)) as f:
        assert contract_lib.DataContract.from_json(config["contract"]) == contract_lib.DataContract.from_json(f.read())
