"""Every registered model learns the planted structure and ranks the catalogue as it predicts pairs."""

import numpy as np
import pytest
import tensorflow as tf

from components import features as F
from components import models
from components.training_config import TrainingConfig
from data import synthetic


def _load(root):
    import csv

    with open(f"{root}/{F.INTERACTIONS_FILE}", newline="") as f:
        rows = list(csv.DictReader(f))
    users = {u: i for i, u in enumerate(sorted({r[F.USER_ID] for r in rows}))}
    items = {u: i for i, u in enumerate(sorted({r[F.ITEM_ID] for r in rows}))}
    u = np.array([users[r[F.USER_ID]] for r in rows])
    i = np.array([items[r[F.ITEM_ID]] for r in rows])
    y = np.array([float(r[F.RATING]) for r in rows], dtype=np.float32)
    return u, i, y, len(users), len(items)


@pytest.fixture(scope="module")
def ratings(tmp_path_factory):
    root = tmp_path_factory.mktemp("ratings")
    synthetic.generate(str(root), synthetic.SampleSpec(num_users=400, num_items=300, num_ratings=30000, seed=5))
    return _load(root)


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_model_beats_global_mean_on_held_out_ratings(ratings, name):
    u, i, y, n_users, n_items = ratings
    train = np.arange(len(y)) % 5 != 0
    config = TrainingConfig(embedding_dim=16, epochs=12, batch_size=512, learning_rate=0.01)
    mean = float(y[train].mean())
    model = models.get(name).build(n_users + 1, n_items + 1, mean, config)
    model.compile(optimizer=tf.keras.optimizers.Adam(config.learning_rate), loss="mse")
    features = lambda mask: {F.USER_INDEX: u[mask], F.ITEM_INDEX: i[mask]}  # noqa: E731
    model.fit(features(train), y[train], epochs=config.epochs, batch_size=config.batch_size, verbose=0)
    predictions = model.predict(features(~train), batch_size=4096, verbose=0)
    rmse = float(np.sqrt(np.mean((predictions - y[~train]) ** 2)))
    baseline = float(np.sqrt(np.mean((mean - y[~train]) ** 2)))
    assert rmse < 0.85 * baseline, (name, rmse, baseline)


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_score_all_items_matches_pairwise_predictions(name):
    config = TrainingConfig(embedding_dim=4)
    model = models.get(name).build(5, 7, 3.5, config)
    users = tf.constant([0, 3], dtype=tf.int64)
    all_scores = model.score_all_items(users, 6).numpy()
    assert all_scores.shape == (2, 6)
    for row, user in enumerate([0, 3]):
        pairwise = model({F.USER_INDEX: tf.fill([6], tf.constant(user, tf.int64)),
                          F.ITEM_INDEX: tf.range(6, dtype=tf.int64)}).numpy()
        np.testing.assert_allclose(all_scores[row], pairwise, rtol=1e-5)
