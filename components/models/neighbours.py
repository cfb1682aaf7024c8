"""Item-to-item neighbours (ItemKNN, cosine over co-occurrence): how a rating model scores a history.

A rating model learns a row per user it was trained on; a user it has no row for (new since the run, or
an anonymous session) still has a history. The rating models' item vectors are fitted to rating values,
not to which items go together, so their cosine ranks such users below most popular; co-occurrence does
not (ItemKNN is a reference of components/ranking_eval). Each item keeps its `neighbours` most similar
items: an [items, neighbours] table saved with the model, scored in the graph as a scatter of the history
items' rows, so its cost grows with the history, not with the catalogue squared.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import tensorflow as tf
from scipy import sparse

DEFAULT_NEIGHBOURS = 100
_CHUNK_CELLS = 1 << 24  # items x catalogue similarities computed at once (64 MiB of float32)


def build(pairs: np.ndarray, num_items: int, neighbours: int = DEFAULT_NEIGHBOURS) -> Tuple[np.ndarray, np.ndarray]:
    """(indices, similarities), each [num_items, m] (m = min(neighbours, num_items - 1)): each item's most
    co-occurring others by cosine over binary (user, item) `pairs`; zero similarity pads rare items."""
    m = max(1, min(neighbours, num_items - 1))
    users = int(pairs[:, 0].max()) + 1 if len(pairs) else 1
    matrix = sparse.csr_matrix((np.ones(len(pairs), np.float32), (pairs[:, 0], pairs[:, 1])),
                               shape=(users, num_items))
    matrix.data[:] = 1.0
    by_item = matrix.T.tocsr()
    norms = np.sqrt(np.asarray(matrix.sum(axis=0)).ravel()).astype(np.float32)
    norms[norms == 0] = 1.0
    indices = np.zeros((num_items, m), np.int64)
    weights = np.zeros((num_items, m), np.float32)
    step = max(1, _CHUNK_CELLS // max(1, num_items))
    for start in range(0, num_items, step):
        end = min(num_items, start + step)
        co = np.asarray((by_item[start:end] @ matrix).todense(), dtype=np.float32)
        co /= norms[start:end, None] * norms[None, :]
        co[np.arange(end - start), np.arange(start, end)] = 0.0  # an item is not its own neighbour
        top = np.argpartition(-co, m - 1, axis=1)[:, :m]
        indices[start:end] = top
        weights[start:end] = np.take_along_axis(co, top, axis=1)
    return indices, weights


def score(history: tf.SparseTensor, indices: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """[rows, items]: sum over the history's items (times their weights) of their neighbours' similarities."""
    rows, items = history.indices[:, 0], history.indices[:, 1]
    neighbour = tf.gather(indices, items)  # [nnz, m]
    similarity = tf.gather(weights, items) * history.values[:, None]
    num_items = tf.cast(history.dense_shape[1], tf.int64)
    keys = tf.reshape(rows[:, None] * num_items + neighbour, [-1])
    total = tf.math.unsorted_segment_sum(tf.reshape(similarity, [-1]), keys, history.dense_shape[0] * num_items)
    return tf.reshape(total, tf.stack([history.dense_shape[0], num_items]))
