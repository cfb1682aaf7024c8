"""The exported model's own limits, as TF graph code: row and history-length guards, chunked scoring.

They live in the SavedModel, so the real TF Serving (which expands a request's tensors itself, with no
checks of ours in front) refuses an oversized `recommend` before scoring, and a pairwise model's
`recommend` holds a bounded number of activations. `serving/limits.py` checks the same limits on the
declared shape before anything is allocated; it imports them from here (components never import serving).
TensorFlow is imported inside the functions: `recsys --help` reads these limits and should stay instant.
"""

from __future__ import annotations

MAX_RECOMMEND_USERS = 1000  # recommend scores users x catalogue: this bounds its memory
# recommend_by_history: items per row of history_item_ids / history_weights (a longer history is cut by the
# client to its newest items); checked on the declared shape by the server and inside the SavedModel.
MAX_HISTORY_ITEMS = 10_000
MAX_SCORED_PAIRS = 1 << 18  # (user, item) pairs a pairwise model (MLP) scores at once: its activations' bound


def _guard_dimension(tensor, axis: int, limit: int, message: str):
    import tensorflow as tf

    # int32: graph-mode asserts on int32 (or string) data are one Assert op; on int64 TensorFlow wraps each in a
    # tf.cond, which every signature traces and every request runs.
    size = tf.shape(tensor, out_type=tf.int32)[axis]
    check = tf.debugging.assert_less_equal(size, tf.constant(limit, tf.int32), message=message)
    with tf.control_dependencies([check]):
        return tf.identity(tensor)


def guard_rows(tensor, limit: int, name: str):
    """`tensor`, after asserting it has at most `limit` rows; over it, the call fails INVALID_ARGUMENT.

    Use its result in place of the input, so the check runs before anything reads it.
    """
    return _guard_dimension(tensor, 0, limit, f"input {name}: more rows than the limit of {limit} per request")


def guard_columns(tensor, limit: int, name: str):
    """`tensor` ([rows, columns]), after asserting it has at most `limit` columns (recommend_by_history's
    history length); over it, the call fails INVALID_ARGUMENT naming the input and the limit."""
    return _guard_dimension(tensor, 1, limit, f"input {name}: more items per row than the history limit of {limit}")


def score_in_chunks(score_chunk, rows, num_items, max_pairs: int = MAX_SCORED_PAIRS):
    """[rows, num_items] scores built from item chunks of at most `max_pairs // rows` items.

    `score_chunk(start, end)` scores every row against items [start, end) and returns [rows, end - start].
    A model that runs each (user, item) pair through hidden layers (MLP) would otherwise hold
    rows x catalogue x hidden activations at once; chunked, the peak is max_pairs x hidden plus the
    [rows, num_items] result. Graph-friendly (a while loop), so it can live in an exported signature.
    """
    import tensorflow as tf

    rows = tf.cast(rows, tf.int32)
    num_items = tf.cast(num_items, tf.int32)
    chunk = tf.maximum(1, max_pairs // tf.maximum(rows, 1))
    count = (num_items + chunk - 1) // chunk
    parts = tf.TensorArray(tf.float32, size=count, infer_shape=False, element_shape=tf.TensorShape([None, None]))

    def body(i, parts):
        start = i * chunk
        scores = score_chunk(start, tf.minimum(start + chunk, num_items))
        return i + 1, parts.write(i, tf.transpose(tf.cast(scores, tf.float32)))  # [items, rows]: concat on axis 0

    _, parts = tf.while_loop(lambda i, _: i < count, body, (tf.constant(0), parts))
    return tf.cond(count > 0, lambda: tf.transpose(parts.concat()), lambda: tf.zeros([rows, 0], tf.float32))
