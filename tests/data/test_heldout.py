"""Held-out data of the samples (data/heldout.py): each user's next interaction and anonymous sessions of new users,
drawn from the samples' taste, written under DATA/heldout/ where neither the contract nor ExampleGen looks, and
without moving a byte of interactions.csv, items.csv or users.csv."""

import collections
import csv
import dataclasses
import filecmp
import hashlib
import os
import posixpath

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.testing.util import assert_that

from components import contract as contract_lib
from components import features as F
from data import heldout, shop, synthetic
from pipeline import cli
from tests.conftest import TINY

SMALL_SHOP = shop.ShopSpec(num_users=200, num_items=400, num_interactions=5000, num_brands=40, seed=7)
# What the generators wrote before the held-out data existed (same seed, same flags): sha256 of each file.
MOVIES_SHA256 = {F.INTERACTIONS_FILE: "01c527f4ab7d642b49de5d981b0a1294bac29e37d945c44b04b3f0e59927b0c3",
                 F.ITEMS_FILE: "c3075360372e44489515dcbb0c873528e01ddd3e3950fc38d953ebfcdfbe3ac4"}
SHOP_SHA256 = {F.INTERACTIONS_FILE: "fc3aa4dc55804c94fcf9792f6378d9e24f76b457822eb7f873d08776647b6216",
               F.ITEMS_FILE: "e81da3bc8a14700e8e0e23d3b6ce728d8af7e40732283af6abfac5d29b8843d3",
               F.USERS_FILE: "3116152b9577b3b7347fa38ecfc51b69667c48993016f2473d0d59c5d63d3382"}
TINY_SHA256 = {F.INTERACTIONS_FILE: "bd1559ec3da284efdbf82327115bb86230113b9196e8c728b95be81640617dd9",
               F.ITEMS_FILE: "2b74d042ec8f04035a65d29dacf089c7c62da15f62568f41bffa02e4e93adc4d"}


def _read(root, name):
    with open(os.path.join(root, name), newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _sha256(root, name):
    with open(os.path.join(root, name), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _histories(root):
    history = collections.defaultdict(set)
    last = collections.defaultdict(int)
    for r in _read(root, F.INTERACTIONS_FILE):
        history[r[F.USER_ID]].add(r[F.ITEM_ID])
        last[r[F.USER_ID]] = max(last[r[F.USER_ID]], int(r[F.TIMESTAMP]))
    return history, last


@pytest.fixture(scope="module")
def movies_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("movies"))
    counts = synthetic.generate(root, synthetic.SampleSpec())
    assert counts == {"users": 2000, "items": 2000, "interactions": 100_000, "next": 2000, "sessions": 300}
    return root


@pytest.fixture(scope="module")
def shop_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("shop"))
    counts = shop.generate(root, shop.ShopSpec())
    assert counts == {"users": 1500, "items": 3000, "interactions": 60_000, "next": 1500, "sessions": 300}
    return root


@pytest.fixture(params=["movies", "shop"])
def sample(request, movies_root, shop_root):
    return request.param, movies_root if request.param == "movies" else shop_root


def test_the_main_files_are_byte_identical_to_the_samples_before_held_out_data(movies_root, shop_root, tiny_data):
    for root, expected in ((movies_root, MOVIES_SHA256), (shop_root, SHOP_SHA256), (tiny_data, TINY_SHA256)):
        assert {name: _sha256(root, name) for name in expected} == expected, root


def test_the_three_files_exist_with_their_headers(sample):
    _, root = sample
    assert sorted(os.listdir(os.path.join(root, heldout.HELDOUT_DIR))) == sorted(heldout.FILES)
    for name, columns in ((heldout.NEXT_FILE, heldout.NEXT_COLUMNS), (heldout.SESSIONS_FILE, heldout.SESSIONS_COLUMNS),
                          (heldout.SESSIONS_NEXT_FILE, heldout.SESSIONS_NEXT_COLUMNS)):
        with open(heldout.path(root, name), newline="") as f:
            assert tuple(next(csv.reader(f))) == columns
    assert heldout.NEXT_COLUMNS == ("user_id", "item_id") and heldout.SESSIONS_NEXT_COLUMNS == ("session_id", "item_id")
    assert heldout.SESSIONS_COLUMNS == ("session_id", "item_id", "timestamp")


def test_every_user_gets_a_next_item_outside_their_history(sample):
    _, root = sample
    history, _ = _histories(root)
    items = {r[F.ITEM_ID] for r in _read(root, F.ITEMS_FILE)}
    nexts = heldout.read_next(root)
    assert [u for u, _ in nexts] == sorted(history) and len(nexts) == len(history)  # every user, once, in order
    assert all(item in items and item not in history[user] for user, item in nexts)


def test_sessions_are_new_users_with_the_real_activity_and_a_next_item_outside_them(sample):
    kind, root = sample
    history, last = _histories(root)
    users = {r[F.USER_ID] for r in _read(root, F.USERS_FILE)} if kind == "shop" else set()
    items = {r[F.ITEM_ID] for r in _read(root, F.ITEMS_FILE)}
    sessions, nexts = heldout.read_sessions(root), heldout.read_sessions_next(root)
    assert len(sessions) == 300 and sorted(nexts) == sorted(sessions)
    assert not set(sessions) & (set(history) | users)  # never a user the pipeline saw
    for session, its in sessions.items():
        assert len(set(its)) == len(its) and set(its) <= items
        assert nexts[session] in items and nexts[session] not in its
    # Lengths from the users' own activity distribution (lognormal, at least min_user_*): similar centre and tail.
    lengths = np.array([len(v) for v in sessions.values()])
    activity = np.array([len(v) for v in history.values()])
    assert lengths.min() >= 5 and abs(np.median(lengths) / np.median(activity) - 1) < 0.3
    assert abs(lengths.mean() / activity.mean() - 1) < 0.05 and lengths.max() >= 8 * np.median(lengths)
    # In time order in the file and in the reader, all after the log ends.
    rows = _read(os.path.join(root, heldout.HELDOUT_DIR), heldout.SESSIONS_FILE)
    stamps = collections.defaultdict(list)
    for r in rows:
        stamps[r[heldout.SESSION_ID]].append(int(r[F.TIMESTAMP]))
    assert all(s == sorted(s) for s in stamps.values())
    assert min(min(s) for s in stamps.values()) > max(last.values())
    assert sessions == {s: [r[F.ITEM_ID] for r in rows if r[heldout.SESSION_ID] == s] for s in sessions}


def test_a_sessions_next_item_follows_its_planted_taste(sample):
    """The next item carries the session's dominant genre (movies) or category (shop) several times more often
    than an item drawn by popularity does: sessions are histories of the same taste model (measured: movies 0.320
    vs 0.114, shop 0.420 vs 0.085)."""
    kind, root = sample
    item_rows = _read(root, F.ITEMS_FILE)
    attributes = {r[F.ITEM_ID]: set(r["genres"].split(synthetic.GENRE_SEPARATOR)) if kind == "movies"
                  else {r["category"]} for r in item_rows}
    popularity = collections.Counter(r[F.ITEM_ID] for r in _read(root, F.INTERACTIONS_FILE))
    total = sum(popularity.values())
    sessions, nexts = heldout.read_sessions(root), heldout.read_sessions_next(root)
    shared = chance = 0.0
    for session, its in sessions.items():
        dominant = collections.Counter(a for i in its for a in attributes[i]).most_common(1)[0][0]
        shared += dominant in attributes[nexts[session]]
        chance += sum(n for i, n in popularity.items() if dominant in attributes[i]) / total
    shared, chance = shared / len(sessions), chance / len(sessions)
    print(f"{kind}: next item shares the session's dominant attribute {shared:.3f}, by popularity {chance:.3f}")
    assert shared >= (2.5 if kind == "movies" else 4) * chance


def test_same_seed_same_held_out_bytes_other_seed_other_data(tmp_path):
    a, b, c = (str(tmp_path / n) for n in "abc")
    synthetic.generate(a, TINY)
    synthetic.generate(b, dataclasses.replace(TINY, chunk_size=500))  # many chunks: the same files
    synthetic.generate(c, dataclasses.replace(TINY, seed=TINY.seed + 1))
    for name in heldout.FILES:
        assert filecmp.cmp(heldout.path(a, name), heldout.path(b, name), shallow=False), name
        assert not filecmp.cmp(heldout.path(a, name), heldout.path(c, name), shallow=False), name
    d, e = (str(tmp_path / n) for n in "de")
    shop.generate(d, SMALL_SHOP)
    shop.generate(e, SMALL_SHOP)
    for name in heldout.FILES:
        assert filecmp.cmp(heldout.path(d, name), heldout.path(e, name), shallow=False), name
    assert not [n for n in os.listdir(os.path.join(a, heldout.HELDOUT_DIR)) if n.startswith(".")]  # no temp file


def test_the_large_catalogue_path_and_the_bound_on_next_users(tmp_path):
    spec = synthetic.SampleSpec(num_users=600, num_items=synthetic.POOL_ITEMS + 2000, num_ratings=30_000, seed=9,
                                max_next_users=300, num_sessions=40)
    counts = synthetic.generate(str(tmp_path), spec)
    assert counts["next"] == 300 and counts["sessions"] == 40
    history, _ = _histories(str(tmp_path))
    nexts = heldout.read_next(str(tmp_path))
    assert [u for u, _ in nexts] == [synthetic.user_key(u) for u in range(300)]
    assert all(item not in history[user] for user, item in nexts)
    sessions, session_next = heldout.read_sessions(str(tmp_path)), heldout.read_sessions_next(str(tmp_path))
    assert all(session_next[s] not in its for s, its in sessions.items())


def test_a_catalogue_the_user_has_exhausted_leaves_no_next_item(tmp_path):
    counts = synthetic.generate(str(tmp_path), synthetic.SampleSpec(num_users=30, num_items=20, num_ratings=300))
    history, _ = _histories(str(tmp_path))
    full = {u for u, items in history.items() if len(items) == 20}
    assert full and counts["next"] == 30 - len(full)
    assert {u for u, _ in heldout.read_next(str(tmp_path))} == set(history) - full
    sessions, nexts = heldout.read_sessions(str(tmp_path)), heldout.read_sessions_next(str(tmp_path))
    assert sessions and all(len(its) < 20 for its in sessions.values()) and sorted(nexts) == sorted(sessions)


def test_readers_order_a_session_by_time(tmp_path):
    os.makedirs(tmp_path / heldout.HELDOUT_DIR)
    (tmp_path / heldout.HELDOUT_DIR / heldout.SESSIONS_FILE).write_text(
        "session_id,item_id,timestamp\nb,i3,30\nb,i1,10\na,i9,5\nb,i2,20\nb,i4,20\n")
    (tmp_path / heldout.HELDOUT_DIR / heldout.SESSIONS_NEXT_FILE).write_text("session_id,item_id\nb,i5\na,i1\n")
    (tmp_path / heldout.HELDOUT_DIR / heldout.NEXT_FILE).write_text("user_id,item_id\nu2,i1\nu1,i2\n")
    assert heldout.read_sessions(str(tmp_path)) == {"b": ["i1", "i2", "i4", "i3"], "a": ["i9"]}
    assert list(heldout.read_sessions(str(tmp_path))) == ["b", "a"]
    assert heldout.read_sessions_next(str(tmp_path)) == {"b": "i5", "a": "i1"}
    assert heldout.read_next(str(tmp_path)) == [("u2", "i1"), ("u1", "i2")]


def test_neither_the_contract_nor_example_gen_reads_the_held_out_files(tmp_path):
    """The contract names the top-level files only, and ExampleGen's input pattern matches interactions.csv alone:
    every example is a row of interactions.csv, none a session or a next item."""
    from google.protobuf import json_format

    from components import example_gen

    root = str(tmp_path)
    counts = synthetic.generate(root, synthetic.SampleSpec(num_users=40, num_items=30, num_ratings=500, seed=5))
    assert counts["sessions"] > 0 and counts["next"] > 0
    contract = contract_lib.infer(root)
    assert (contract.interactions_file, contract.items_file, contract.users_file) == (F.INTERACTIONS_FILE,
                                                                                      F.ITEMS_FILE, "")
    assert tf.io.gfile.glob(posixpath.join(root, contract.interactions_file)) == [
        posixpath.join(root, F.INTERACTIONS_FILE)]
    exec_properties = {"input_base": root, "custom_config": json_format.MessageToJson(
        example_gen.custom_config(contract, example_gen.SPLIT_HASH, 0.0, 0.0))}
    expected = sorted((r[F.USER_ID], r[F.ITEM_ID]) for r in _read(root, F.INTERACTIONS_FILE))

    def check(examples):
        pairs = sorted((e.features.feature[F.USER_ID].bytes_list.value[0].decode(),
                        e.features.feature[F.ITEM_ID].bytes_list.value[0].decode()) for e in examples)
        assert pairs == expected

    with beam.Pipeline() as p:
        examples = p | example_gen._JoinedRatingsToExample(exec_properties, contract.interactions_file)
        assert_that(examples, check)


def test_sample_over_an_existing_directory_replaces_the_held_out_files(tmp_path, capsys):
    out, fresh = tmp_path / "data", tmp_path / "fresh"
    small = ["--num-interactions", "600", "--num-users", "30", "--num-items", "60"]
    assert cli.main(["sample", "--out", str(out), *small]) == 0
    assert cli.main(["sample", "--kind", "shop", "--out", str(out), *small, "--seed", "3"]) == 0
    assert cli.main(["sample", "--kind", "shop", "--out", str(fresh), *small, "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert f"held out under {out / heldout.HELDOUT_DIR}: the next item of 30 users, 300 anonymous sessions" in printed
    for name in heldout.FILES:
        assert filecmp.cmp(heldout.path(str(out), name), heldout.path(str(fresh), name), shallow=False), name
    assert all(item.startswith("p") for _, item in heldout.read_next(str(out)))  # the shop's, not the movies'
