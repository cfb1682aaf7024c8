"""Ranking models learn which items a user picks: on the generated sample (taste planted in the choice
of items) each beats most-popular on held-out interactions by a wide margin, training items excluded."""

import csv
import os

import numpy as np
import pytest
import tensorflow as tf

from components import catalog as catalog_lib
from components import features as F
from components import models
from components.models import ease, topk, two_tower
from components.models.base import ModelDims
from components.training_config import TrainingConfig


@pytest.fixture(scope="module")
def split(tiny_data):
    """Per-user random 70/10/20 train/validation/test split of the tiny sample, as vocabulary indices."""
    with open(os.path.join(tiny_data, F.INTERACTIONS_FILE)) as f:
        rows = [(r[F.USER_ID], r[F.ITEM_ID]) for r in csv.DictReader(f)]
    with open(os.path.join(tiny_data, F.ITEMS_FILE)) as f:
        item_rows = {r[F.ITEM_ID]: r for r in csv.DictReader(f)}
    users = sorted({u for u, _ in rows})
    items = sorted({i for _, i in rows})
    genres = sorted({g for r in item_rows.values() for g in r[F.GENRES].split(F.GENRE_SEPARATOR) if g})
    u_index, i_index, g_index = ({v: n for n, v in enumerate(x)} for x in (users, items, genres))
    pairs = np.array([(u_index[u], i_index[i]) for u, i in rows], dtype=np.int64)
    draw = np.random.default_rng(0).random(len(pairs))
    train, validation, test = pairs[draw < 0.7], pairs[(draw >= 0.7) & (draw < 0.8)], pairs[draw >= 0.8]
    multi_hot = np.zeros((len(items), len(genres) + 1), np.float32)
    for item, n in i_index.items():
        for g in item_rows[item][F.GENRES].split(F.GENRE_SEPARATOR):
            if g:
                multi_hot[n, g_index[g]] = 1.0
    years = np.array([float(item_rows[i][F.YEAR]) for i in items], np.float32)
    years = (years - years.mean()) / years.std()
    row_splits, rated = catalog_lib.ragged_rows(train, len(users) + 1)
    items_catalog = catalog_lib.Catalog([i.encode() for i in items], np.array([b""] * len(items), dtype=object),
                                        multi_hot, years, row_splits, rated)
    dims = ModelDims(len(users) + 1, len(items) + 1, len(genres) + 1, 3.5)
    dataset = tf.data.Dataset.from_tensor_slices((
        {F.USER_INDEX: train[:, 0], F.ITEM_INDEX: train[:, 1], F.GENRES_MULTI_HOT: multi_hot[train[:, 1]],
         F.YEAR_XF: years[train[:, 1]]}, np.ones(len(train), np.float32))).shuffle(len(train), seed=1).batch(256)
    return dict(dims=dims, items=items_catalog, train=train, dataset=dataset,
                validation=topk.Holdout(validation, row_splits, rated),
                test=topk.Holdout(test, row_splits, rated))


def _popularity_recall(split):
    counts = np.bincount(split["train"][:, 1], minlength=len(split["items"].item_ids)).astype(np.float32)
    return split["test"].recall(lambda users: np.tile(counts, (len(users), 1)))


def _model_recall(split, model):
    candidates = two_tower.candidates(split["items"])
    return split["test"].recall(lambda users: model.score_all_items(tf.constant(users, tf.int64), candidates).numpy())


def test_two_tower_beats_most_popular(split):
    config = TrainingConfig(model="two_tower", embedding_dim=16, batch_size=256, epochs=8, seed=3)
    tf.keras.utils.set_random_seed(config.seed)
    model = two_tower.train(split["dims"], config, split["items"], split["dataset"], split["validation"])
    recall, popular = _model_recall(split, model), _popularity_recall(split)
    print(f"two_tower Recall@10 {recall:.4f}, most popular {popular:.4f}")
    assert popular > 0.05
    assert recall > 1.4 * popular, (recall, popular)


def test_ease_beats_most_popular_and_picks_lambda_on_validation(split, capsys):
    model = ease.train(split["dims"], TrainingConfig(model="ease"), split["items"], None, split["validation"])
    recall, popular = _model_recall(split, model), _popularity_recall(split)
    print(f"ease Recall@10 {recall:.4f}, most popular {popular:.4f}, lambda {model.lam:.1f}")
    assert recall > 1.6 * popular, (recall, popular)
    assert len([line for line in capsys.readouterr().out.splitlines() if line.startswith("ease: lambda")]) == 4


def test_ease_scores_are_the_training_history_times_its_weights(split):
    model = ease.train(split["dims"], TrainingConfig(model="ease", ease_lambda=50.0), split["items"], None,
                       split["validation"])
    user = int(split["train"][0, 0])
    row_splits, items = model.history_row_splits.numpy(), model.history_items.numpy()
    history = items[row_splits[user]:row_splits[user + 1]]
    # refitted on train + validation: the history holds both, never the test split
    seen = {tuple(p) for p in np.stack([np.repeat(np.arange(len(row_splits) - 1), np.diff(row_splits)), items], 1)}
    assert seen == {tuple(p) for p in split["train"]} | {tuple(p) for p in split["validation"].pairs}
    expected = model.weights_matrix.numpy()[history].sum(axis=0)
    got = model.score_all_items(tf.constant([user], tf.int64), two_tower.candidates(split["items"])).numpy()[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    unknown = model.score_all_items(tf.constant([split["dims"].num_users - 1], tf.int64),
                                    two_tower.candidates(split["items"])).numpy()
    counts = np.bincount(items, minlength=len(split["items"].item_ids))
    np.testing.assert_allclose(unknown[0], counts / counts.max(), rtol=1e-6)  # no history: most popular


def test_ease_refuses_a_catalogue_above_its_limit_in_one_line(split):
    with pytest.raises(ease.CatalogueTooLarge) as error:
        ease.train(split["dims"], TrainingConfig(model="ease", ease_max_items=50), split["items"], None,
                   split["validation"])
    message = str(error.value)
    assert "\n" not in message and "limit of 50" in message and "two_tower" in message


def test_auto_resolves_to_ease_when_the_catalogue_fits_and_two_tower_above():
    assert models.resolve(models.AUTO, 5_000, 10_000) == "ease"
    assert models.resolve(models.AUTO, 50_000, 10_000) == "two_tower"
    assert models.resolve("mf", 50_000, 10_000) == "mf"
    assert models.is_ranking("auto") and models.is_ranking("ease") and not models.is_ranking("mf")
    with pytest.raises(ValueError, match="unknown model"):
        models.is_ranking("nope")


def test_holdout_recall_excludes_training_items_and_is_one_for_an_oracle():
    row_splits, rated = catalog_lib.ragged_rows(np.array([[0, 0], [0, 1]]), 2)
    holdout = topk.Holdout(np.array([[0, 2], [1, 3]]), row_splits, rated)
    oracle = np.array([[9.0, 9.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0, 0.0]])  # training items score highest
    assert holdout.recall(lambda users: oracle[users], k=1) == 1.0
