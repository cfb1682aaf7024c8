"""The server's request limits, checked on a request before anything is allocated.

A TensorProto declares its shape separately from its values, so a few bytes can declare billions of
elements (TF fills missing values by repeating the last one). The server therefore checks every
input's declared shape against the signature's row limit and against the values actually carried
before building an array. The exported model carries the same limits as graph guards
(components/guards.py, where MAX_RECOMMEND_USERS and MAX_HISTORY_ITEMS are defined).
"""

from __future__ import annotations

import functools
import math

from components.guards import MAX_HISTORY_ITEMS, MAX_RECOMMEND_USERS  # noqa: F401 (also checked here)

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
