"""Server-side batching: concurrent requests to one signature run as one call (TF Serving's --enable_batching).

A batch runs when it holds `max_batch_size` rows or `batch_timeout_micros` after its first request
arrived, whichever is first; outputs are split back by each request's row count. The queue holds
at most `max_enqueued_batches` full batches: beyond that a request is refused with UNAVAILABLE
rather than waiting without bound. Requests only batch together when their scalar inputs (such as
`recommend`'s k) are equal; a signature whose inputs or outputs lack a leading batch dimension is
never batched.
"""

from __future__ import annotations

import collections
import threading
import time
from concurrent.futures import Future
from typing import Callable, Dict, Hashable, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from serving.options import BatchingOptions


class QueueFull(Exception):
    """The batch queue is full: TF Serving answers UNAVAILABLE."""


class TooLarge(ValueError):
    """One request has more rows than a batch may hold: INVALID_ARGUMENT."""


def batchable(function) -> bool:
    """True when every non-scalar input and every output has an unknown leading (batch) dimension."""
    batched = [spec for spec in tf.nest.flatten(function.structured_input_signature) if spec.shape.rank != 0]
    outputs = tf.nest.flatten(function.structured_outputs)
    return bool(batched) and all(s.shape.rank and s.shape[0] is None for s in batched + outputs)


class _Task:
    __slots__ = ("inputs", "rows", "future", "enqueued")

    def __init__(self, inputs: Dict[str, np.ndarray], rows: int):
        self.inputs, self.rows, self.future, self.enqueued = inputs, rows, Future(), time.monotonic()


class _Queue:
    """Tasks for one (function, scalar inputs); `threads` workers form batches and run them."""

    def __init__(self, function: Callable, options: BatchingOptions):
        self.function, self.options = function, options
        self._tasks: collections.deque = collections.deque()
        self._rows = 0
        self._cond = threading.Condition()
        self._stopped = False
        self._threads = [threading.Thread(target=self._work, daemon=True, name="batch")
                         for _ in range(options.num_batch_threads)]
        for thread in self._threads:
            thread.start()

    def submit(self, inputs: Dict[str, np.ndarray], rows: int) -> Future:
        limit = self.options.max_batch_size
        if rows > limit:
            raise TooLarge(f"Task size {rows} is larger than maximum input batch size {limit}")
        task = _Task(inputs, rows)
        with self._cond:
            if self._rows + rows > limit * self.options.max_enqueued_batches:
                raise QueueFull("The batch scheduling queue to which this task was submitted is full")
            self._tasks.append(task)
            self._rows += rows
            self._cond.notify()
        return task.future

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def _next_batch(self) -> Optional[List[_Task]]:
        timeout = self.options.batch_timeout_micros / 1e6
        with self._cond:
            while not self._tasks and not self._stopped:
                self._cond.wait()
            if not self._tasks:
                return None
            deadline = self._tasks[0].enqueued + timeout
            while self._rows < self.options.max_batch_size and not self._stopped:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._cond.wait(remaining):
                    break
            batch, rows = [], 0
            while self._tasks and rows + self._tasks[0].rows <= self.options.max_batch_size:
                task = self._tasks.popleft()
                batch.append(task)
                rows += task.rows
            self._rows -= rows
            if self._tasks:
                self._cond.notify()  # leftovers start the next batch on another worker
            return batch

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if not batch:  # another worker took these tasks first
                continue
            try:
                self._run(batch)
            except BaseException as e:  # every waiting request gets the error, the worker survives
                for task in batch:
                    if not task.future.done():
                        task.future.set_exception(e)

    def _run(self, batch: List[_Task]) -> None:
        first = batch[0].inputs
        if len(batch) == 1:
            inputs = {name: tf.constant(value) for name, value in first.items()}
        else:
            inputs = {name: tf.constant(value if value.ndim == 0 else np.concatenate([t.inputs[name] for t in batch]))
                      for name, value in first.items()}
        outputs = {name: np.asarray(value) for name, value in self.function(**inputs).items()}
        start = 0
        for task in batch:
            task.future.set_result({name: value[start:start + task.rows] for name, value in outputs.items()})
            start += task.rows


class Batcher:
    """One queue per (function, values of its scalar inputs), created on first use."""

    def __init__(self, options: BatchingOptions, serves: Callable[[Callable], bool] = lambda _: True):
        """`serves(function)` says whether a function's version is still loaded; others' queues are dropped."""
        self.options, self._serves = options, serves
        self._queues: Dict[Tuple[int, Hashable], Tuple[Callable, _Queue]] = {}
        self._batchable: Dict[int, Tuple[Callable, bool]] = {}
        self._lock = threading.Lock()

    def accepts(self, function: Callable) -> bool:
        """batchable(function), worked out once per function rather than on every request."""
        entry = self._batchable.get(id(function))
        if entry is None or entry[0] is not function:
            entry = self._batchable[id(function)] = (function, batchable(function))
        return entry[1]

    def run(self, function: Callable, inputs: Dict[str, np.ndarray], timeout: Optional[float] = None):
        """The function's outputs for these inputs (numpy), computed in a batch with concurrent calls."""
        scalars = tuple(sorted((n, v.tobytes()) for n, v in inputs.items() if v.ndim == 0))
        rows = next(len(v) for v in inputs.values() if v.ndim)
        key = (id(function), scalars)
        with self._lock:
            entry = self._queues.get(key)
            if entry is None or entry[0] is not function:
                # A function seen for the first time is usually a newly loaded version: drop the queues
                # (threads, and the references keeping the old model in memory) of unloaded ones.
                self._forget_locked(self._serves)
                entry = self._queues[key] = (function, _Queue(function, self.options))
        return entry[1].submit(inputs, rows).result(timeout)

    def _forget_locked(self, keep: Callable[[Callable], bool]) -> None:
        for key, (function, queue) in list(self._queues.items()):
            if not keep(function):
                queue.stop()
                del self._queues[key]
        self._batchable = {k: v for k, v in self._batchable.items() if keep(v[0])}

    def stop(self) -> None:
        with self._lock:
            self._forget_locked(lambda _: False)
