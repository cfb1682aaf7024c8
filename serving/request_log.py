"""Sampled Predict requests and their answers, written as TF Serving's request log: PredictionLog TFRecords.

`recsys serve --log-requests DIR --log-sample-rate R` keeps a share R of the Predict requests (each one drawn
independently) with its response, as `tensorflow_serving.apis.PredictionLog` records (`log_metadata` with the
model spec and the sampling rate, `predict_log` with request and response): the format TF Serving's request
logging writes, so tools reading one read the other. The next pipeline run reads them as serving data
(`recsys run --serving-log DIR`: components/serving_skew.py) and applies the schema's skew comparators.

Logging never slows or fails a request: the pair is handed to a queue bounded in records and in bytes (a full
queue drops it and counts the drop) and one thread builds, serializes and writes the records. Files are written
under a temporary name and renamed to
`prediction_log-<start time>-<pid>-<n>.tfrecord` when they reach `max_file_bytes` or `rotate_seconds`, or at
shutdown, so a reader only ever sees whole files.
"""

from __future__ import annotations

import logging
import os
import posixpath
import queue
import random
import threading
import time
from typing import Optional, Tuple

import tensorflow as tf
from prometheus_client import CollectorRegistry, Counter
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from components.atomic_io import temp_path
from components.serving_skew import LOG_FILE_PREFIX, LOG_FILE_SUFFIX

log = logging.getLogger(__name__)

DEFAULT_SAMPLE_RATE = 0.1


class RequestLogError(ValueError):
    """A request log that cannot be written: one line naming the directory or the rate."""


class RequestLog:
    def __init__(self, directory: str, sample_rate: float = DEFAULT_SAMPLE_RATE, max_file_bytes: int = 64 << 20,
                 rotate_seconds: float = 60.0, queue_size: int = 10_000, queue_bytes: int = 64 << 20,
                 registry: Optional[CollectorRegistry] = None, seed: Optional[int] = None):
        if not 0.0 < sample_rate <= 1.0:
            raise RequestLogError(f"--log-sample-rate {sample_rate:g}: must be in (0, 1]")
        try:
            tf.io.gfile.makedirs(directory)
        except tf.errors.OpError as e:
            raise RequestLogError(f"--log-requests {directory}: cannot create it: {e.message}") from None
        self.directory, self.sample_rate = directory, sample_rate
        self.max_file_bytes, self.rotate_seconds = max_file_bytes, rotate_seconds
        self._random = random.Random(seed)
        # Requests waiting for the writer, bounded in count and in bytes (a request may be as large as the server
        # accepts): beyond either, a sampled request is dropped, not kept.
        self._queue: "queue.Queue[Optional[Tuple[object, object, int]]]" = queue.Queue()
        self._queue_size, self._queue_bytes = queue_size, queue_bytes
        self._queued, self._queued_bytes, self._lock = 0, 0, threading.Lock()
        self._files = 0
        self._stamp = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}"
        registry = registry or CollectorRegistry()
        self._written = Counter(":recsys:request_log:records", "Requests written to the request log",
                                registry=registry)
        self._dropped = Counter(":recsys:request_log:dropped", "Sampled requests dropped: the log's queue was "
                                "full", registry=registry)
        self._thread = threading.Thread(target=self._write, name="request-log", daemon=True)
        self._thread.start()

    def log(self, request: predict_pb2.PredictRequest, response: predict_pb2.PredictResponse) -> None:
        """Keeps the pair with probability `sample_rate`; never blocks. The writer thread builds and serializes the
        record: the request's thread only sizes it (the protos are not changed after they are answered)."""
        if self._random.random() >= self.sample_rate:
            return
        size = request.ByteSize() + response.ByteSize()
        with self._lock:
            if self._queued >= self._queue_size or self._queued_bytes + size > self._queue_bytes:
                self._dropped.inc()
                return
            self._queued, self._queued_bytes = self._queued + 1, self._queued_bytes + size
        self._queue.put((request, response, size))

    def _record(self, request, response) -> bytes:
        record = prediction_log_pb2.PredictionLog()
        record.log_metadata.model_spec.CopyFrom(response.model_spec)
        record.log_metadata.sampling_config.sampling_rate = self.sample_rate
        record.predict_log.request.CopyFrom(request)
        record.predict_log.response.CopyFrom(response)
        return record.SerializeToString()

    def _final_name(self) -> str:
        self._files += 1
        return posixpath.join(self.directory, f"{LOG_FILE_PREFIX}{self._stamp}-{self._files:05d}{LOG_FILE_SUFFIX}")

    def _write(self) -> None:
        writer, path, size, opened = None, "", 0, 0.0
        while True:
            try:
                entry = self._queue.get(timeout=min(1.0, self.rotate_seconds))
            except queue.Empty:
                entry = ()
            record = entry
            if entry:
                request, response, entry_size = entry
                with self._lock:
                    self._queued, self._queued_bytes = self._queued - 1, self._queued_bytes - entry_size
                record = self._record(request, response)
            if writer is not None and (record is None or size >= self.max_file_bytes
                                       or time.monotonic() - opened >= self.rotate_seconds):
                writer.close()
                tf.io.gfile.rename(path, self._final_name(), overwrite=True)
                writer = None
            if record is None:
                return
            if not record:
                continue
            if writer is None:
                path, size, opened = temp_path(posixpath.join(self.directory, LOG_FILE_PREFIX + "partial")), 0, \
                    time.monotonic()
                writer = tf.io.TFRecordWriter(path)
            writer.write(record)
            size += len(record)
            self._written.inc()

    def close(self) -> None:
        """Writes what is queued and publishes the last file."""
        self._queue.put(None)
        self._thread.join(timeout=30)
