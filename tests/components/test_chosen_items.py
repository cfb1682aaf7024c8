"""SVD++'s implicit term in the rating models (issue 20): the formula, its sampling, its penalty, its export,
the seeds' form kept exactly, and the held-out RMSE it buys."""

import numpy as np
import pytest
import tensorflow as tf

from components import catalog as catalog_lib
from components import features as F
from components import models
from components.models.base import ModelDims, RowL2Embedding
from components.models.chosen_items import ChosenItems
from components.training_config import TrainingConfig
from tests.components.test_models import _inputs, _load
from data import synthetic

# Users 0..3 (3: the OOV row, empty); items 0..5.
HISTORY = np.array([[0, 1], [0, 2], [0, 4], [1, 3], [2, 0], [2, 1], [2, 2], [2, 3], [2, 4], [2, 5]])
ROWS = catalog_lib.ragged_rows(HISTORY, 4)


def _shapes(model):
    return sorted(tuple(v.shape.as_list()) for v in model.variables)


def test_the_seeds_form_is_the_seeds_model_exactly():
    dims = ModelDims(4, 6, 1, 3.5)
    seed_form = models.get("mf").build(dims, TrainingConfig(rating_history="off"), ROWS)
    # The seeds' variables and nothing else: user/item embeddings, user/item biases, the global mean.
    assert seed_form.chosen is None and _shapes(seed_form) == [(), (4, 1), (4, 32), (6, 1), (6, 32)]
    # Built without a history (a library caller), `auto` is the seeds' form too; `on` needs the rows.
    assert models.get("mf").build(dims, TrainingConfig()).chosen is None
    with pytest.raises(ValueError, match="rating_history 'on' needs the users' history rows"):
        models.get("mf").build(dims, TrainingConfig(rating_history="on"))
    with_term = models.get("mf").build(dims, TrainingConfig(rating_history="on"), ROWS)
    # + the y table and the stored history rows (row splits per user, item indices).
    assert _shapes(with_term) == sorted(_shapes(seed_form) + [(6, 32), (5,), (len(HISTORY),)])
    assert models.rating_history_forms("mf", "auto") == ("on", "off")
    assert models.rating_history_forms("mlp", "auto") == ("off",)  # no implicit term to add there


def test_the_term_is_the_normalised_sum_of_the_chosen_items_vectors():
    layer = ChosenItems(6, TrainingConfig(embedding_dim=3, rating_history="on"), ROWS)
    y = np.arange(18, dtype=np.float32).reshape(6, 3) / 10
    layer.item_embedding.embeddings.assign(y)
    got = layer(tf.constant([0, 2, 1, 3, 0]), training=False).numpy()
    expected = [y[[1, 2, 4]].sum(0) / np.sqrt(3), y.sum(0) / np.sqrt(6), y[[3]].sum(0), np.zeros(3),
                y[[1, 2, 4]].sum(0) / np.sqrt(3)]
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_training_samples_a_long_history_and_rescales_it_to_the_whole_sum():
    """Every y_j equal: the sampled, rescaled sum is exactly the serving sum; with distinct y_j it is unbiased."""
    history = np.stack([np.zeros(300, np.int64), np.arange(300)], axis=1)
    rows = catalog_lib.ragged_rows(history, 2)
    layer = ChosenItems(300, TrainingConfig(embedding_dim=2, rating_history="on", rating_history_sample=20), rows)
    layer.item_embedding.embeddings.assign(np.ones((300, 2), np.float32))
    serving = layer(tf.constant([0]), training=False).numpy()
    np.testing.assert_allclose(serving, [[np.sqrt(300)] * 2], rtol=1e-5)
    np.testing.assert_allclose(layer(tf.constant([0]), training=True).numpy(), serving, rtol=1e-5)
    tf.random.set_seed(3)
    layer.item_embedding.embeddings.assign(np.random.default_rng(0).normal(size=(300, 2)).astype(np.float32))
    exact = layer(tf.constant([0]), training=False).numpy()
    draws = np.concatenate([layer(tf.constant([0]), training=True).numpy() for _ in range(400)])
    assert np.abs(draws - exact).max() > 0.1  # sampled: draws differ from the whole sum...
    np.testing.assert_allclose(draws.mean(0), exact[0], atol=0.15)  # ...and average to it


def test_training_penalises_the_chosen_rows_of_the_batch_per_example_and_serving_not():
    layer = ChosenItems(6, TrainingConfig(embedding_dim=2, rating_history="on", rating_l2=0.1), ROWS)
    users = tf.constant([1, 1, 0])  # user 1 twice: its row counts twice
    for training in (True, False):
        with tf.GradientTape() as tape:
            layer(users, training=training)
            penalty = tf.add_n(layer.losses + [tf.constant(0.0)])
        if not training:
            assert not layer.losses or float(penalty) == 0.0
            continue
        y = layer.item_embedding.embeddings.numpy()
        expected = 0.1 * (2 * np.sum(y[3] ** 2) + np.sum(y[[1, 2, 4]] ** 2)) / 3
        assert float(penalty) == pytest.approx(expected, rel=1e-5)
        gradient = tf.convert_to_tensor(tape.gradient(penalty, layer.item_embedding.embeddings)).numpy()
        assert set(np.flatnonzero(np.abs(gradient).sum(1))) == {1, 2, 3, 4}  # only the batch users' items


@pytest.mark.parametrize("name", ["mf", "hybrid"])
def test_recommend_scores_with_the_term_as_predict_does(name):
    rng = np.random.default_rng(0)
    content = rng.integers(0, 2, size=(6, 5)).astype(np.float32)
    model = models.get(name).build(ModelDims(4, 7, 5, 3.5),
                                   TrainingConfig(embedding_dim=4, hidden_units=(8,), rating_history="on"), ROWS)
    model.chosen.item_embedding.embeddings.assign(rng.normal(size=(7, 4)).astype(np.float32))
    users = tf.constant([0, 2], dtype=tf.int64)
    all_scores = model.score_all_items(users, {F.ITEM_INDEX: tf.range(6, dtype=tf.int64),
                                               F.ITEM_CONTENT: content}).numpy()
    for row, user in enumerate([0, 2]):
        np.testing.assert_allclose(all_scores[row], model(_inputs(np.full(6, user), np.arange(6), content)).numpy(),
                                   rtol=1e-5, atol=1e-6)
    # The term moves the scores: the same model with a user's chosen items cleared answers differently.
    model.chosen.item_embedding.embeddings.assign(np.zeros((7, 4), np.float32))
    assert np.abs(model.score_all_items(users, {F.ITEM_INDEX: tf.range(6, dtype=tf.int64),
                                                F.ITEM_CONTENT: content}).numpy() - all_scores).max() > 1e-3


@pytest.fixture(scope="module")
def choices(tmp_path_factory):
    """An ML-100K-shaped sample (the movie generator: people pick items by taste, ratings noisy)."""
    root = tmp_path_factory.mktemp("choices")
    synthetic.generate(str(root), synthetic.SampleSpec(num_users=600, num_items=800, num_ratings=50_000, seed=5))
    return _load(root)


def test_the_term_lowers_held_out_rmse_below_the_seeds_form(choices):
    """Same split, defaults, epochs and seed; the only difference is the implicit term."""
    u, i, y, n_users, content = choices
    fold = np.arange(len(y)) % 5
    train, validation, test = fold >= 2, fold == 1, fold == 0
    mean = float(y[train].mean())
    dims = ModelDims(n_users + 1, len(content) + 1, content.shape[1], mean)
    rows = catalog_lib.ragged_rows(np.stack([u[train], i[train]], 1), n_users + 1)
    rmse = {}
    for form in ("off", "on"):
        config = TrainingConfig(rating_history=form, learning_rate=0.01)
        tf.keras.utils.set_random_seed(config.seed)
        model = models.get("mf").build(dims, config, rows)
        model.compile(optimizer=tf.keras.optimizers.Adam(config.learning_rate), loss="mse",
                      metrics=[tf.keras.metrics.RootMeanSquaredError(name="rmse")])
        model.fit(_inputs(u[train], i[train], content), y[train], epochs=15, batch_size=config.batch_size, verbose=0,
                  validation_data=(_inputs(u[validation], i[validation], content), y[validation]),
                  callbacks=[tf.keras.callbacks.EarlyStopping(monitor="val_rmse", patience=2,
                                                              restore_best_weights=True)])
        predictions = model.predict(_inputs(u[test], i[test], content), batch_size=4096, verbose=0)
        rmse[form] = float(np.sqrt(np.mean((predictions - y[test]) ** 2)))
    print(f"held-out RMSE: seeds' form {rmse['off']:.4f}, with the implicit term {rmse['on']:.4f}")
    assert rmse["on"] < rmse["off"] - 0.003, rmse
