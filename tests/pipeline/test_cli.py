"""The `recsys` command's contract: defaults, one-line errors, non-zero exits."""

import csv
import hashlib

import pytest

from components import features as F
from pipeline import cli


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sample_is_deterministic_and_in_the_canonical_layout(tmp_path, capsys):
    args = ["--num-ratings", "500", "--num-users", "40", "--num-items", "30"]
    assert cli.main(["sample", "--out", str(tmp_path / "a"), *args]) == 0
    assert cli.main(["sample", "--out", str(tmp_path / "b"), *args]) == 0
    assert "wrote 500 ratings of 40 users on 30 items" in capsys.readouterr().out
    for name in (F.INTERACTIONS_FILE, F.ITEMS_FILE):
        assert _digest(tmp_path / "a" / name) == _digest(tmp_path / "b" / name)
    with open(tmp_path / "a" / F.INTERACTIONS_FILE, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 500 and tuple(rows[0]) == (F.USER_ID, F.ITEM_ID, F.RATING, F.TIMESTAMP)
    assert all(0.5 <= float(r[F.RATING]) <= 5.0 for r in rows)
    assert not list(tmp_path.glob("a/*.tmp"))


def test_shop_sample_is_implicit_with_users(tmp_path, capsys):
    assert cli.main(["sample", "--kind", "shop", "--out", str(tmp_path / "shop"), "--num-interactions", "2000",
                     "--num-users", "100", "--num-items", "150"]) == 0
    assert "wrote 2000 interactions of 100 users on 150 items (shop sample)" in capsys.readouterr().out
    with open(tmp_path / "shop" / F.INTERACTIONS_FILE, newline="") as f:
        assert next(csv.reader(f)) == [F.USER_ID, F.ITEM_ID, F.TIMESTAMP]
    assert (tmp_path / "shop" / F.USERS_FILE).exists() and (tmp_path / "shop" / F.ITEMS_FILE).exists()


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda root: None, "is not a directory"),
        (lambda root: root.mkdir(), "no interactions.csv or interactions.parquet"),
        (lambda root: (root.mkdir(), (root / F.INTERACTIONS_FILE).write_text("a,b\n1,2\n")),
         "interactions.csv: no 'user_id' column (columns: a, b); name yours with --user-col"),
        (lambda root: (root.mkdir(), (root / F.INTERACTIONS_FILE).write_text("user_id,item_id,session\nu,i,s\n")),
         "interactions.csv: unknown column 'session'"),
    ],
)
def test_run_rejects_bad_input_with_one_line(tmp_path, capsys, setup, message):
    root = tmp_path / "data"
    setup(root)
    assert cli.main(["run", "--data-root", str(root), "--output-dir", str(tmp_path / "out")]) == cli.EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_unknown_model_is_one_line(tmp_path, capsys):
    assert cli.main(["run", "--model", "nope", "--data-root", str(tmp_path)]) == cli.EXIT_ERROR
    assert "unknown model 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["run", "compile"])
def test_ann_with_a_model_without_item_vectors_is_one_line(tmp_path, capsys, command):
    extra = ["--image", "x", "--output-dir", "gs://b/o"] if command == "compile" else []
    code = cli.main([command, "--model", "ease", "--ann", "scann", "--data-root", str(tmp_path), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == cli.EXIT_ERROR and len(err) == 1, err
    assert "--ann scann indexes item vectors: --model ease has none (use ials, two_tower or auto)" in err[0], err


def test_client_errors_are_one_line_when_no_server_listens(capsys):
    code = cli.main(["predict", "--user", "u", "--item", "i", "--target", "127.0.0.1:1", "--timeout", "2"])
    assert code == cli.EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "127.0.0.1:1" in err, err


def test_a_sample_of_another_shape_drops_the_stale_contract(tmp_path, capsys):
    from components import contract as contract_lib

    out = tmp_path / "data"
    assert cli.main(["sample", "--out", str(out), "--num-ratings", "300", "--num-users", "30", "--num-items", "20"]) == 0
    contract_lib.load_or_infer(str(out))
    (out / "schema.pbtxt").write_text("# curated\n")
    assert cli.main(["sample", "--out", str(out), "--num-ratings", "300", "--num-users", "30", "--num-items", "20",
                     "--seed", "7"]) == 0  # same shape: the reviewed files stay
    assert (out / contract_lib.CONTRACT_FILE).exists() and (out / "schema.pbtxt").exists()
    assert cli.main(["sample", "--kind", "shop", "--out", str(out), "--num-interactions", "300", "--num-users", "30",
                     "--num-items", "40"]) == 0
    assert "they described files of another shape" in capsys.readouterr().out
    assert not (out / contract_lib.CONTRACT_FILE).exists() and not (out / "schema.pbtxt").exists()


def test_a_missing_serving_log_is_one_line(tiny_data, tmp_path, capsys):
    code = cli.main(["run", "--data-root", tiny_data, "--output-dir", str(tmp_path / "out"), "--serving-log",
                     str(tmp_path / "no-log")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == cli.EXIT_ERROR and len(err) == 1, err
    assert f"--serving-log {tmp_path / 'no-log'}: no such directory (recsys serve --log-requests DIR" in err[0], err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, message", [
    (["run", "--split", "user-hash"], "--split user-hash scores held-out users from their earlier spans: give --span"),
    (["benchmark", "--split", "user-hash"], "recsys benchmark takes another split"),
    (["run", "--regression-confidence", "0.2"], "--regression-confidence 0.2: give a confidence in [0.5, 1)"),
])
def test_a_split_or_confidence_the_command_cannot_use_is_one_line(tiny_data, tmp_path, capsys, argv, message):
    code = cli.main([*argv, "--data-root", tiny_data, "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == cli.EXIT_ERROR and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists()
