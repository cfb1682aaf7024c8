"""The history builders (components/models/history.py) and the item-to-item neighbours rating models use."""

import numpy as np
import tensorflow as tf

from components.models import history, neighbours


def dense(sparse_tensor):
    return tf.sparse.to_dense(sparse_tensor).numpy()


def test_stored_rows_unknown_users_are_empty():
    row_splits = tf.constant([0, 2, 3, 3], tf.int64)  # user 0: items 1, 2; user 1: item 0; user 2 (OOV): none
    items = tf.constant([1, 2, 0], tf.int64)
    got = dense(history.stored(tf.constant([1, 0, 2, 7]), row_splits, items, 4))
    np.testing.assert_array_equal(got, [[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])


def test_requested_histories_drop_padding_and_unknown_ids_and_count_duplicates_once():
    index = tf.constant([[3, 1, 3, 9], [-1, 0, 0, 2]], tf.int64)  # 9: past the catalogue (OOV); -1: nothing
    weights = tf.constant([[1.0, 0.5, 2.0, 1.0], [1.0, 1.0, 3.0, 0.0]])  # a zero weight drops its item
    got = history.from_indices(index, weights, 4)
    np.testing.assert_array_equal(dense(got), [[0, 0.5, 0, 2.0], [3.0, 0, 0, 0]])  # duplicates: largest weight
    np.testing.assert_array_equal(history.lengths(got).numpy(), [2, 1])
    merged = history.union(got, history.stored(tf.constant([0, 1]), tf.constant([0, 1, 2, 2], tf.int64),
                                               tf.constant([2, 0], tf.int64), 4))
    np.testing.assert_array_equal(dense(merged), [[0, 0.5, 1.0, 2.0], [3.0, 0, 0, 0]])
    scores = history.exclude(tf.zeros([2, 4]), merged).numpy()
    np.testing.assert_array_equal(np.isinf(scores), dense(merged) > 0)
    pooled = history.mean_pool(got, tf.constant([[1.0], [2.0], [3.0], [4.0]])).numpy()
    np.testing.assert_allclose(pooled, [[(0.5 * 2 + 2 * 4) / 2.5], [1.0]])


def test_neighbours_follow_co_occurrence():
    # Items 0 and 1 always together, 2 and 3 always together, item 4 with everyone once.
    pairs = np.array([(u, i) for u in range(10) for i in ((0, 1) if u < 5 else (2, 3))] + [(0, 4), (6, 4)])
    index, weight = neighbours.build(pairs, 5, neighbours=2)
    assert index.shape == (5, 2)
    assert index[0, np.argmax(weight[0])] == 1 and index[2, np.argmax(weight[2])] == 3
    np.testing.assert_allclose(weight[0].max(), 1.0, rtol=1e-6)
    assert (index != np.arange(5)[:, None]).all() or (weight[index == np.arange(5)[:, None]] == 0).all()
    h = history.from_indices(tf.constant([[0], [3]], tf.int64), tf.ones([2, 1]), 5)
    scores = neighbours.score(h, tf.constant(index), tf.constant(weight)).numpy()
    assert scores[0].argmax() == 1 and scores[1].argmax() == 2
    assert scores[0, 2] == 0 and scores[1, 0] == 0  # nothing from the other cluster
