"""The ranking gate's executor on small planted data, with small SavedModels built here.

Users belong to one of three taste groups and pick mostly their group's items (popular ones more
often), so a model that knows the groups beats most-popular by a wide margin; a model that ranks by
popularity is no better than most-popular, and one that knows half the users' groups regresses
against the full-knowledge model.
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from tfx.types import artifact_utils, standard_artifacts

from components import features as F
from components import ranking_gate as G
from components import models, ranking_eval
from components import signatures as signatures_lib

NUM_USERS, NUM_ITEMS, GROUPS = 120, 60, 3
TRAIN_PER_USER, EVAL_PER_USER = 10, 3


def _planted(seed=0):
    rng = np.random.default_rng(seed)
    group_of_item = np.arange(NUM_ITEMS) % GROUPS
    popularity = 1.0 / (1 + np.arange(NUM_ITEMS)) ** 0.7  # long tail over the item ids
    users, items = [f"u{u:03d}" for u in range(NUM_USERS)], [f"i{i:03d}" for i in range(NUM_ITEMS)]
    train, evaluation = [], []
    for u in range(NUM_USERS):
        weights = popularity * np.where(group_of_item == u % GROUPS, 1.0, 0.03)
        picked = rng.choice(NUM_ITEMS, TRAIN_PER_USER + EVAL_PER_USER, replace=False, p=weights / weights.sum())
        train += [(users[u], items[i]) for i in picked[:TRAIN_PER_USER]]
        evaluation += [(users[u], items[i]) for i in picked[TRAIN_PER_USER:]]
    counts = np.zeros(NUM_ITEMS)
    for _, item in train:
        counts[items.index(item)] += 1
    counts += 0.01 * (NUM_ITEMS - np.arange(NUM_ITEMS)) / NUM_ITEMS  # no ties: one right order to compare
    taste = (np.arange(NUM_USERS)[:, None] % GROUPS == group_of_item[None, :]) * 100.0 + counts[None, :]
    return users, items, train, evaluation, counts, taste


def _write_examples(root, splits):
    examples = standard_artifacts.Examples()
    examples.uri = str(root)
    examples.split_names = artifact_utils.encode_split_names(list(splits))
    pairs = [p for rows in splits.values() for p in rows]
    user_counts, item_counts = {}, {}
    for user, item in pairs:
        user_counts[user] = user_counts.get(user, 0) + 1
        item_counts[item] = item_counts.get(item, 0) + 1
    for name, rows in splits.items():
        folder = root / f"Split-{name}"
        folder.mkdir(parents=True)
        with tf.io.TFRecordWriter(str(folder / "data_tfrecord-00000-of-00001.gz"), options="GZIP") as writer:
            for user, item in rows:
                values = {F.USER_ID: user, F.ITEM_ID: item,
                          F.USER_ACTIVITY: F.count_bucket(user_counts[user], (10, 14)),
                          F.ITEM_POPULARITY: F.count_bucket(item_counts[item], F.POPULARITY_EDGES)}
                feature = {k: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode()]))
                           for k, v in values.items()}
                writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return examples


class _ScoreTableModel(tf.Module):
    """recommend / recommend_filtered over a fixed users x items score table (the documented contract)."""

    def __init__(self, users, items, scores):
        super().__init__()
        self.items = tf.Variable(items, dtype=tf.string, trainable=False)
        # unknown users get the last row: zeros
        self.scores = tf.Variable(np.vstack([scores, np.zeros((1, len(items)))]).astype(np.float32), trainable=False)
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(users), tf.range(len(users), dtype=tf.int64)),
            default_value=len(users))
        self.calls = tf.Variable(0, dtype=tf.int64, trainable=False)

    def _top(self, user_id, k, mask):
        scores = tf.gather(self.scores, self.table.lookup(user_id))
        scores = tf.where(mask[None, :], tf.fill(tf.shape(scores), float("-inf")), scores)
        top = tf.math.top_k(scores, k=tf.minimum(k, tf.shape(self.items)[0]))
        ids = tf.gather(self.items, top.indices)
        return {F.ITEMS_OUTPUT: ids, F.TITLES_OUTPUT: ids, F.SCORES_OUTPUT: top.values}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([], tf.int32),
                                  tf.TensorSpec([], tf.bool), tf.TensorSpec([None], tf.string),
                                  tf.TensorSpec([None], tf.string)])
    def recommend_filtered(self, user_id, k, exclude_rated, exclude_item_ids, allow_item_ids):
        excluded = tf.reduce_any(tf.equal(self.items[:, None], exclude_item_ids[None, :]), axis=1)
        allowed = tf.logical_or(tf.equal(tf.size(allow_item_ids), 0),
                                tf.reduce_any(tf.equal(self.items[:, None], allow_item_ids[None, :]), axis=1))
        return self._top(user_id, k, tf.logical_or(excluded, tf.logical_not(allowed)))

    def recommend_by_history(self, user_id, history_item_ids, k):
        """Each row's scores with that row's history ("" pads) left out: what the gate's batched calls rely on."""
        self.calls.assign_add(1)
        in_history = tf.reduce_any(tf.equal(history_item_ids[:, :, None], self.items[None, None, :]), axis=1)
        scores = tf.gather(self.scores, self.table.lookup(user_id))
        scores = tf.where(in_history, tf.fill(tf.shape(scores), float("-inf")), scores)
        top = tf.math.top_k(scores, k=tf.minimum(k, tf.shape(self.items)[0]))
        ids = tf.gather(self.items, top.indices)
        return {F.ITEMS_OUTPUT: ids, F.TITLES_OUTPUT: ids, F.SCORES_OUTPUT: top.values}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([], tf.int32),
                                  tf.TensorSpec([], tf.bool)])
    def recommend(self, user_id, k, exclude_rated):
        return self._top(user_id, k, tf.zeros_like(self.items, dtype=tf.bool))


def _save_model(root, users, items, scores, filtered=True, by_history=False):
    module = _ScoreTableModel(users, items, scores)
    signatures = {}
    if by_history:
        signatures[F.RECOMMEND_BY_HISTORY] = tf.function(
            lambda user_id, history_item_ids, history_weights, use_stored_history, k, exclude_item_ids,
            allow_item_ids: module.recommend_by_history(user_id, history_item_ids, k),
            input_signature=signatures_lib.BY_HISTORY_INPUTS).get_concrete_function()
    if filtered:
        signatures[F.RECOMMEND_FILTERED] = tf.function(
            lambda user_id, k, exclude_rated, exclude_item_ids, allow_item_ids: module.recommend_filtered(
                user_id, k, exclude_rated, exclude_item_ids, allow_item_ids),
            input_signature=[tf.TensorSpec([None], tf.string, name=F.USER_ID),
                             tf.TensorSpec([], tf.int32, name=F.K_INPUT),
                             tf.TensorSpec([], tf.bool, name=F.EXCLUDE_RATED_INPUT),
                             tf.TensorSpec([None], tf.string, name=F.EXCLUDE_ITEMS_INPUT),
                             tf.TensorSpec([None], tf.string, name=F.ALLOW_ITEMS_INPUT)]).get_concrete_function()
    signatures[F.RECOMMEND] = tf.function(
        lambda user_id, k, exclude_rated: module.recommend(user_id, k, exclude_rated),
        input_signature=[tf.TensorSpec([None], tf.string, name=F.USER_ID), tf.TensorSpec([], tf.int32, name=F.K_INPUT),
                         tf.TensorSpec([], tf.bool, name=F.EXCLUDE_RATED_INPUT)]).get_concrete_function()
    model = standard_artifacts.Model()
    model.uri = str(root)
    tf.saved_model.save(module, str(root / "Format-Serving"), signatures=signatures)
    return model


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("ranking_gate")
    users, items, train, evaluation, counts, taste = _planted()
    examples = _write_examples(root / "examples", {F.TRAIN_SPLIT: train, F.EVAL_SPLIT: evaluation})
    half = taste.copy()
    half[1::2] = counts[None, :]  # every other user ranked by popularity only
    nearly = taste.copy()
    nearly[::30] = counts[None, :]  # 4 users of 120 ranked by popularity only: a small, noisy regression
    rng = np.random.default_rng(1)
    models = {
        "taste": _save_model(root / "taste", users, items, taste),
        "popularity": _save_model(root / "popularity", users, items, np.tile(counts, (NUM_USERS, 1))),
        "random": _save_model(root / "random", users, items, rng.random((NUM_USERS, NUM_ITEMS))),
        "half_taste": _save_model(root / "half_taste", users, items, half),
        "nearly_taste": _save_model(root / "nearly_taste", users, items, nearly),
        "taste_recommend_only": _save_model(root / "taste_recommend_only", users, items, taste, filtered=False),
        "taste_by_history": _save_model(root / "taste_by_history", users, items, taste, filtered=False,
                                        by_history=True),
    }
    return {"examples": examples, "models": models, "root": root}


def _gate(planted, tmp_path, model, baseline=None, rating_blessing=None, name="ease", examples=None,
          history_examples=None, **params):
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = str(tmp_path / "blessing")
    inputs = {G.EXAMPLES_KEY: [examples or planted["examples"]], G.MODEL_KEY: [planted["models"][model]]}
    if history_examples:
        inputs[G.HISTORY_EXAMPLES_KEY] = history_examples
    if baseline:
        inputs[G.BASELINE_MODEL_KEY] = [planted["models"][baseline]]
    if rating_blessing is not None:
        inputs[G.RATING_BLESSING_KEY] = [rating_blessing]
    properties = {G.TRAINING_CONFIG_KEY: json.dumps({"training": {"model": name}}), G.K_KEY: 10,
                  G.MIN_LIFT_KEY: 0.0, G.MAX_REGRESSION_KEY: 0.02, G.GATE_RATING_KEY: 0}
    properties.update(params)
    G.Executor().Do(inputs, {G.BLESSING_KEY: [blessing]}, properties)
    report = G.read_report(blessing.uri)
    blessed = blessing.get_int_custom_property("blessed") == 1
    marker = "BLESSED" if blessed else "NOT_BLESSED"
    assert os.path.exists(os.path.join(blessing.uri, marker))
    assert not os.path.exists(os.path.join(blessing.uri, "NOT_BLESSED" if blessed else "BLESSED"))
    assert report["blessed"] == blessed
    assert blessing.get_string_custom_property("current_model") == planted["models"][model].uri
    return blessed, report, blessing


def test_a_model_that_knows_taste_is_blessed_with_metrics_beside_most_popular(planted, tmp_path):
    blessed, report, blessing = _gate(planted, tmp_path, "taste")
    model, popular = report["model"]["overall"], report["most_popular"]["overall"]
    assert blessed and report["failures"] == []
    assert model["users"] == popular["users"] == NUM_USERS
    assert model["recall"] > 1.5 * popular["recall"] and model["ndcg"] > 1.5 * popular["ndcg"], (model, popular)
    assert 0 < model["coverage"] <= 1 and popular["coverage"] < model["coverage"]
    # Slices from ExampleGen's buckets, for the model and most-popular alike.
    slices = {s for s in report["model"] if s != "overall"}
    assert any(s.startswith(F.USER_ACTIVITY + "=") for s in slices)
    assert any(s.startswith(F.ITEM_POPULARITY + "=") for s in slices)
    assert slices <= set(report["most_popular"])
    assert blessing.get_float_custom_property("recall_at_10") == pytest.approx(model["recall"])
    assert report["baseline"] is None


def test_the_gate_excludes_only_training_items_and_matches_the_reference_protocol(planted):
    users, items, train, evaluation, counts, taste = _planted()
    interactions = ranking_eval.Interactions.from_pairs(train)
    model = G.load_model(planted["models"]["taste"])
    eval_users = sorted({u for u, _ in evaluation})
    ranked = ranking_eval.saved_model_top_k(model, eval_users, ranking_eval.relevant_by_user(train), 10)
    index = {i: n for n, i in enumerate(items)}
    reference = ranking_eval.top_k(interactions, lambda rows: taste[rows][:, [index[i] for i in interactions.items]],
                                   eval_users, 10)
    assert ranked == reference
    # A model exported with `recommend` only gives the same lists (fetched longer, training items dropped).
    fallback = ranking_eval.saved_model_top_k(G.load_model(planted["models"]["taste_recommend_only"]), eval_users,
                             ranking_eval.relevant_by_user(train), 10)
    assert fallback == ranked


def test_lists_asked_by_history_in_batches_are_the_reference_lists(planted, monkeypatch):
    """recommend_by_history is asked for many users per call, rows padded with "": the lists are those of the
    reference protocol, and far fewer calls are made than users."""
    users, items, train, evaluation, counts, taste = _planted()
    interactions = ranking_eval.Interactions.from_pairs(train)
    index = {i: n for n, i in enumerate(items)}
    eval_users = sorted({u for u, _ in evaluation})
    model = G.load_model(planted["models"]["taste_by_history"])
    monkeypatch.setattr(ranking_eval, "MAX_USERS_PER_CALL", 16)
    # Histories of different lengths share calls: drop some users' items so padding is needed.
    history = {u: items_[: 3 + n % 7] for n, (u, items_) in enumerate(sorted(interactions.history().items()))}
    ranked = ranking_eval.saved_model_top_k(model, eval_users, history, 10)
    reference = ranking_eval.top_k(
        ranking_eval.Interactions.from_pairs([(u, i) for u, its in history.items() for i in its], interactions.items),
        lambda rows: taste[rows][:, [index[i] for i in interactions.items]], eval_users, 10)
    assert ranked == reference
    assert int(model.calls.numpy()) == -(-len(eval_users) // 16)


def test_splits_are_read_as_codes_and_the_history_matrix_matches_the_pairs(planted):
    users, items, train, evaluation, counts, taste = _planted()
    user_ids, item_ids = G.Ids(), G.Ids()
    split = G.read_split(planted["examples"], F.TRAIN_SPLIT, user_ids, item_ids, batch=7)
    assert split.users.dtype == np.int32 and len(split.users) == len(train)
    assert [(user_ids.names[u], item_ids.names[i]) for u, i in zip(split.users, split.items)] == train
    built = ranking_eval.Interactions.from_codes(split.users, split.items, user_ids.names, item_ids.names)
    expected = ranking_eval.Interactions.from_pairs(train)
    assert built.users == expected.users and built.items == expected.items
    assert (built.matrix != expected.matrix).nnz == 0
    assert sorted(built.history()["u007"]) == sorted(i for u, i in train if u == "u007")
    assert G.read_split(planted["examples"], F.VALIDATION_SPLIT, user_ids, item_ids, allow_empty=True).users.size == 0


@pytest.mark.parametrize("model", ["popularity", "random"])
def test_a_model_no_better_than_most_popular_is_not_blessed(planted, tmp_path, model):
    blessed, report, _ = _gate(planted, tmp_path, model)
    assert not blessed
    assert report["model"]["overall"]["recall"] <= report["most_popular"]["overall"]["recall"]
    assert "is not above most popular's" in report["failures"][0]


def test_the_margin_over_most_popular_is_configurable(planted, tmp_path):
    _, report, _ = _gate(planted, tmp_path, "taste")
    lift = report["model"]["overall"]["recall"] / report["most_popular"]["overall"]["recall"] - 1
    blessed, report, _ = _gate(planted, tmp_path / "strict", "taste", **{G.MIN_LIFT_KEY: lift + 0.1})
    assert not blessed and "* (1 + " in report["failures"][0]


def test_a_regression_against_the_latest_blessed_model_is_not_blessed(planted, tmp_path):
    blessed, report, blessing = _gate(planted, tmp_path, "half_taste", baseline="taste")
    model, base, popular = (report[k]["overall"]["recall"] for k in ("model", "baseline", "most_popular"))
    assert popular < model < 0.98 * base, (popular, model, base)  # beats most popular, regresses on the baseline
    assert not blessed and report["failures"] == [report["failures"][0]]
    assert "below the latest blessed model's" in report["failures"][0]
    assert blessing.get_string_custom_property("baseline_model") == planted["models"]["taste"].uri
    # The same model against itself as the baseline: no regression, blessed.
    assert _gate(planted, tmp_path / "same", "taste", baseline="taste")[0]


def test_a_regression_is_refused_only_when_the_paired_comparison_shows_it(planted, tmp_path):
    """Four users of 120 lose their taste: the point comparison sees a drop beyond 2 % and refuses; paired over the
    users at 95 % the drop is within the eval split's noise, so the model is blessed. Half the users losing it is
    refused either way."""
    blessed, report, _ = _gate(planted, tmp_path / "point", "nearly_taste", baseline="taste")
    model, base = report["model"]["overall"]["recall"], report["baseline"]["overall"]["recall"]
    assert model < 0.98 * base and not blessed, (model, base)
    comparison = report["baseline_comparison"]
    assert comparison["mean_difference"] == pytest.approx(model - base)
    assert comparison["upper_bound"] == pytest.approx(model - base)  # confidence 0.5: the point difference
    blessed, report, _ = _gate(planted, tmp_path / "paired", "nearly_taste", baseline="taste",
                               **{G.CONFIDENCE_KEY: 0.95})
    comparison = report["baseline_comparison"]
    assert blessed, report["failures"]
    assert comparison["mean_difference"] < -0.02 * base < comparison["upper_bound"], comparison
    assert comparison["users"] == NUM_USERS and report["thresholds"][G.CONFIDENCE_KEY] == 0.95
    blessed, report, _ = _gate(planted, tmp_path / "half", "half_taste", baseline="taste", **{G.CONFIDENCE_KEY: 0.95})
    assert not blessed and "95% upper bound" in report["failures"][0], report["failures"]


def test_the_paired_bound_widens_with_confidence_and_noise():
    rng = np.random.default_rng(0)
    base = rng.random(400)
    candidate = base - 0.01 + rng.normal(0, 0.1, 400)
    point = ranking_eval.paired_upper_bound(candidate, base, 0.5)
    assert point == pytest.approx(float(np.mean(candidate - base)))
    assert point < ranking_eval.paired_upper_bound(candidate, base, 0.95) < ranking_eval.paired_upper_bound(
        candidate, base, 0.99)
    # Four times the users: half the width.
    more = np.tile(candidate, 4), np.tile(base, 4)
    width = ranking_eval.paired_upper_bound(candidate, base, 0.95) - point
    assert ranking_eval.paired_upper_bound(*more, 0.95) - point == pytest.approx(width / 2, rel=0.01)
    with pytest.raises(ValueError, match="regression_confidence"):
        G.RankingGate(examples=None, model=None, training_config="{}", regression_confidence=0.3)


def test_the_windows_earlier_spans_are_the_held_out_users_history(planted, tmp_path):
    """user-hash: a held-out user's whole day is in eval and their history is in earlier spans. Scored from that
    history (their earlier items excluded), the lists match the one-span protocol; without it, the earlier items
    crowd the lists."""
    _, _, train, evaluation, _, _ = _planted()
    held_out = {f"u{u:03d}" for u in range(1, NUM_USERS, 2)}
    earlier = _write_examples(tmp_path / "span1", {F.TRAIN_SPLIT: [p for p in train if p[0] in held_out],
                                                   F.EVAL_SPLIT: []})
    newest = _write_examples(tmp_path / "span2", {F.TRAIN_SPLIT: [p for p in train if p[0] not in held_out],
                                                  F.EVAL_SPLIT: [p for p in evaluation if p[0] in held_out]})
    with_history = _gate(planted, tmp_path / "with", "taste", examples=newest, history_examples=[earlier, newest])[1]
    alone = _gate(planted, tmp_path / "alone", "taste", examples=newest)[1]
    one_span = _gate(planted, tmp_path / "one", "taste")[1]
    assert with_history["history_spans"] == 1 and alone["history_spans"] == 0
    recall = {name: r["model"]["overall"]["recall"] for name, r in
              (("with", with_history), ("alone", alone), ("one", one_span))}
    assert with_history["model"]["overall"]["users"] == len(held_out)
    assert recall["with"] > recall["alone"] + 0.1, recall
    assert abs(recall["with"] - recall["one"]) < 0.05, recall  # the same protocol, on half the users


def _rating_blessing(tmp_path, blessed):
    artifact = standard_artifacts.ModelBlessing()
    artifact.uri = str(tmp_path / "rating_blessing")
    artifact.set_int_custom_property("blessed", int(blessed))
    return artifact


@pytest.mark.parametrize("rmse_blessed", [True, False])
def test_a_rating_model_is_gated_by_its_rmse_blessing_and_its_ranking_only_reported(planted, tmp_path, rmse_blessed):
    blessed, report, _ = _gate(planted, tmp_path, "random", name="mf",
                               rating_blessing=_rating_blessing(tmp_path, rmse_blessed))
    assert blessed == rmse_blessed
    assert report["ranking_model"] is False and report["gated_on_ranking"] is False
    assert report["model"]["overall"]["recall"] < report["most_popular"]["overall"]["recall"]  # reported anyway


def test_a_rating_model_can_be_gated_on_ranking_too_and_needs_an_rmse_verdict(planted, tmp_path):
    blessed, report, _ = _gate(planted, tmp_path, "random", name="mf", rating_blessing=_rating_blessing(tmp_path, True),
                               **{G.GATE_RATING_KEY: 1})
    assert not blessed and "most popular" in report["failures"][0]
    blessed, report, _ = _gate(planted, tmp_path / "none", "taste", name="mf")
    assert not blessed and "no RMSE evaluation" in report["failures"][0]


def test_auto_counts_as_a_ranking_model():
    assert models.is_ranking("auto") and not models.is_ranking("mf")
    assert G.model_name("") == "auto"


def test_the_report_shows_the_model_beside_most_popular_and_the_baseline(planted, tmp_path):
    from pipeline import report, run_summary

    blessed, ranking, _ = _gate(planted, tmp_path, "half_taste", baseline="taste")
    failures = run_summary.run_failures(None, ranking)
    text = report.as_text({}, failures, blessed, ranking)
    header = next(line for line in text.splitlines() if line.startswith("slice"))
    assert header.split() == ["slice", "recall@10", "most_popular", "recall@10", "baseline", "recall@10", "ndcg@10",
                              "most_popular", "ndcg@10", "baseline", "ndcg@10", "users"]
    overall = next(line for line in text.splitlines() if line.startswith("overall")).split()
    assert float(overall[1]) == pytest.approx(ranking["model"]["overall"]["recall"], abs=1e-4)
    assert float(overall[2]) == pytest.approx(ranking["most_popular"]["overall"]["recall"], abs=1e-4)
    assert "NOT BLESSED: overall: recall@10" in text and "latest blessed model's" in text
    line = run_summary.describe_ranking(ranking)
    assert line.startswith(f"ranking on eval ({NUM_USERS} users): recall@10 ") and "latest blessed model" in line
    page, png = report.write(str(tmp_path / "reports" / "run-1"), "run 1", {}, failures, blessed, ranking)
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert "most_popular recall@10" in open(page, encoding="utf-8").read()


def test_most_popular_lists_walk_one_ranking_and_equal_the_scored_lists():
    """top_k's shortcut for most popular (one global order, each user's items skipped) gives the lists the
    users x catalogue scoring gives, ties broken by catalogue order."""
    _, _, train, evaluation, _, _ = _planted()
    interactions = ranking_eval.Interactions.from_pairs(train)
    counts = interactions.item_counts().astype(np.float64)
    tie_break = counts - 1e-6 * np.arange(len(counts))
    users = sorted({u for u, _ in evaluation}) + ["someone new"]
    fast = ranking_eval.top_k(interactions, ranking_eval.most_popular(interactions), users, 10)
    scored = ranking_eval.top_k(interactions, lambda rows: np.tile(tie_break, (len(rows), 1)), users, 10)
    assert fast == scored
    assert all(len(items) == 10 for items in fast.values())
    history = interactions.history()
    assert all(not set(fast[u]) & set(history[u]) for u in users if u in history)
