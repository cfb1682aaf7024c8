"""Approximate top-k over a model's item vectors with ScaNN (Guo et al. 2020), carried in the SavedModel.

Brute force scores every item for every request: exact, and 10+ ms per user at a million items. `--ann scann`
has the Trainer build a ScaNN index (a k-means tree over the item vectors, anisotropic quantisation, exact
re-scoring of the best candidates) and `recommend` asks it instead: only the leaves nearest the user vector
are scored. It serves models whose score is a dot product of a user vector and an item vector (`ials`,
`two_tower`): the model's `query_vectors` and `retrieval_vectors`.

The index is made of ScaNN's own TensorFlow ops: a SavedModel holding one loads only where they are
registered (`register_ops`, which the project's server and the ranking gate call; stock TF Serving lacks
them, Google publishes a TF Serving image built with them). Brute force therefore stays the default.
"""

from __future__ import annotations

import math
import uuid

import numpy as np

# TensorFlow is imported inside the functions: the CLI reads CHOICES while building its parser, before it has
# turned TensorFlow's start-up logging down.

NONE = "none"
SCANN = "scann"
CHOICES = (NONE, SCANN)
SAVE_OPTIONS_NAMESPACE = "Scann"  # the ops' namespace, which tf.saved_model.save must be told to allow


class AnnUnavailable(RuntimeError):
    """`--ann scann` without the scann package."""


def available() -> bool:
    try:
        import scann.scann_ops.py.scann_ops  # noqa: F401
        return True
    except ImportError:
        return False


def register_ops() -> None:
    """Registers ScaNN's TF ops when the package is installed, so a SavedModel holding an index loads."""
    if available():
        import scann.scann_ops.py.scann_ops  # noqa: F401  (importing registers the ops)


def save_options() -> "tf.saved_model.SaveOptions":
    import tensorflow as tf

    return tf.saved_model.SaveOptions(namespace_whitelist=[SAVE_OPTIONS_NAMESPACE])


# Candidates re-scored exactly after the quantised search. The quantisation, not the leaves searched, is what costs
# recall: at 1M items (bench/big_catalogue.py) 1,000 re-scored gave Recall@10 0.93 against brute force, searching
# 2-4x the leaves did not help, 3,000 gave 0.965 at ~2 ms.
DEFAULT_REORDER = 3000


def leaves_for(num_items: int, requested: int = 0) -> int:
    """The tree's leaves: sqrt(items) (ScaNN's rule of thumb), at least 1."""
    return requested or max(1, int(round(math.sqrt(num_items))))


def build(vectors: np.ndarray, leaves: int = 0, leaves_to_search: int = 0, reorder: int = 0,
          item_indices: np.ndarray = None) -> "tf.Module":
    """A ScaNN index over `vectors` [items, dim] (dot product), as a module to attach to the model; `item_indices`
    are the catalogue indices of the rows (default 0..items-1: the index holds only the items it may answer).

    Defaults: sqrt(items) leaves, a tenth of them searched (at least 8), and the best DEFAULT_REORDER quantised
    candidates re-scored exactly."""
    import tensorflow as tf

    if not available():
        raise AnnUnavailable("--ann scann needs the scann package (pip install scann==1.3.2, as requirements.lock "
                             "pins it)")
    from scann.scann_ops.py import scann_ops

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    num_leaves = min(leaves_for(len(vectors), leaves), len(vectors))
    searched = min(num_leaves, leaves_to_search or max(8, num_leaves // 10))
    builder = scann_ops.builder(tf.constant(vectors), 10, "dot_product").tree(
        num_leaves=num_leaves, num_leaves_to_search=searched, training_iterations=12,
        training_sample_size=min(len(vectors), 250_000))
    builder = builder.score_ah(2, anisotropic_quantization_threshold=0.2).reorder(reorder or DEFAULT_REORDER)
    # A fresh resource name per index: a name reused in one process (an id() of a freed array) hands back the
    # searcher built before it, over another catalogue.
    state = builder.build(shared_name=f"recsys_scann_{uuid.uuid4().hex}").serialize_to_module()
    index = tf.Module(name="ann_index")
    index.state = state
    rows = np.arange(len(vectors)) if item_indices is None else np.asarray(item_indices)
    if len(rows) != len(vectors):
        raise ValueError(f"{len(vectors)} vectors but {len(rows)} item indices")
    index.item_indices = tf.Variable(rows.astype(np.int64), trainable=False, name="ann_item_indices")
    index.reorder = tf.Variable(reorder or DEFAULT_REORDER, trainable=False, name="ann_reorder")
    index.num_items = tf.Variable(len(vectors), dtype=tf.int64, trainable=False, name="ann_num_items")
    index.num_leaves = tf.Variable(num_leaves, trainable=False, name="ann_num_leaves")
    index.leaves_to_search = tf.Variable(searched, trainable=False, name="ann_leaves_to_search")
    return index


# Asked for more than the k a request wants (k + the items it excludes), the index searches proportionally more
# leaves, up to this many times its setting: the excluded items are among the best scored, so the k that remain
# lie deeper in the ranking than k alone.
MAX_LEAVES_FACTOR = 8


def search(index: tf.Module, queries: tf.Tensor, k: tf.Tensor, wanted: tf.Tensor = None):
    """([B, k] int64 catalogue indices, [B, k] scores) of the approximately best k items per query row; `wanted` (default
    k) is how many of them the caller needs after its own exclusions, which sets how many leaves are searched."""
    import tensorflow as tf

    from scann.scann_ops.py import scann_ops

    k = tf.cast(tf.minimum(tf.cast(k, tf.int64), index.num_items), tf.int32)
    wanted = k if wanted is None else tf.maximum(tf.cast(wanted, tf.int32), 1)
    factor = tf.minimum(MAX_LEAVES_FACTOR, (k + wanted - 1) // wanted)
    leaves = tf.minimum(index.num_leaves, index.leaves_to_search * tf.maximum(factor, 1))
    result = scann_ops.searcher_from_module(index.state).search_batched(
        queries, final_num_neighbors=k, pre_reorder_num_neighbors=tf.maximum(k, index.reorder), leaves_to_search=leaves)
    rows = tf.cast(result.indices, tf.int64)  # the index's rows, as catalogue indices (-1: no neighbour)
    found = tf.where(rows >= 0, tf.gather(index.item_indices, tf.maximum(rows, 0)), tf.constant(-1, tf.int64))
    return found, result.distances


def top_k_excluding(index: tf.Module, queries: tf.Tensor, k: tf.Tensor, excluded: tf.RaggedTensor):
    """Like `search`, each row's `excluded` item indices left out: asks for k + the longest exclusion list of the
    batch, then drops the excluded (a sorted search per row) and keeps the best k. Returns indices and scores with
    -inf where fewer than k remained."""
    import tensorflow as tf

    longest = tf.cast(tf.reduce_max(tf.concat([excluded.row_lengths(), [0]], 0)), tf.int64)
    indices, scores = search(index, queries, tf.cast(k, tf.int64) + longest, wanted=k)
    blocked = tf.sort(excluded.to_tensor(default_value=-1), axis=1)  # [B, L] ascending, -1 padding first
    blocked = tf.concat([blocked, tf.fill([tf.shape(blocked)[0], 1], tf.constant(-1, blocked.dtype))], 1)
    position = tf.searchsorted(blocked[:, :-1], indices, side="left")
    hit = tf.gather(blocked, position, batch_dims=1) == indices
    scores = tf.where(hit | (indices < 0), float("-inf"), scores)
    best = tf.math.top_k(scores, k=tf.minimum(tf.cast(k, tf.int32), tf.shape(scores)[1]))
    return tf.gather(indices, best.indices, batch_dims=1), best.values
