"""The ScaNN index (`--ann scann`): close to brute force, never returns what a row excludes, survives a SavedModel."""

import numpy as np
import pytest
import tensorflow as tf

from components import ann

pytestmark = pytest.mark.skipif(not ann.available(), reason="scann is not installed (requirements.lock pins it)")


def _clustered(num_items=20_000, dim=32, clusters=200, seed=0):
    """Item vectors in clusters (as trained embeddings are), and queries near some of them."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    items = centres[rng.integers(0, clusters, num_items)] + 0.5 * rng.normal(size=(num_items, dim)).astype(np.float32)
    queries = centres[rng.integers(0, clusters, 200)] + 0.5 * rng.normal(size=(200, dim)).astype(np.float32)
    return items, queries


def _recall(found, exact):
    return np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact)])


def test_the_index_finds_what_brute_force_finds():
    items, queries = _clustered()
    index = ann.build(items)
    found, scores = ann.search(index, tf.constant(queries), tf.constant(10))
    exact = np.argsort(-(queries @ items.T), axis=1)[:, :10]
    recall = _recall(found.numpy(), exact)
    print(f"ScaNN Recall@10 against brute force: {recall:.3f}")
    assert recall >= 0.95, recall
    # Scores are the exact dot products of what it found (re-scored), best first.
    expected = np.take_along_axis(queries @ items.T, found.numpy(), 1)
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-4, atol=1e-3)
    assert (np.diff(scores.numpy(), axis=1) <= 1e-6).all()


def test_excluded_items_never_come_back_and_k_is_filled_from_further_down():
    items, queries = _clustered(num_items=5_000)
    index = ann.build(items)
    exact = np.argsort(-(queries[:3] @ items.T), axis=1)
    excluded = tf.ragged.constant([exact[0, :15].tolist(), [], exact[2, :3].tolist()], dtype=tf.int64)
    found, scores = ann.top_k_excluding(index, tf.constant(queries[:3]), tf.constant(10, tf.int64), excluded)
    found = found.numpy()
    assert found.shape == (3, 10) and np.isfinite(scores.numpy()).all()
    assert not set(found[0]) & set(exact[0, :15]) and not set(found[2]) & set(exact[2, :3])
    # What is left is the next best: brute force without the excluded items.
    assert _recall([found[0]], [exact[0, 15:25]]) >= 0.9
    assert _recall([found[1]], [exact[1, :10]]) >= 0.9


def test_an_index_over_part_of_the_catalogue_answers_catalogue_indices_and_never_the_rest():
    """Retired items are left out of the index: it answers in catalogue indices, and never a retired one."""
    items, queries = _clustered(num_items=5_000)
    active = np.flatnonzero(np.arange(len(items)) % 3 != 0)  # every third item retired
    index = ann.build(items[active], item_indices=active)
    found, scores = ann.search(index, tf.constant(queries), tf.constant(10))
    found = found.numpy()
    assert not set(found.ravel()) - set(active)
    exact = active[np.argsort(-(queries @ items[active].T), axis=1)[:, :10]]
    assert _recall(found, exact) >= 0.9
    np.testing.assert_allclose(scores.numpy(), np.take_along_axis(queries @ items.T, found, 1), rtol=1e-4, atol=1e-3)


def test_each_build_is_its_own_index_even_over_the_same_array():
    """Two indexes built in one process from the same buffer (rewritten in between, as a freed array's memory is
    reused) answer each over its own vectors: a second build never hands back the first one's searcher."""
    items, _ = _clustered(num_items=4_000)
    first = ann.build(items)
    items[:], queries = _clustered(num_items=4_000, seed=1)
    second = ann.build(items)
    exact = np.argsort(-(queries @ items.T), axis=1)[:, :10]
    assert _recall(ann.search(second, tf.constant(queries), tf.constant(10))[0].numpy(), exact) >= 0.9
    assert _recall(ann.search(first, tf.constant(queries), tf.constant(10))[0].numpy(), exact) < 0.5


def test_a_saved_model_holding_the_index_loads_where_the_ops_are_registered(tmp_path):
    items, queries = _clustered(num_items=3_000)
    module = tf.Module()
    module.index = ann.build(items)

    @tf.function(input_signature=[tf.TensorSpec([None, items.shape[1]], tf.float32), tf.TensorSpec([], tf.int32)])
    def top(q, k):
        return ann.search(module.index, q, k)[0]

    module.top = top
    tf.saved_model.save(module, str(tmp_path), options=ann.save_options())
    ann.register_ops()
    loaded = tf.saved_model.load(str(tmp_path))
    np.testing.assert_array_equal(loaded.top(tf.constant(queries[:5]), tf.constant(7)).numpy(),
                                  module.top(tf.constant(queries[:5]), tf.constant(7)).numpy())
