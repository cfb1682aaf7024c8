"""One memory budget for the requests being parsed and served, shared by gRPC and REST.

A request's parsed form is far larger than its wire form (a string in a TensorProto or a JSON list
becomes a Python/upb object of ~50 bytes), so each request reserves PARSE_FACTOR x its size before
it is parsed, and releases it when answered. A request that does not fit is refused unparsed
(RESOURCE_EXHAUSTED; REST 429) instead of letting concurrent large requests add up; a request alone
always fits, so a small budget slows large requests down rather than refusing them all.
"""

from __future__ import annotations

import threading
import weakref
from typing import Callable, Optional

import grpc

PARSE_FACTOR = 18  # measured: 9M one-byte strings (54 MB on the wire) took ~970 MB parsed
_M_MMAP_THRESHOLD = -3  # glibc mallopt parameters
_M_ARENA_MAX = -8


def _libc():
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


_LIBC = _libc()


def return_large_frees_to_the_os(threshold: int = 1 << 20, arenas: int = 1) -> bool:
    """Fixes glibc's mmap threshold and caps its arenas; True when it could (glibc only).

    glibc raises its mmap threshold each time a large block is freed (up to 32 MB), after which a
    parsed request's blocks come from the heap of its thread's arena and stay in RSS when freed: six
    large requests parsed one after another on six worker threads left RSS ~300 MB up instead of the
    ~140 MB one of them takes. With a fixed threshold, blocks over 1 MB are mapped and unmapped; with one
    arena, the small blocks a parse frees are what the next parse reuses, whichever thread it runs on (the
    handlers run one at a time under the GIL, so a single arena costs no parallelism). With two arenas, six
    requests admitted one after another on a busy machine still grew RSS 285 MB; with one, 176-181 MB.
    """
    try:
        return bool(_LIBC.mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(_LIBC.mallopt(_M_ARENA_MAX, arenas))
    except AttributeError:  # not glibc (or no libc at all)
        return False


def trim_freed_memory() -> None:
    """Hands the heap's free pages back to the OS (glibc's malloc_trim; 0.1-0.2 ms after a large parse).

    What a large request frees below the mmap threshold stays in RSS as free heap, and bursts of them
    ratcheted RSS up: five rounds of six 7.8 MB requests left it 41, 70, 83, 90 and 101 MB above where it
    started; trimmed after each large request, 2-14 MB.
    """
    try:
        _LIBC.malloc_trim(0)
    except AttributeError:
        pass


class MemoryBudget:
    """The requests in flight, by estimated parsed size; a release of `trim_at` bytes or more trims the heap."""

    def __init__(self, limit_bytes: int, trim_at: int = 32 << 20):
        self.limit, self.used, self.trim_at = limit_bytes, 0, trim_at
        self._lock = threading.Lock()

    def reserve(self, wire_bytes: int) -> Optional["Reservation"]:
        """A reservation for a request of `wire_bytes`, or None when the budget cannot take it now."""
        cost = max(1, wire_bytes) * PARSE_FACTOR
        with self._lock:
            if self.used and self.used + cost > self.limit:
                return None
            self.used += cost
        return Reservation(self, cost)

    def _release(self, cost: int) -> None:
        with self._lock:
            self.used -= cost
        if cost >= self.trim_at:
            trim_freed_memory()


class Reservation:
    """Released once: explicitly, or when garbage-collected (a cancelled call never reaches its handler)."""

    def __init__(self, budget: MemoryBudget, cost: int):
        self._finalizer = weakref.finalize(self, budget._release, cost)

    def release(self) -> None:
        self._finalizer()


class Budgeted:
    """What a budgeted deserializer hands the servicer: the request and its reservation."""

    __slots__ = ("message", "reservation", "__weakref__")

    def __init__(self, message, reservation: Reservation):
        self.message, self.reservation = message, reservation

    def take(self):
        """The parsed request, no longer held here.

        gRPC keeps the handler's argument (this wrapper) until the response is sent, so a message left
        in it outlives the reservation's release: the next large request would be admitted and parsed
        while this one is still in memory (six concurrent requests grew RSS by two parses, 277 MB).
        """
        message, self.message = self.message, None
        return message


class OverBudget:
    """Handed to the servicer instead of a request that was not parsed: it answers RESOURCE_EXHAUSTED."""

    __slots__ = ("wire_bytes", "limit")

    def __init__(self, wire_bytes: int, limit: int):
        self.wire_bytes, self.limit = wire_bytes, limit

    def __str__(self) -> str:
        return (f"server busy: a request of {self.wire_bytes} bytes does not fit the memory budget of the "
                f"requests in flight ({self.limit >> 20} MiB, --request-memory-mb); retry")


def _deserializer(parse: Callable[[bytes], object], budget: MemoryBudget):
    def deserialize(data: bytes):
        reservation = budget.reserve(len(data))
        if reservation is None:
            return OverBudget(len(data), budget.limit)
        try:
            return Budgeted(parse(data), reservation)
        except BaseException:
            reservation.release()
            raise

    return deserialize


def _apis():
    from tensorflow_serving.apis import (
        classification_pb2,
        get_model_metadata_pb2,
        get_model_status_pb2,
        inference_pb2,
        model_management_pb2,
        predict_pb2,
        regression_pb2,
    )

    # As the generated *_pb2_grpc registrations (their service *_pb2 modules do not import under upb).
    return {
        "tensorflow.serving.PredictionService": {
            "Classify": (classification_pb2.ClassificationRequest, classification_pb2.ClassificationResponse),
            "Regress": (regression_pb2.RegressionRequest, regression_pb2.RegressionResponse),
            "Predict": (predict_pb2.PredictRequest, predict_pb2.PredictResponse),
            "MultiInference": (inference_pb2.MultiInferenceRequest, inference_pb2.MultiInferenceResponse),
            "GetModelMetadata": (get_model_metadata_pb2.GetModelMetadataRequest,
                                 get_model_metadata_pb2.GetModelMetadataResponse),
        },
        "tensorflow.serving.ModelService": {
            "GetModelStatus": (get_model_status_pb2.GetModelStatusRequest,
                               get_model_status_pb2.GetModelStatusResponse),
            "HandleReloadConfigRequest": (model_management_pb2.ReloadConfigRequest,
                                          model_management_pb2.ReloadConfigResponse),
        },
    }


PREDICTION_SERVICE, MODEL_SERVICE = "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService"


def generic_handler(service: str, servicer, budget: MemoryBudget) -> grpc.GenericRpcHandler:
    """The handlers the generated add_*Servicer_to_server registers for `service`, each request budgeted."""
    handlers = {}
    for method, (request_class, response_class) in _apis()[service].items():
        handlers[method] = grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method), request_deserializer=_deserializer(request_class.FromString, budget),
            response_serializer=response_class.SerializeToString)
    return grpc.method_handlers_generic_handler(service, handlers)
