"""Request size limits, checked before anything is allocated; and the same row limit as a TF guard.

A TensorProto declares its shape separately from its values, so a few bytes can declare billions of
elements (TF fills missing values by repeating the last one). The server therefore checks every
input's declared shape against the signature's row limit and against the values actually carried
before building an array. `guard_rows` puts the row limit in the exported signatures too, so the
real TF Serving (which expands the tensor itself) refuses an oversized `recommend` before scoring.
"""

from __future__ import annotations

import functools
import math

MAX_RECOMMEND_USERS = 1000  # recommend scores users x catalogue: this bounds its memory
# recommend_by_history: items per row of history_item_ids / history_weights (a longer history is cut by the
# client to its newest items); checked on the declared shape by the server and inside the SavedModel.
MAX_HISTORY_ITEMS = 10_000
DEFAULT_MAX_ROWS = 10_000  # any other signature, per request (rows, or tf.Examples for Regress/Classify)


class LimitError(ValueError):
    """A request over a limit or with inconsistent content: INVALID_ARGUMENT, naming the input."""


@functools.lru_cache(maxsize=None)
def _value_fields():
    """The TensorProto field holding each dtype's values, and how many entries one element takes.

    Built on first use: importing TensorFlow here would make `recsys --help` (which reads the
    limits' defaults) slow.
    """
    from tensorflow.core.framework import types_pb2

    return {
        types_pb2.DT_FLOAT: ("float_val", 1), types_pb2.DT_DOUBLE: ("double_val", 1),
        types_pb2.DT_INT32: ("int_val", 1), types_pb2.DT_INT16: ("int_val", 1), types_pb2.DT_INT8: ("int_val", 1),
        types_pb2.DT_UINT8: ("int_val", 1), types_pb2.DT_UINT16: ("int_val", 1),
        types_pb2.DT_INT64: ("int64_val", 1), types_pb2.DT_BOOL: ("bool_val", 1),
        types_pb2.DT_STRING: ("string_val", 1), types_pb2.DT_HALF: ("half_val", 1),
        types_pb2.DT_BFLOAT16: ("half_val", 1), types_pb2.DT_UINT32: ("uint32_val", 1),
        types_pb2.DT_UINT64: ("uint64_val", 1), types_pb2.DT_COMPLEX64: ("scomplex_val", 2),
        types_pb2.DT_COMPLEX128: ("dcomplex_val", 2),
    }


def declared_shape(proto, name: str) -> list:
    """The dims a TensorProto declares; refuses an unknown rank or a negative dim."""
    if proto.tensor_shape.unknown_rank:
        raise LimitError(f"input {name}: TensorProto has an unknown rank; its shape must be given")
    dims = [d.size for d in proto.tensor_shape.dim]
    if any(d < 0 for d in dims):
        raise LimitError(f"input {name}: TensorProto shape {dims} has a negative dimension")
    return dims


def check_content(proto, name: str, dims: list) -> None:
    """Refuses a TensorProto whose values do not fill exactly the shape it declares."""
    import tensorflow as tf
    from tensorflow.core.framework import types_pb2

    count = math.prod(dims)
    field, per_element = _value_fields().get(proto.dtype, (None, 1))
    if field is None:
        raise LimitError(f"input {name}: dtype enum {proto.dtype} is not supported")
    if proto.tensor_content:
        if proto.dtype == types_pb2.DT_STRING:
            raise LimitError(f"input {name}: a string TensorProto carries its values in string_val, "
                             "not tensor_content")
        expected = count * tf.dtypes.as_dtype(proto.dtype).size
        if len(proto.tensor_content) != expected:
            raise LimitError(f"input {name}: shape {dims} needs {expected} bytes of tensor_content, "
                             f"got {len(proto.tensor_content)}")
        return
    given = len(getattr(proto, field))
    if given != count * per_element:
        raise LimitError(f"input {name}: shape {dims} declares {count} element(s) but {field} holds "
                         f"{given // per_element}")


def _guard_dimension(tensor, axis: int, limit: int, message: str):
    import tensorflow as tf

    size = tf.shape(tensor, out_type=tf.int64)[axis]
    check = tf.debugging.assert_less_equal(size, tf.constant(limit, tf.int64), message=message)
    with tf.control_dependencies([check]):
        return tf.identity(tensor)


def guard_rows(tensor, limit: int, name: str):
    """`tensor`, after asserting it has at most `limit` rows; over it, the call fails INVALID_ARGUMENT.

    For the exported signatures (see the module docstring): use its result in place of the input.
    """
    return _guard_dimension(tensor, 0, limit, f"input {name}: more rows than the limit of {limit} per request")


def guard_columns(tensor, limit: int, name: str):
    """`tensor` ([rows, columns]), after asserting it has at most `limit` columns (recommend_by_history's
    history length); over it, the call fails INVALID_ARGUMENT naming the input and the limit."""
    return _guard_dimension(tensor, 1, limit, f"input {name}: more items per row than the history limit of {limit}")


MAX_SCORED_PAIRS = 1 << 18  # (user, item) pairs a pairwise model (MLP) scores at once: its activations' bound


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
