"""Server-side batching: concurrent requests to one signature run as one call (TF Serving's --enable_batching).

A batch runs when it holds `max_batch_size` rows or `batch_timeout_micros` after its first request
arrived, whichever is first; outputs are split back by each request's row count. The queue holds
at most `max_enqueued_batches` full batches: beyond that a request is refused with UNAVAILABLE
rather than waiting without bound. Requests only batch together when their scalar inputs (such as
`recommend`'s k) are equal, compared by value, and when each batched input has the same trailing
shape (recommend_by_history's [rows, L] histories batch with histories of the same L: concatenating
rows of different lengths would make an invalid tensor, and padding would need the signature's
semantics); a request whose batched inputs do not all have the same number of rows (an empty
[0, 0] history_weights, or a malformed request) runs on its own, so it can neither break nor be
split wrongly from a shared batch. A signature whose inputs or outputs lack a leading batch
dimension is never batched.

Queues are cheap and bounded: `num_batch_threads` workers serve every queue, at most `max_queues`
exist (one idle for `idle_queue_seconds` is dropped; past the cap a request runs unbatched on its own
thread), so clients sending many distinct scalar values cannot multiply threads. A request whose
deadline (DEADLINE, set by the gRPC front end) has passed when its batch forms is dropped, not run.
"""

from __future__ import annotations

import collections
import contextvars
import threading
import time
from concurrent.futures import Future
from typing import Callable, Dict, Hashable, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from components import features as F
from serving.options import BatchingOptions


class QueueFull(Exception):
    """The batch queue is full: TF Serving answers UNAVAILABLE."""


class TooLarge(ValueError):
    """One request has more rows than a batch may hold: INVALID_ARGUMENT."""


class Expired(Exception):
    """The request's deadline passed while it waited for its batch: DEADLINE_EXCEEDED."""


# time.monotonic() by which the current request must be answered, or None (no client deadline).
DEADLINE: contextvars.ContextVar = contextvars.ContextVar("recsys_request_deadline", default=None)


def batchable(function) -> bool:
    """True when every non-scalar input and every output has an unknown leading (batch) dimension."""
    batched = [spec for spec in tf.nest.flatten(function.structured_input_signature) if spec.shape.rank != 0]
    outputs = tf.nest.flatten(function.structured_outputs)
    return bool(batched) and all(s.shape.rank and s.shape[0] is None for s in batched + outputs)


class _Task:
    __slots__ = ("inputs", "rows", "future", "enqueued", "deadline")

    def __init__(self, inputs: Dict[str, np.ndarray], rows: int, deadline: Optional[float]):
        self.inputs, self.rows, self.future, self.enqueued = inputs, rows, Future(), time.monotonic()
        self.deadline = deadline


class _Queue:
    """Tasks for one (function, scalar input values, trailing shapes); the Batcher's shared workers run batches."""

    __slots__ = ("function", "tasks", "rows", "last_used")

    def __init__(self, function: Callable):
        self.function, self.tasks, self.rows, self.last_used = function, collections.deque(), 0, time.monotonic()


# Inputs that apply to the whole request rather than row by row (recommend_filtered's exclude/allow lists):
# like scalars, requests share a batch only when these are equal, and the batch passes them once.
REQUEST_WIDE_INPUTS = frozenset({F.EXCLUDE_ITEMS_INPUT, F.ALLOW_ITEMS_INPUT})


def _shared(name: str, value: np.ndarray) -> bool:
    return value.ndim == 0 or name in REQUEST_WIDE_INPUTS


def _shared_key(value: np.ndarray) -> Hashable:
    if value.ndim:
        return (value.dtype.str, value.shape, tuple(value.tolist()) if value.dtype == object else value.tobytes())
    return _scalar_key(value)


def _scalar_key(value: np.ndarray) -> Hashable:
    """A scalar input by value: strings by their bytes (an object array's buffer holds only a pointer)."""
    return value.item() if value.dtype == object else (value.dtype.str, value.tobytes())


class Batcher:
    """Queues keyed by (function, scalar input values, trailing shapes), served by `num_batch_threads` shared
    workers."""

    def __init__(self, options: BatchingOptions, serves: Callable[[Callable], bool] = lambda _: True):
        """`serves(function)` says whether a function's version is still loaded; others' queues are dropped."""
        self.options, self._serves = options, serves
        self._queues: Dict[Tuple[int, Hashable], _Queue] = {}
        self._batchable: Dict[int, Tuple[Callable, bool]] = {}
        self._cond = threading.Condition()
        self._stopped = False
        self._threads = [threading.Thread(target=self._work, daemon=True, name="batch")
                         for _ in range(options.num_batch_threads)]
        for thread in self._threads:
            thread.start()

    def accepts(self, function: Callable) -> bool:
        """batchable(function), worked out once per function rather than on every request."""
        entry = self._batchable.get(id(function))
        if entry is None or entry[0] is not function:
            entry = self._batchable[id(function)] = (function, batchable(function))
        return entry[1]

    def run(self, function: Callable, inputs: Dict[str, np.ndarray], timeout: Optional[float] = None):
        """The function's outputs for these inputs (numpy), computed in a batch with concurrent calls."""
        batched = {n: v for n, v in inputs.items() if not _shared(n, v)}
        counts = {len(v) for v in batched.values()}
        rows, limit = max(counts, default=0), self.options.max_batch_size
        if rows > limit:
            raise TooLarge(f"Task size {rows} is larger than maximum input batch size {limit}")
        if len(counts) != 1:  # rows that cannot be concatenated and split back: this request runs alone
            return _call(function, inputs)
        scalars = tuple(sorted((n, _shared_key(v)) for n, v in inputs.items() if _shared(n, v)))
        trailing = tuple(sorted((n, v.shape[1:]) for n, v in batched.items()))
        key = (id(function), scalars, trailing)
        task = _Task(inputs, rows, DEADLINE.get())
        with self._cond:
            queue = self._queues.get(key)
            if queue is None or queue.function is not function:
                queue = self._new_queue_locked(key, function)
            if queue is not None:
                if queue.rows + rows > limit * self.options.max_enqueued_batches:
                    raise QueueFull("The batch scheduling queue to which this task was submitted is full")
                queue.tasks.append(task)
                queue.rows += rows
                queue.last_used = task.enqueued
                self._cond.notify()
        if queue is None:  # at the queue cap with every queue busy: run on the caller's (bounded) thread
            return _call(function, inputs)
        return task.future.result(timeout)

    def queue_count(self) -> int:
        with self._cond:
            return len(self._queues)

    def _new_queue_locked(self, key, function) -> Optional[_Queue]:
        # A function seen for the first time is usually a newly loaded version: drop the queues (and the
        # references keeping the old model in memory) of unloaded ones, and those idle for long.
        now = time.monotonic()
        self._forget_locked(lambda f, q: self._serves(f) and (q.tasks or now - q.last_used
                                                               < self.options.idle_queue_seconds))
        if len(self._queues) >= self.options.max_queues:
            idle = [k for k, q in self._queues.items() if not q.tasks]
            if not idle:
                return None
            del self._queues[min(idle, key=lambda k: self._queues[k].last_used)]
        queue = self._queues[key] = _Queue(function)
        return queue

    def _forget_locked(self, keep: Callable[[Callable, _Queue], bool]) -> None:
        for key, queue in list(self._queues.items()):
            if not keep(queue.function, queue):
                for task in queue.tasks:
                    task.future.set_exception(QueueFull("the batch queue was closed (version unloaded)"))
                del self._queues[key]
        self._batchable = {k: v for k, v in self._batchable.items() if self._serves(v[0])}

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=10)
        with self._cond:
            self._forget_locked(lambda f, q: False)

    def _next_batch(self) -> Optional[Tuple[Callable, List[_Task]]]:
        """Waits for a batch that is full or whose first task waited `batch_timeout_micros`; takes it."""
        timeout = self.options.batch_timeout_micros / 1e6
        with self._cond:
            while True:
                if self._stopped and not any(q.tasks for q in self._queues.values()):
                    return None
                now, ready, wait = time.monotonic(), None, None
                for queue in self._queues.values():
                    if not queue.tasks:
                        continue
                    due = queue.tasks[0].enqueued + timeout
                    if queue.rows >= self.options.max_batch_size or due <= now or self._stopped:
                        if ready is None or queue.tasks[0].enqueued < ready.tasks[0].enqueued:
                            ready = queue
                    else:
                        wait = due - now if wait is None else min(wait, due - now)
                if ready is not None:
                    return ready.function, self._take_locked(ready, now)
                self._cond.wait(wait)

    def _take_locked(self, queue: _Queue, now: float) -> List[_Task]:
        batch, rows = [], 0
        while queue.tasks and rows + queue.tasks[0].rows <= self.options.max_batch_size:
            task = queue.tasks.popleft()
            queue.rows -= task.rows
            if task.deadline is not None and task.deadline <= now:
                task.future.set_exception(Expired("the request's deadline passed while it waited for its batch"))
                continue
            batch.append(task)
            rows += task.rows
        if queue.tasks:
            self._cond.notify()  # leftovers start the next batch on another worker
        return batch

    def _work(self) -> None:
        while True:
            taken = self._next_batch()
            if taken is None:
                return
            function, batch = taken
            if not batch:  # every task in it had expired
                continue
            try:
                _run(function, batch)
            except BaseException as e:  # every waiting request gets the error, the worker survives
                for task in batch:
                    if not task.future.done():
                        task.future.set_exception(e)


def _call(function: Callable, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    return {name: np.asarray(value) for name, value in
            function(**{name: tf.constant(value) for name, value in inputs.items()}).items()}


def _run(function: Callable, batch: List[_Task]) -> None:
    first = batch[0].inputs
    if len(batch) == 1:
        inputs = first
    else:
        inputs = {name: value if _shared(name, value) else np.concatenate([t.inputs[name] for t in batch])
                  for name, value in first.items()}
    outputs = _call(function, inputs)
    start = 0
    for task in batch:
        task.future.set_result({name: value[start:start + task.rows] for name, value in outputs.items()})
        start += task.rows
