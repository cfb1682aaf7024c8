"""A user's item history as the ranking models' input: [users, catalogue] sparse rows, built in the graph.

Ranking models score a user from the items they interacted with, not from a per-user parameter: the
stored history of a known user (ragged rows by user index, saved with the model), a history a client
sends (`recommend_by_history`: an anonymous session, or a known user's newest interactions), or both.
Every builder here returns the same thing, a SparseTensor [rows, num_items] whose values are the
items' weights (1 for a stored interaction), each item at most once per row (the largest weight wins),
in canonical order, so a model's `score_history` is one sparse x dense product whatever the source.
"""

from __future__ import annotations

import tensorflow as tf


def _dedupe(rows: tf.Tensor, items: tf.Tensor, weights: tf.Tensor, num_rows: tf.Tensor,
            num_items: tf.Tensor) -> tf.SparseTensor:
    """(row, item, weight) triples -> SparseTensor [num_rows, num_items], one entry per (row, item)."""
    rows, items = tf.cast(rows, tf.int64), tf.cast(items, tf.int64)
    num_rows, num_items = tf.cast(num_rows, tf.int64), tf.cast(num_items, tf.int64)
    keys, position = tf.unique(rows * num_items + items)
    values = tf.math.unsorted_segment_max(tf.cast(weights, tf.float32), position, tf.shape(keys)[0])
    indices = tf.stack([keys // num_items, keys % num_items], axis=1)
    return tf.sparse.reorder(tf.SparseTensor(indices, values, tf.stack([num_rows, num_items])))


def stored(users: tf.Tensor, row_splits: tf.Tensor, items: tf.Tensor, num_items) -> tf.SparseTensor:
    """The stored history of `users` (vocabulary indices; any index past the rows, e.g. OOV, is empty)."""
    users = tf.cast(tf.reshape(users, [-1]), tf.int64)
    last = tf.shape(row_splits, out_type=tf.int64)[0] - 2  # the last row (the OOV user's, empty)
    # validate=False: the row splits are the model's own (catalog.ragged_rows builds them, from 0 and monotonic);
    # validating would put two int64 asserts, each a tf.cond, in every signature that reads a history.
    rows = tf.gather(tf.RaggedTensor.from_row_splits(items, row_splits, validate=False), tf.minimum(users, last))
    batch = tf.shape(users, out_type=tf.int64)[0]
    row_of = tf.repeat(tf.range(batch), rows.row_lengths())
    return _dedupe(row_of, rows.flat_values, tf.ones_like(rows.flat_values, tf.float32), batch, num_items)


def from_indices(item_index: tf.Tensor, weights: tf.Tensor, num_items) -> tf.SparseTensor:
    """A requested history ([rows, L] vocabulary indices, [rows, L] weights) -> SparseTensor; indices outside
    [0, num_items) (padding, unknown ids) and weights <= 0 are dropped."""
    num_items = tf.cast(num_items, tf.int64)
    item_index = tf.cast(item_index, tf.int64)
    keep = (item_index >= 0) & (item_index < num_items) & (weights > 0)
    where = tf.where(keep)
    return _dedupe(where[:, 0], tf.gather_nd(item_index, where), tf.gather_nd(weights, where),
                   tf.shape(item_index, out_type=tf.int64)[0], num_items)


def union(a: tf.SparseTensor, b: tf.SparseTensor) -> tf.SparseTensor:
    """Both histories in one (same shape), each item once per row."""
    return _dedupe(tf.concat([a.indices[:, 0], b.indices[:, 0]], 0), tf.concat([a.indices[:, 1], b.indices[:, 1]], 0),
                   tf.concat([a.values, b.values], 0), a.dense_shape[0], a.dense_shape[1])


def lengths(history: tf.SparseTensor) -> tf.Tensor:
    """[rows] int32: how many distinct items each row holds."""
    return tf.cast(tf.math.bincount(tf.cast(history.indices[:, 0], tf.int32),
                                    minlength=tf.cast(history.dense_shape[0], tf.int32),
                                    maxlength=tf.cast(history.dense_shape[0], tf.int32)), tf.int32)


def exclude(scores: tf.Tensor, history: tf.SparseTensor) -> tf.Tensor:
    """[rows, N] scores with every history item set to -inf (the history is never recommended back)."""
    return tf.tensor_scatter_nd_update(scores, history.indices,
                                       tf.fill([tf.shape(history.indices)[0]], float("-inf")))


def mean_pool(history: tf.SparseTensor, vectors: tf.Tensor) -> tf.Tensor:
    """[rows, d]: the weighted mean of the history items' vectors (zeros for an empty row)."""
    total = tf.sparse.sparse_dense_matmul(history, vectors)
    weight = tf.sparse.reduce_sum(history, axis=1, output_is_sparse=False)
    return total / tf.maximum(weight, 1e-6)[:, None]


def from_ragged(users, row_splits, items) -> tf.RaggedTensor:
    """[batch, None] stored item indices of `users` (training: the history each example is scored from)."""
    last = tf.shape(row_splits, out_type=tf.int64)[0] - 2
    return tf.gather(tf.RaggedTensor.from_row_splits(items, row_splits, validate=False), tf.minimum(tf.cast(users, tf.int64), last))
