"""Server-side batching: concurrent requests share one call, each gets its own rows back, the queue is bounded."""

import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from components import features as F
from serving.batching import Batcher, QueueFull, TooLarge, batchable
from serving.options import BatchingOptions
from tests.serving.conftest import EXTERNAL, start_embedded
from tests.serving.tiny_model import TinyRecommender, save_version

pytestmark = pytest.mark.skipif(bool(EXTERNAL), reason="batching is configured on a server of our own")


class Recorder:
    """A signature-like function that doubles its input and records the batch sizes it was called with."""

    def __init__(self, gate: threading.Event = None):
        self.sizes, self.gate = [], gate

    def __call__(self, x, k=None):
        if self.gate is not None:
            self.gate.wait(10)
        self.sizes.append(int(x.shape[0]))
        return {"y": x * 2 + (0 if k is None else k)}


def _concurrently(n, call):
    results, threads = [None] * n, []
    for i in range(n):
        threads.append(threading.Thread(target=lambda i=i: results.__setitem__(i, call(i))))
        threads[-1].start()
    for thread in threads:
        thread.join(20)
    return results


def test_concurrent_requests_run_as_few_batches_and_get_their_own_rows():
    batcher, recorder = Batcher(BatchingOptions(max_batch_size=8, batch_timeout_micros=200_000,
                                                num_batch_threads=1)), Recorder()
    try:
        results = _concurrently(8, lambda i: batcher.run(recorder, {"x": np.array([i, 10 * i], np.float32)}))
    finally:
        batcher.stop()
    assert [r["y"].tolist() for r in results] == [[2.0 * i, 20.0 * i] for i in range(8)]
    assert sum(recorder.sizes) == 16 and len(recorder.sizes) < 8 and max(recorder.sizes) <= 8


def test_requests_with_different_scalar_inputs_never_share_a_batch():
    batcher, recorder = Batcher(BatchingOptions(max_batch_size=8, batch_timeout_micros=100_000)), Recorder()
    try:
        results = _concurrently(6, lambda i: batcher.run(recorder, {"x": np.array([1.0], np.float32),
                                                                    "k": np.array(i % 2, np.float32)}))
    finally:
        batcher.stop()
    assert [r["y"].tolist() for r in results] == [[2.0 + i % 2] for i in range(6)]


def test_a_full_queue_refuses_and_an_oversized_request_is_invalid():
    gate = threading.Event()
    batcher = Batcher(BatchingOptions(max_batch_size=2, batch_timeout_micros=0, max_enqueued_batches=1,
                                      num_batch_threads=1))
    recorder = Recorder(gate)
    try:
        first = threading.Thread(target=batcher.run, args=(recorder, {"x": np.ones(2, np.float32)}))
        first.start()  # taken by the worker, which blocks on the gate
        time.sleep(0.3)
        queued = threading.Thread(target=batcher.run, args=(recorder, {"x": np.ones(2, np.float32)}))
        queued.start()  # fills the one-batch queue
        time.sleep(0.3)
        with pytest.raises(QueueFull, match="queue .* is full"):
            batcher.run(recorder, {"x": np.ones(1, np.float32)})
        with pytest.raises(TooLarge, match="Task size 3 is larger than maximum input batch size 2"):
            batcher.run(recorder, {"x": np.ones(3, np.float32)})
        gate.set()
        first.join(10)
        queued.join(10)
        assert recorder.sizes == [2, 2]
    finally:
        gate.set()
        batcher.stop()


def test_only_signatures_with_a_batch_dimension_batch(tmp_path):
    module = TinyRecommender(0.0)
    assert batchable(module.predict.get_concrete_function())
    assert batchable(module.recommend.get_concrete_function())  # scalar k, batched user_id and outputs

    @tf.function(input_signature=[tf.TensorSpec([], tf.float32)])
    def scalar(x):
        return {"y": x}

    assert not batchable(scalar.get_concrete_function())


def _predict_request(user):
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = F.DEFAULT_MODEL_NAME, F.PREDICT
    request.inputs[F.USER_ID].CopyFrom(tf.make_tensor_proto([user]))
    request.inputs[F.ITEM_ID].CopyFrom(tf.make_tensor_proto(["i"]))
    return request


def test_batching_server_answers_each_client_and_refuses_with_unavailable_when_full(tmp_path):
    base = str(tmp_path / F.DEFAULT_MODEL_NAME)
    save_version(base, 1, 0.0)
    options = BatchingOptions(max_batch_size=4, batch_timeout_micros=1_500_000, max_enqueued_batches=1,
                              num_batch_threads=1)
    server, where = start_embedded(base, batching=options)
    channel = grpc.insecure_channel(where.grpc)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    try:
        # Four one-row requests fill a batch: it runs at once, and each gets its own rating back.
        users = ["u", "uu", "uuu", "uuuu"]
        started = time.monotonic()
        ratings = _concurrently(4, lambda i: tf.make_ndarray(
            stub.Predict(_predict_request(users[i]), timeout=10).outputs[F.RATING_OUTPUT]).tolist())
        assert ratings == [[2.0], [3.0], [4.0], [5.0]] and time.monotonic() - started < 1.0
        # A three-row request waits for the batch timeout; two more rows do not fit the queue.
        three = predict_pb2.PredictRequest()
        three.CopyFrom(_predict_request("u"))
        three.inputs[F.USER_ID].CopyFrom(tf.make_tensor_proto(["a", "b", "c"]))
        three.inputs[F.ITEM_ID].CopyFrom(tf.make_tensor_proto(["i", "i", "i"]))
        waiting = stub.Predict.future(three, timeout=10)
        time.sleep(0.3)
        two = predict_pb2.PredictRequest()
        two.CopyFrom(three)
        two.inputs[F.USER_ID].CopyFrom(tf.make_tensor_proto(["a", "b"]))
        two.inputs[F.ITEM_ID].CopyFrom(tf.make_tensor_proto(["i", "i"]))
        with pytest.raises(grpc.RpcError) as raised:
            stub.Predict(two, timeout=10)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE and "full" in raised.value.details()
        assert tf.make_ndarray(waiting.result().outputs[F.RATING_OUTPUT]).tolist() == [2.0, 2.0, 2.0]
        # A client deadline shorter than the batch timeout is honoured, and the server goes on.
        with pytest.raises(grpc.RpcError) as raised:
            stub.Predict(_predict_request("u"), timeout=0.2)
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        time.sleep(1.6)
        assert tf.make_ndarray(stub.Predict(_predict_request("u"), timeout=10).outputs[F.RATING_OUTPUT]).size == 1
    finally:
        channel.close()
        server.stop(0)


def test_queues_of_an_unloaded_version_are_dropped_when_the_new_one_is_first_used():
    """Otherwise every swap would leave the old model in memory, held by its batch queue."""
    old, new = Recorder(), Recorder()
    loaded = {"current": old}
    batcher = Batcher(BatchingOptions(batch_timeout_micros=0), serves=lambda f: f is loaded["current"])
    try:
        batcher.run(old, {"x": np.ones(1, np.float32)})
        loaded["current"] = new  # the poller swapped versions
        batcher.run(new, {"x": np.ones(1, np.float32)})
        assert [queue.function for queue in batcher._queues.values()] == [new]
        assert old.sizes == [1] and new.sizes == [1]
    finally:
        batcher.stop()


def test_string_scalars_are_compared_by_value_so_equal_ones_share_a_batch():
    calls = []

    def tag(x, label):
        calls.append(int(x.shape[0]))
        return {"y": x * 2}

    batcher = Batcher(BatchingOptions(max_batch_size=8, batch_timeout_micros=300_000, num_batch_threads=1))
    try:  # two distinct objects holding the same bytes (an object array's buffer holds only pointers)
        _concurrently(2, lambda i: batcher.run(tag, {"x": np.ones(1, np.float32),
                                                     "label": np.array(bytes(b"ab"[:1] + b"b"), dtype=object)}))
    finally:
        batcher.stop()
    assert calls == [2]


def test_a_request_whose_deadline_passed_in_the_queue_is_dropped_not_run():
    from serving.batching import DEADLINE, Expired

    gate = threading.Event()
    recorder = Recorder(gate)
    batcher = Batcher(BatchingOptions(max_batch_size=1, batch_timeout_micros=0, num_batch_threads=1))
    try:
        blocker = threading.Thread(target=batcher.run, args=(recorder, {"x": np.ones(1, np.float32)}))
        blocker.start()  # the only worker is busy with this one until the gate opens
        time.sleep(0.2)
        errors = []

        def expiring_one_row():
            DEADLINE.set(time.monotonic() + 0.1)
            try:
                batcher.run(recorder, {"x": np.full(1, 7, np.float32)})
            except Expired as e:
                errors.append(e)

        waiter = threading.Thread(target=expiring_one_row)
        waiter.start()
        time.sleep(0.4)
        gate.set()
        blocker.join(10)
        waiter.join(10)
        assert len(errors) == 1 and "deadline" in str(errors[0])
        assert recorder.sizes == [1]  # only the blocker ran
    finally:
        gate.set()
        batcher.stop()


def test_queues_are_capped_idle_ones_reclaimed_and_threads_shared():
    recorder = Recorder()
    batcher = Batcher(BatchingOptions(batch_timeout_micros=0, num_batch_threads=2, max_queues=4,
                                      idle_queue_seconds=0.05))
    before = threading.active_count()
    try:
        for k in range(40):  # 40 distinct scalar values: never more than 4 queues, no thread per queue
            out = batcher.run(recorder, {"x": np.ones(1, np.float32), "k": np.array(k, np.float32)})
            assert out["y"].tolist() == [2.0 + k]
            assert batcher.queue_count() <= 4 and threading.active_count() <= before
        time.sleep(0.1)
        batcher.run(recorder, {"x": np.ones(1, np.float32), "k": np.array(99, np.float32)})
        assert batcher.queue_count() == 1  # the idle ones were reclaimed when this one was created
    finally:
        batcher.stop()


def test_past_the_queue_cap_with_every_queue_busy_a_request_runs_unbatched():
    gate = threading.Event()
    recorder = Recorder(gate)
    batcher = Batcher(BatchingOptions(max_batch_size=1, batch_timeout_micros=0, num_batch_threads=1,
                                      max_queues=1))
    try:
        for _ in range(2):  # one running (blocked on the gate), one waiting: the only queue is busy
            threading.Thread(target=batcher.run, args=(recorder, {"x": np.ones(1, np.float32)})).start()
        time.sleep(0.3)
        direct = Recorder()
        out = batcher.run(direct, {"x": np.ones(1, np.float32), "k": np.array(5, np.float32)})
        assert out["y"].tolist() == [7.0] and direct.sizes == [1] and batcher.queue_count() == 1
    finally:
        gate.set()
        batcher.stop()


def test_request_wide_lists_are_passed_once_and_only_equal_lists_share_a_batch():
    """recommend_filtered's exclude/allow lists apply to every user of their request: never concatenated."""
    calls = []

    def filtered(user_id, exclude_item_ids):
        calls.append((len(user_id), tuple(exclude_item_ids.numpy().tolist())))
        return {"n": np.full(len(user_id), len(exclude_item_ids), np.int64)}

    batcher = Batcher(BatchingOptions(max_batch_size=16, batch_timeout_micros=150_000, num_batch_threads=1))
    lists = [np.array([b"a"], object), np.array([b"a", b"b", b"c"], object)]
    try:
        results = _concurrently(6, lambda i: batcher.run(filtered, {
            F.USER_ID: np.array([b"u%d" % i, b"v%d" % i], object), F.EXCLUDE_ITEMS_INPUT: lists[i % 2]}))
    finally:
        batcher.stop()
    assert [r["n"].tolist() for r in results] == [[1, 1] if i % 2 == 0 else [3, 3] for i in range(6)]
    assert all(excluded in {(b"a",), (b"a", b"b", b"c")} for _, excluded in calls)  # one request's list each
    assert sum(rows for rows, _ in calls) == 12 and len(calls) < 6  # equal lists did share batches


def test_2d_inputs_batch_only_with_the_same_trailing_shape():
    """recommend_by_history's [rows, L] histories: rows of different L cannot be concatenated into one tensor."""
    calls = []

    def history(user_id, history_item_ids):
        calls.append(tuple(history_item_ids.shape))
        return {"n": np.full(len(user_id), history_item_ids.shape[1], np.int64)}

    batcher = Batcher(BatchingOptions(max_batch_size=16, batch_timeout_micros=150_000, num_batch_threads=1))
    widths = [1, 3, 1, 3, 0, 0]
    try:
        results = _concurrently(6, lambda i: batcher.run(history, {
            F.USER_ID: np.array([b"u%d" % i], object),
            F.HISTORY_ITEMS_INPUT: np.full([1, widths[i]], b"a", object)}))
    finally:
        batcher.stop()
    assert [r["n"].tolist() for r in results] == [[w] for w in widths]
    assert sorted(calls) == [(2, 0), (2, 1), (2, 3)]  # equal widths shared a batch, different ones never did


def test_a_request_whose_inputs_disagree_on_rows_runs_alone():
    """An empty [0, 0] history_weights (or a malformed request) cannot be concatenated and split back by rows."""
    calls = []

    def history(user_id, history_weights):
        calls.append((len(user_id), tuple(history_weights.shape)))
        if history_weights.shape[0] not in (0, len(user_id)):
            raise ValueError("rows differ")
        return {"n": np.full(len(user_id), history_weights.shape[0], np.int64)}

    batcher = Batcher(BatchingOptions(max_batch_size=16, batch_timeout_micros=150_000, num_batch_threads=1))
    weights = [np.zeros([0, 0], np.float32), np.zeros([2, 0], np.float32), np.zeros([2, 0], np.float32)]
    try:
        results = _concurrently(3, lambda i: batcher.run(history, {
            F.USER_ID: np.array([b"u", b"v"], object), F.HISTORY_WEIGHTS_INPUT: weights[i]}))
        with pytest.raises(ValueError, match="rows differ"):  # malformed: fails alone, poisons no shared batch
            batcher.run(history, {F.USER_ID: np.array([b"u"], object), F.HISTORY_WEIGHTS_INPUT: weights[1]})
    finally:
        batcher.stop()
    assert [r["n"].tolist() for r in results] == [[0, 0], [4, 4], [4, 4]]  # the two [2, 0] ones shared a batch
    assert sorted(calls) == [(1, (2, 0)), (2, (0, 0)), (4, (4, 0))]
