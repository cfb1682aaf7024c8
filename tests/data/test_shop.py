"""The shop sample: implicit feedback with planted taste (EASE beats popularity, popularity beats random on each
user's last interaction), long tails, user features that carry signal, and CSV text that needs real quoting."""

import csv
import dataclasses
import filecmp
import os
from collections import Counter, defaultdict

import numpy as np
import pytest

from components import features as F
from components import ranking_eval as R
from data import shop

K = 10
SMALL = shop.ShopSpec(num_users=200, num_items=400, num_interactions=5000, num_brands=40, seed=7)


def _read(root, name):
    with open(os.path.join(root, name), newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def shop_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("shop"))
    counts = shop.generate(root)  # plus the held-out data's counts (tests/data/test_heldout.py)
    assert {k: counts[k] for k in ("users", "items", "interactions")} == {"users": 1500, "items": 3000,
                                                                         "interactions": 60_000}
    return root


def _last_out(rows):
    """Each user's last interaction by timestamp is held out; the rest is training."""
    by_user = defaultdict(list)
    for n, r in enumerate(rows):
        by_user[r[F.USER_ID]].append((int(r[F.TIMESTAMP]), n, r[F.ITEM_ID]))
    train, test = [], []
    for user, events in sorted(by_user.items()):
        events.sort()
        test.append((user, events[-1][2]))
        train += [(user, item) for _, _, item in events[:-1]]
    return train, test


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    a, b, c = (str(tmp_path / n) for n in "abc")
    shop.generate(a, SMALL)
    shop.generate(b, SMALL)
    shop.generate(c, dataclasses.replace(SMALL, seed=SMALL.seed + 1))
    for name in (F.INTERACTIONS_FILE, F.ITEMS_FILE, F.USERS_FILE):
        assert filecmp.cmp(os.path.join(a, name), os.path.join(b, name), shallow=False), name
        assert not filecmp.cmp(os.path.join(a, name), os.path.join(c, name), shallow=False), name
    assert not [n for n in os.listdir(a) if n.startswith(".")]  # no temp file left behind


def test_headers_ids_and_implicit_feedback(shop_root):
    headers = {}
    for name in (F.INTERACTIONS_FILE, F.ITEMS_FILE, F.USERS_FILE):
        with open(os.path.join(shop_root, name), newline="") as f:
            headers[name] = next(csv.reader(f))
    assert headers == {F.INTERACTIONS_FILE: ["user_id", "item_id", "timestamp"],  # no rating column
                       F.ITEMS_FILE: ["item_id", "title", "category", "brand", "price", "description"],
                       F.USERS_FILE: ["user_id", "age", "country", "segment"]}
    rows = _read(shop_root, F.INTERACTIONS_FILE)
    assert rows[0][F.USER_ID] == "u00001" and all(r[F.ITEM_ID].startswith("p") for r in rows[:100])
    assert len({(r[F.USER_ID], r[F.ITEM_ID]) for r in rows}) == len(rows)  # each user picks distinct items
    items = {r[F.ITEM_ID] for r in _read(shop_root, F.ITEMS_FILE)}
    assert {r[F.ITEM_ID] for r in rows} <= items and len(items) == 3000


def test_descriptions_need_quoting_and_round_trip(shop_root):
    items = _read(shop_root, F.ITEMS_FILE)
    assert len(items) == 3000 and all(len(r) == 6 and None not in r for r in items)
    with open(os.path.join(shop_root, F.ITEMS_FILE), newline="") as f:
        physical_lines = f.read().count("\n")
    assert physical_lines > len(items) + 1  # newlines inside quoted fields really are in the file
    text = [r["description"] for r in items]
    assert all("," in d for d in text)
    assert 0.3 < np.mean(['"' in d for d in text]) < 0.9
    assert any('" ' in d and d[d.index('"') - 1].isdigit() for d in text)  # an inch mark: 12" screen
    assert 0.01 < np.mean(["\n" in d for d in text]) < 0.1
    words = [len(d.split()) for d in text]
    assert min(words) >= 8 and max(words) <= 30
    title = items[0]["title"].split()
    assert title[0] == items[0]["brand"] and title[-1].isdigit()


def test_categories_brands_prices_and_users(shop_root):
    items = _read(shop_root, F.ITEMS_FILE)
    assert 12 <= len({r["category"] for r in items}) <= 20 and 100 <= len({r["brand"] for r in items}) <= 200
    brand_categories = defaultdict(set)
    for r in items:
        brand_categories[r["brand"]].add(r["category"])
    assert all(len(c) == 1 for c in brand_categories.values())  # a brand sells in its own category
    missing = np.mean([r["price"] == "" for r in items])
    assert 0.015 < missing < 0.05
    prices = [r["price"] for r in items if r["price"]]
    assert all(len(p.split(".")[1]) == 2 and float(p) > 0 for p in prices)
    by_category = defaultdict(list)
    for r in items:
        if r["price"]:
            by_category[r["category"]].append(float(r["price"]))
    medians = [np.median(v) for v in by_category.values()]
    assert max(medians) > 4 * min(medians)  # price depends on the category
    users = _read(shop_root, F.USERS_FILE)
    ages = [int(u["age"]) for u in users if u["age"]]
    assert len(users) == 1500 and 0 < len(users) - len(ages) < 100 and min(ages) >= 16 and max(ages) <= 80
    assert len({u["country"] for u in users}) == 10 and len({u["segment"] for u in users}) == 5


def test_long_tails(shop_root):
    rows = _read(shop_root, F.INTERACTIONS_FILE)
    per_item = np.array(sorted(Counter(r[F.ITEM_ID] for r in rows).values(), reverse=True))
    assert 0.35 <= per_item[:300].sum() / len(rows) <= 0.6
    per_user = np.array(list(Counter(r[F.USER_ID] for r in rows).values()))
    assert len(per_user) == 1500 and per_user.min() >= 5 and per_user.max() >= 8 * np.median(per_user)


def test_taste_is_planted_and_user_features_carry_it(shop_root):
    rows = _read(shop_root, F.INTERACTIONS_FILE)
    train, test = _last_out(rows)
    catalogue = [r[F.ITEM_ID] for r in _read(shop_root, F.ITEMS_FILE)]
    interactions = R.Interactions.from_pairs(train, catalogue)
    relevant = R.relevant_by_user(test)
    users = sorted(relevant)
    hit = {name: R.ranking_metrics(R.top_k(interactions, scorer, users, K), relevant, K)["recall"]
           for name, scorer in (("popular", R.most_popular(interactions)), ("ease", R.ease(interactions)))}
    seen = Counter(u for u, _ in train)
    hit["random"] = float(np.mean([K / (len(catalogue) - seen[u]) for u in users]))  # its expected value
    assert hit["popular"] >= 3 * hit["random"]
    assert hit["ease"] >= 2 * hit["popular"]
    assert hit["ease"] < 0.6  # learnable, not trivial

    # Cold start: the most popular items among users of the same segment and age band, with no history at all,
    # beat the global most popular: user features carry taste.
    profile = {u["user_id"]: (u["segment"], u["age"] and int(u["age"]) // 15) for u in _read(shop_root, F.USERS_FILE)}
    by_profile = defaultdict(Counter)
    for user, item in train:
        by_profile[profile[user]][item] += 1
    top_global = {i for i, _ in Counter(i for _, i in train).most_common(K)}
    cold_global = np.mean([item in top_global for _, item in test])
    cold_profile = np.mean([item in {i for i, _ in by_profile[profile[u]].most_common(K)} for u, item in test])
    assert cold_profile >= 1.15 * cold_global


def test_impossible_sizes_fail_with_one_line():
    with pytest.raises(ValueError, match="num_interactions"):
        shop.generate("/nonexistent", shop.ShopSpec(num_users=2, num_items=3, num_interactions=7))
