"""Every registered model learns the planted structure and ranks the catalogue as it predicts pairs."""

import csv

import numpy as np
import pytest
import tensorflow as tf

from components import features as F
from components import models
from components.models.base import ModelDims
from components.training_config import TrainingConfig
from data import synthetic


def _load(root):
    """Model inputs straight from the CSVs (ids indexed in sorted order; no Transform needed here)."""
    with open(f"{root}/{F.ITEMS_FILE}", newline="") as f:
        item_rows = list(csv.DictReader(f))
    with open(f"{root}/{F.INTERACTIONS_FILE}", newline="") as f:
        rows = list(csv.DictReader(f))
    genres = sorted({g for r in item_rows for g in r[F.GENRES].split(F.GENRE_SEPARATOR) if g})
    items = {r[F.ITEM_ID]: i for i, r in enumerate(item_rows)}
    item_genres = np.zeros((len(items), len(genres) + 1), np.float32)
    for i, r in enumerate(item_rows):
        for g in r[F.GENRES].split(F.GENRE_SEPARATOR):
            item_genres[i, genres.index(g)] = 1.0
    years = np.array([float(r[F.YEAR]) for r in item_rows], np.float32)
    item_years = (years - years.mean()) / years.std()
    users = {u: i for i, u in enumerate(sorted({r[F.USER_ID] for r in rows}))}
    u = np.array([users[r[F.USER_ID]] for r in rows])
    i = np.array([items[r[F.ITEM_ID]] for r in rows])
    y = np.array([float(r[F.RATING]) for r in rows], dtype=np.float32)
    return u, i, y, len(users), item_genres, item_years


@pytest.fixture(scope="module")
def ratings(tmp_path_factory):
    root = tmp_path_factory.mktemp("ratings")
    synthetic.generate(str(root), synthetic.SampleSpec(num_users=400, num_items=300, num_ratings=30000, seed=5))
    return _load(root)


def _inputs(u, i, item_genres, item_years):
    return {F.USER_INDEX: u, F.ITEM_INDEX: i, F.GENRES_MULTI_HOT: item_genres[i], F.YEAR_XF: item_years[i]}


@pytest.fixture(scope="module")
def bias_baseline_rmse(ratings):
    from pipeline.quality import baselines

    u, i, y, *_ = ratings
    train = np.arange(len(y)) % 5 != 0
    as_rows = lambda mask: list(zip(u[mask].tolist(), i[mask].tolist(), y[mask].tolist()))  # noqa: E731
    return baselines(as_rows(train), as_rows(~train), {}, k=10)[1].rmse


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_model_beats_global_mean_and_bias_baselines_on_held_out_ratings(ratings, bias_baseline_rmse, name):
    u, i, y, n_users, item_genres, item_years = ratings
    train = np.arange(len(y)) % 5 != 0
    config = TrainingConfig(embedding_dim=16, epochs=12, batch_size=512, learning_rate=0.01)
    mean = float(y[train].mean())
    dims = ModelDims(n_users + 1, len(item_genres) + 1, item_genres.shape[1], mean)
    model = models.get(name).build(dims, config)
    model.compile(optimizer=tf.keras.optimizers.Adam(config.learning_rate), loss="mse")
    model.fit(_inputs(u[train], i[train], item_genres, item_years), y[train], epochs=config.epochs,
              batch_size=config.batch_size, verbose=0)
    predictions = model.predict(_inputs(u[~train], i[~train], item_genres, item_years), batch_size=4096, verbose=0)
    rmse = float(np.sqrt(np.mean((predictions - y[~train]) ** 2)))
    baseline = float(np.sqrt(np.mean((mean - y[~train]) ** 2)))
    print(f"{name}: rmse {rmse:.4f}, global mean {baseline:.4f}, biases {bias_baseline_rmse:.4f}")
    assert rmse < 0.9 * baseline, (name, rmse, baseline)
    assert rmse < 0.93 * bias_baseline_rmse, (name, rmse, bias_baseline_rmse)


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_score_all_items_matches_pairwise_predictions(name):
    rng = np.random.default_rng(0)
    genres = rng.integers(0, 2, size=(6, 4)).astype(np.float32)
    years = rng.normal(size=6).astype(np.float32)
    model = models.get(name).build(ModelDims(5, 7, 4, 3.5), TrainingConfig(embedding_dim=4, hidden_units=(8,)))
    users = tf.constant([0, 3], dtype=tf.int64)
    items = {F.ITEM_INDEX: tf.range(6, dtype=tf.int64), F.GENRES_MULTI_HOT: genres, F.YEAR_XF: years}
    all_scores = model.score_all_items(users, items).numpy()
    assert all_scores.shape == (2, 6)
    if hasattr(model, "item_vectors"):  # the export's precomputed item tower gives the same scores
        cached = model.score_all_items(users, items, item_vectors=model.item_vectors(items)).numpy()
        np.testing.assert_allclose(cached, all_scores, rtol=1e-6)
    for row, user in enumerate([0, 3]):
        pairwise = model(_inputs(np.full(6, user), np.arange(6), genres, years)).numpy()
        np.testing.assert_allclose(all_scores[row], pairwise, rtol=1e-5, atol=1e-6)


def test_content_model_scores_an_unseen_item_by_its_attributes(ratings):
    """Item cold start: two never-seen items differ only in genres, and get different ratings."""
    u, i, y, n_users, item_genres, item_years = ratings
    config = TrainingConfig(embedding_dim=16, epochs=4, batch_size=512, learning_rate=0.01)
    dims = ModelDims(n_users + 1, len(item_genres) + 1, item_genres.shape[1], float(y.mean()))
    model = models.get("content").build(dims, config)
    model.compile(optimizer=tf.keras.optimizers.Adam(config.learning_rate), loss="mse")
    model.fit(_inputs(u, i, item_genres, item_years), y, epochs=config.epochs, batch_size=512, verbose=0)
    oov = len(item_genres)  # the OOV bucket: an item the model never trained on
    best, worst = np.argmax(item_genres.sum(0)[:-1]), np.argmin(item_genres.sum(0)[:-1])
    one_hot = np.eye(item_genres.shape[1], dtype=np.float32)
    out = model({F.USER_INDEX: np.array([0, 0]), F.ITEM_INDEX: np.array([oov, oov]),
                 F.GENRES_MULTI_HOT: one_hot[[best, worst]], F.YEAR_XF: np.zeros(2, np.float32)}).numpy()
    assert np.all(np.isfinite(out)) and abs(out[0] - out[1]) > 1e-3
