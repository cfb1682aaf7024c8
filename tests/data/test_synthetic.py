"""The sample plants taste in which items users pick: popularity beats random, taste-aware references beat
popularity, activity and popularity are long-tailed, and the output is deterministic and streamed."""

import csv
import dataclasses
import filecmp
import os
from collections import Counter

import numpy as np
import pytest

from components import features as F
from components import ranking_eval as R
from data import synthetic
from tests.conftest import TINY

K = 10


def _rows(root):
    with open(os.path.join(root, F.INTERACTIONS_FILE), newline="") as f:
        return list(csv.DictReader(f))


def _holdout(rows, fraction=0.2, seed=0):
    """Per-user random holdout: the protocol the issue's figures use (training items excluded when ranking)."""
    rng = np.random.default_rng(seed)
    by_user = {}
    for r in rows:
        by_user.setdefault(r[F.USER_ID], []).append(r[F.ITEM_ID])
    train, test = [], []
    for user, items in sorted(by_user.items()):
        items = list(rng.permutation(items))
        n = int(round(len(items) * fraction))
        test += [(user, i) for i in items[:n]]
        train += [(user, i) for i in items[n:]]
    return train, test


def _recalls(root):
    rows = _rows(root)
    train, test = _holdout(rows)
    catalogue = sorted({r[F.ITEM_ID] for r in rows})
    interactions = R.Interactions.from_pairs(train, catalogue)
    relevant = R.relevant_by_user(test)
    users = sorted(relevant)
    rng = np.random.default_rng(1)
    scorers = {"random": lambda rows_: rng.random((len(rows_), len(catalogue))),
               "popular": R.most_popular(interactions), "ease": R.ease(interactions),
               "item_knn": R.item_knn(interactions)}
    return {name: R.ranking_metrics(R.top_k(interactions, s, users, K), relevant, K)["recall"]
            for name, s in scorers.items()}


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("default_sample"))
    synthetic.generate(root, synthetic.SampleSpec())
    return root


def test_tiny_sample_rewards_popularity_and_more_so_taste(tiny_data):
    recall = _recalls(tiny_data)
    assert recall["popular"] >= 3 * recall["random"]
    assert recall["ease"] >= 1.5 * recall["popular"]
    assert recall["item_knn"] >= 1.5 * recall["popular"]
    assert recall["ease"] < 0.8  # learnable, not trivial


def test_default_sample_is_as_hard_as_a_public_rating_log(sample_root):
    recall = _recalls(sample_root)
    assert recall["popular"] >= 5 * recall["random"]
    assert recall["ease"] >= 1.3 * recall["popular"] and recall["item_knn"] >= 1.3 * recall["popular"]
    assert 0.15 <= recall["ease"] <= 0.45


def test_default_sample_has_long_tails_and_sane_ratings(sample_root):
    rows = _rows(sample_root)
    per_item = np.array(sorted(Counter(r[F.ITEM_ID] for r in rows).values(), reverse=True))
    assert per_item[: synthetic.SampleSpec.num_items // 10].sum() > 0.4 * len(rows)
    per_user = np.array(list(Counter(r[F.USER_ID] for r in rows).values()))
    assert len(per_user) == synthetic.SampleSpec.num_users and per_user.min() >= 5
    assert per_user.max() >= 10 * np.median(per_user)
    assert len({(r[F.USER_ID], r[F.ITEM_ID]) for r in rows}) == len(rows)  # each pair once
    ratings = np.array([float(r[F.RATING]) for r in rows])
    assert ratings.min() >= synthetic.RATING_MIN and ratings.max() <= synthetic.RATING_MAX
    assert np.all(ratings * 2 == np.round(ratings * 2)) and 3.0 < ratings.mean() < 4.2 and ratings.std() > 0.6


def test_exact_size_determinism_and_streaming(tmp_path):
    a, b, c, d = (str(tmp_path / n) for n in "abcd")
    assert synthetic.generate(a, TINY)["interactions"] == TINY.num_ratings
    synthetic.generate(b, TINY)
    synthetic.generate(c, dataclasses.replace(TINY, chunk_size=500))  # many chunks, same file
    for name in (F.INTERACTIONS_FILE, F.ITEMS_FILE):
        assert filecmp.cmp(os.path.join(a, name), os.path.join(b, name), shallow=False)
        assert filecmp.cmp(os.path.join(a, name), os.path.join(c, name), shallow=False)
    assert len(_rows(a)) == TINY.num_ratings
    synthetic.generate(d, dataclasses.replace(TINY, seed=TINY.seed + 1))
    assert not filecmp.cmp(os.path.join(a, F.INTERACTIONS_FILE), os.path.join(d, F.INTERACTIONS_FILE), shallow=False)
    with open(os.path.join(a, F.INTERACTIONS_FILE)) as f:
        assert f.readline().strip() == "user_id,item_id,rating,timestamp"
    with open(os.path.join(a, F.ITEMS_FILE)) as f:
        assert f.readline().strip() == "item_id,title,genres,year"


def test_large_catalogue_path_keeps_sizes_and_tails(tmp_path):
    spec = synthetic.SampleSpec(num_users=600, num_items=synthetic.POOL_ITEMS + 2000, num_ratings=30_000, seed=9)
    synthetic.generate(str(tmp_path), spec)
    rows = _rows(str(tmp_path))
    assert len(rows) == spec.num_ratings
    assert len({(r[F.USER_ID], r[F.ITEM_ID]) for r in rows}) == len(rows)
    per_item = np.array(sorted(Counter(r[F.ITEM_ID] for r in rows).values(), reverse=True))
    assert per_item[: spec.num_items // 10].sum() > 0.4 * len(rows)


def test_impossible_sizes_fail_with_one_line():
    with pytest.raises(ValueError, match="num_ratings"):
        synthetic.generate("/nonexistent", synthetic.SampleSpec(num_users=2, num_items=3, num_ratings=7))
