"""The data contract through `recsys run` on files a user converted by hand, not through this project's importer.

MovieLens-100K's genre names (`unknown`, `Children's`), integer ids, 1..5 ratings and years with gaps must
pass the data gate with zero configuration, the first run must leave contract.json and a curated schema for
review, and the second run (importing that schema) must pass too; drift against the previous run stops
the gate unless --allow-drift. Wrong inputs (a rating model on implicit data, a duplicated item row) fail in
one line before any pipeline work. What a user reads is part of the product: a healthy run prints no ERROR,
WARNING or traceback (the libraries' logging goes to the run's log file), and every refusal is one line on stderr.
"""

import csv
import glob
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from components import contract as contract_lib
from components import features as F
from data import synthetic
from pipeline import cli
from pipeline.config import REPO_ROOT, SCHEMA_FILE

SPEC = synthetic.SampleSpec(num_users=300, num_items=300, num_ratings=8000, seed=11)
# MovieLens-100K's u.genre, as the files name them (synthetic.GENRES spells Children without the apostrophe).
ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                 "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
                 "War", "Western")
FAST_RUN = ["--epochs", "2"]


def _read(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _write(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _number(key: str) -> str:
    return str(int(key[1:]))  # u00017 -> 17, i00042 -> 42: MovieLens ids are integers


def movielens_shaped(root: str, spec=SPEC) -> None:
    """The synthetic sample rewritten as someone converting ml-100k's u.data / u.item would: integer ids,
    whole-star ratings 1..5, genres joined with '|' under ML-100K's names, the year taken from the release
    date (empty where the date is), the title with its year in brackets."""
    synthetic.generate(root, spec)
    rng = np.random.default_rng(spec.seed)
    interactions = _read(os.path.join(root, F.INTERACTIONS_FILE))
    _write(os.path.join(root, F.INTERACTIONS_FILE), ("user_id", "item_id", "rating", "timestamp"),
           [(_number(r["user_id"]), _number(r["item_id"]), int(min(5, max(1, np.ceil(float(r["rating"]))))),
             r["timestamp"]) for r in interactions])
    rows = []
    for r in _read(os.path.join(root, F.ITEMS_FILE)):
        genres = ["Children's" if g == "Children" else g for g in r["genres"].split("|")]
        if rng.random() < 0.04:
            genres = ["unknown"]
        year = "" if rng.random() < 0.06 else r["year"]
        title = f"{r['title']} ({year})" if year else r["title"]
        rows.append((_number(r["item_id"]), title, "|".join(genres), year))
    _write(os.path.join(root, F.ITEMS_FILE), ("item_id", "title", "genres", "year"), rows)


def _recsys(data_root, output_dir, *extra):
    """`recsys run` as a user runs it: its own process, its exit status, its stdout and stderr."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as in a shell: the CLI sets it
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "--data-root", str(data_root),
                           "--output-dir", str(output_dir), *extra],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    return done.returncode, done.stdout, done.stderr.strip()


# What must never reach a healthy run's terminal: Python's and absl's records, tracebacks, glog lines (E1204 ...).
_NOISE = re.compile(r"Traceback|ERROR|WARNING|Warning:|^[EWF]\d{4} ", re.MULTILINE)


def _assert_healthy(out, err):
    """No library noise on the terminal; the libraries' log is in the file whose path the run printed."""
    assert not _NOISE.search(err), err[-3000:]
    (path,) = re.findall(r"^library log: (.+)$", out, re.MULTILINE)
    with open(path) as f:
        assert "Component Transform is running." in f.read()  # TFX's own records went there


def _one_line(err):
    """A refusal: exactly one line on stderr, `recsys run: error: ...`."""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("recsys run: error: "), err[-3000:]
    return lines[0]


def _schema(path) -> schema_pb2.Schema:
    with open(path) as f:
        return text_format.Parse(f.read(), schema_pb2.Schema())


@pytest.fixture(scope="module")
def movielens_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ml100k_by_hand")
    movielens_shaped(str(root))
    return root


@pytest.fixture(scope="module")
def output_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("contract_runs")


def test_the_hand_converted_data_has_movielens_names(movielens_root):
    items = _read(movielens_root / F.ITEMS_FILE)
    genres = {g for r in items for g in r["genres"].split("|")}
    assert {"unknown", "Children's"} <= genres <= set(ML100K_GENRES)
    assert 0 < sum(not r["year"] for r in items) < len(items) / 5
    assert {r["rating"] for r in _read(movielens_root / F.INTERACTIONS_FILE)} == {"1", "2", "3", "4", "5"}


@pytest.mark.slow
def test_movielens_converted_by_hand_runs_twice_with_zero_configuration(movielens_root, output_dir):
    code, out, err = _recsys(movielens_root, output_dir, "--model", "ease", *FAST_RUN)
    assert code == 0, (out[-3000:], err[-3000:])
    assert "model blessed and pushed to" in out, out[-2000:]
    assert len(os.listdir(os.path.join(output_dir, "serving", F.DEFAULT_MODEL_NAME))) == 1
    assert "inferred the data contract" in out
    # A first run has no earlier statistics: said in the progress, not as a resolver's ERROR and traceback.
    _assert_healthy(out, err)
    assert "drift vs the previous run: skipped, no earlier accepted statistics" in out, out[-3000:]
    # The contract the user reviews: genres multi-valued on '|', year numeric, title shown as the title.
    with open(movielens_root / contract_lib.CONTRACT_FILE) as f:
        contract = contract_lib.DataContract.from_json(f.read())
    kinds = {feature.name: (feature.kind, feature.separator) for feature in contract.item_features}
    assert kinds["genres"] == (contract_lib.MULTI, "|") and kinds["year"] == (contract_lib.NUMERIC, "")
    assert contract.title == "title" and contract.rating_range == (1.0, 5.0)
    # The curated schema: inferred from the data (so ML-100K's genre names are in it), the label and the
    # other training-only keys marked absent from serving, drift comparators on the attributes.
    schema = _schema(movielens_root / SCHEMA_FILE)
    features = {feature.name: feature for feature in schema.feature}
    assert "SERVING" in features[F.RATING].not_in_environment
    assert "SERVING" in features[F.TIMESTAMP].not_in_environment
    assert "SERVING" not in features[F.USER_ID].not_in_environment
    assert features["genres"].HasField("drift_comparator") and features["year"].HasField("drift_comparator")
    assert not features[F.USER_ID].HasField("drift_comparator")
    schema_text = (movielens_root / SCHEMA_FILE).read_text()
    # Run 2 on the same data: the curated schema is imported (never rewritten) and the gate passes.
    code, out, err = _recsys(movielens_root, output_dir, "--model", "ease", *FAST_RUN)
    assert code == 0, (out[-3000:], err[-3000:])
    assert "inferred the data contract" not in out
    assert (movielens_root / SCHEMA_FILE).read_text() == schema_text
    _assert_healthy(out, err)
    assert "drift vs the previous run: skipped" not in out  # compared with the first run's statistics
    assert len(glob.glob(os.path.join(output_dir, "logs", "*.log"))) == 2  # one log per run


def _all_dramas(source, destination):
    """`source` copied with every movie a Drama: a value the schema knows, so only the distribution moves. The
    reviewed contract.json and schema.pbtxt come along, as in a committed data repository."""
    shutil.copytree(source, destination)
    items = _read(destination / F.ITEMS_FILE)
    _write(destination / F.ITEMS_FILE, ("item_id", "title", "genres", "year"),
           [(r["item_id"], r["title"], "Drama", r["year"]) for r in items])
    return destination


def _gate_error(err):
    return _one_line(err)


_LAST_ACCEPTED = {}  # the data of the latest run in output_dir that passed the gate, when not the original


def _ensure_baseline_run(movielens_root, output_dir):
    if not (movielens_root / SCHEMA_FILE).exists():  # run alone: the baseline run the test above makes
        code, out, err = _recsys(movielens_root, output_dir, "--model", "ease", *FAST_RUN)
        assert code == 0, (out[-3000:], err[-3000:])


@pytest.mark.slow
def test_drift_from_the_previous_run_stops_the_gate_unless_allowed(movielens_root, output_dir, tmp_path):
    _ensure_baseline_run(movielens_root, output_dir)
    drifted = _all_dramas(movielens_root, tmp_path / "drifted")
    serving = os.path.join(output_dir, "serving", F.DEFAULT_MODEL_NAME)
    versions = sorted(os.listdir(serving))
    code, out, err = _recsys(drifted, output_dir, "--model", "ease", *FAST_RUN)
    print(f"stderr of the drift stop:\n{err}")
    assert code == cli.EXIT_ERROR, (out[-3000:], err[-3000:])
    error = _gate_error(err)
    assert "drift" in error and "'genres'" in error, err
    assert "'year'" not in error and "'rating'" not in error, err  # only what moved
    assert f"edit {drifted / SCHEMA_FILE}" in error and "--allow-drift" in error, err  # what to do
    assert "Transform" not in out and sorted(os.listdir(serving)) == versions  # stopped at the gate
    code, out, err = _recsys(drifted, output_dir, "--model", "ease", "--allow-drift", *FAST_RUN)
    assert code in (0, cli.EXIT_NOT_BLESSED), (out[-3000:], err[-3000:])  # past the gate: trained and evaluated
    assert "Trainer done" in out and "RankingGate done" in out, out[-3000:]
    # Its baseline is the last span the gate accepted (not the rejected run's statistics): the drift is reported.
    assert "data drift (allowed" in out and "'genres'" in out, out[-3000:]
    _LAST_ACCEPTED["all_dramas"] = True


@pytest.mark.slow
def test_a_run_the_gate_rejected_does_not_become_the_drift_baseline(movielens_root, output_dir, tmp_path):
    _ensure_baseline_run(movielens_root, output_dir)
    # Drift away from the genres of the latest run the gate accepted, then run the same command twice.
    moved = movielens_root if _LAST_ACCEPTED.get("all_dramas") else _all_dramas(movielens_root, tmp_path / "dramas")
    code, out, err = _recsys(moved, output_dir, "--model", "ease", *FAST_RUN)
    assert code == cli.EXIT_ERROR and "'genres'" in _gate_error(err), (out[-3000:], err[-3000:])
    code, out, err = _recsys(moved, output_dir, "--model", "ease", *FAST_RUN)
    assert code == cli.EXIT_ERROR and "'genres'" in _gate_error(err), (out[-3000:], err[-3000:])


def _implicit_root(root):
    movielens_shaped(str(root), synthetic.SampleSpec(num_users=40, num_items=30, num_ratings=400, seed=5))
    rows = _read(root / F.INTERACTIONS_FILE)
    _write(root / F.INTERACTIONS_FILE, ("user_id", "item_id", "timestamp"),
           [(r["user_id"], r["item_id"], r["timestamp"]) for r in rows])


def test_a_rating_model_on_implicit_data_is_one_line_before_the_pipeline(tmp_path):
    root = tmp_path / "clicks"
    root.mkdir()
    _implicit_root(root)
    code, out, err = _recsys(root, tmp_path / "out", "--model", "mf")
    assert code == cli.EXIT_ERROR
    assert len(err.splitlines()) == 1, err
    assert "--model mf" in err and "no rating column" in err and F.INTERACTIONS_FILE in err, err
    assert "implicit feedback" in out  # the contract as described to the user
    assert not (tmp_path / "out").exists()  # nothing trained, not even an output dir


def test_a_duplicated_item_row_is_one_line_naming_the_id_before_the_pipeline(tmp_path):
    root = tmp_path / "dup"
    root.mkdir()
    _implicit_root(root)
    items = _read(root / F.ITEMS_FILE)
    _write(root / F.ITEMS_FILE, ("item_id", "title", "genres", "year"),
           [tuple(r.values()) for r in items[:8]] + [tuple(items[3].values())] + [tuple(r.values()) for r in items[8:]])
    code, out, err = _recsys(root, tmp_path / "out", "--model", "ease")
    assert code == cli.EXIT_ERROR
    assert len(err.splitlines()) == 1, err
    assert f"item_id '{items[3]['item_id']}' appears in more than one row" in err and F.ITEMS_FILE in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_delivery_with_ratings_off_the_scale_is_one_line_with_the_range_and_the_share(movielens_root, output_dir,
                                                                                        tmp_path):
    """Not TFDV's "Out-of-range values": the values, the range the reviewed schema allows, how many lie outside."""
    _ensure_baseline_run(movielens_root, output_dir)
    bad = tmp_path / "bad"
    shutil.copytree(movielens_root, bad)
    rows = _read(bad / F.INTERACTIONS_FILE)
    for row in rows[::20]:  # 5 % of the ratings on a 0-10 scale
        row["rating"] = "7"
    _write(bad / F.INTERACTIONS_FILE, tuple(rows[0]), [tuple(r.values()) for r in rows])
    code, out, err = _recsys(bad, output_dir, "--model", "ease", *FAST_RUN)
    assert code == cli.EXIT_ERROR, (out[-3000:], err[-3000:])
    error = _one_line(err)
    assert "feature 'rating' (train, validation, eval splits): Unexpectedly high value: 7>5" in error, error
    share = float(re.search(r"the schema allows \[1, 5\]; at least ([0-9.]+) % of the train values", error).group(1))
    assert 3.0 <= share <= 5.5, error
    assert "Multiple errors" not in error and f"edit {bad / SCHEMA_FILE}" in error, error
    assert "Transform" not in out


def test_compile_without_a_contract_on_unreachable_storage_is_one_line(tmp_path):
    """No network here: reading gs://.../contract.json fails; the line says so and names --contract."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "compile", "--image", "img",
                           "--data-root", "gs://recsys-unreachable-bucket/data", "--output-dir",
                           "gs://recsys-unreachable-bucket/out", "--output", str(tmp_path / "p.json")],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == cli.EXIT_ERROR and len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith("recsys compile: error: cannot read the data contract "
                               "gs://recsys-unreachable-bucket/data/contract.json"), lines[0]
    assert "--contract FILE" in lines[0] and not (tmp_path / "p.json").exists()
