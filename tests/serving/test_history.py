"""recommend_by_history (issue 17) through the official TF Serving stubs, raw HTTP, the client and the CLI.

The tiny model's signature has the real contract's inputs, outputs and guards with exact values (see
tests/serving/tiny_model.py): score = len(item id) + the history's total weight, each catalogue item of a
history counted once; a known user's stored history is ["ccc"]. The contract tests run against any
server (SERVING_TARGET); the limit, memory and batching tests probe a `recsys serve` process of our own.
"""

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from components import features as F
from pipeline import cli
from serving.client import HistoryRecommendations, Recommendation, RecsysClient
from serving.limits import MAX_HISTORY_ITEMS, MAX_RECOMMEND_USERS
from tests.serving.conftest import EXTERNAL
from tests.serving.test_hardening import serve_process
from tests.serving.tiny_model import save_version

MODEL = f"/v1/models/{F.DEFAULT_MODEL_NAME}"
MAX_REFUSAL_SECONDS, MAX_RSS_GROWTH_MB = 0.1, 50
BATCH_TIMEOUT_MICROS = 300_000  # long enough that concurrent requests wait in their queues together
our_server_only = pytest.mark.skipif(bool(EXTERNAL), reason="probes a `recsys serve` process of its own")


def _history_request(users, history, weights=None, use_stored=True, k=3, exclude=(), allow=()):
    """A recommend_by_history PredictRequest; `weights` None sends an empty [rows, 0] tensor."""
    rows = len(users)
    width = len(history[0]) if history else 0
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = F.DEFAULT_MODEL_NAME, F.RECOMMEND_BY_HISTORY
    inputs = request.inputs
    inputs[F.USER_ID].CopyFrom(tf.make_tensor_proto(list(users), dtype=tf.string))
    inputs[F.HISTORY_ITEMS_INPUT].CopyFrom(tf.make_tensor_proto(
        [i for row in history for i in row], dtype=tf.string, shape=[rows, width]))
    weights = np.zeros([rows, 0], np.float32) if weights is None else np.asarray(weights, np.float32)
    inputs[F.HISTORY_WEIGHTS_INPUT].CopyFrom(tf.make_tensor_proto(weights, dtype=tf.float32))
    inputs[F.USE_STORED_HISTORY_INPUT].CopyFrom(tf.make_tensor_proto(use_stored))
    inputs[F.K_INPUT].CopyFrom(tf.make_tensor_proto(k, dtype=tf.int32))
    inputs[F.EXCLUDE_ITEMS_INPUT].CopyFrom(tf.make_tensor_proto(list(exclude), dtype=tf.string))
    inputs[F.ALLOW_ITEMS_INPUT].CopyFrom(tf.make_tensor_proto(list(allow), dtype=tf.string))
    return request


def _answer(response):
    """Outputs as plain lists (strings decoded, -inf scores of empty slots kept)."""
    out = {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}
    return {name: [[v.decode() for v in row] for row in value] if value.dtype == object else value.tolist()
            for name, value in out.items()}


def _refused(call, request, code, *fragments, timeout=10):
    with pytest.raises(grpc.RpcError) as raised:
        call(request, timeout=timeout)
    assert raised.value.code() == code, raised.value.details()
    for fragment in fragments:
        assert fragment in raised.value.details(), raised.value.details()
    return raised.value.details()


def _history_limit_message(name, items):
    return (f"input {name}: {items} items per row exceed the history limit of {MAX_HISTORY_ITEMS} "
            f"(send the newest {MAX_HISTORY_ITEMS})")


def _post(rest, path, body):
    request = urllib.request.Request(rest + path, json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


# --- the contract over gRPC, on any server ------------------------------------------------------------

@pytest.fixture(scope="module")
def stub(target):
    channel = grpc.insecure_channel(target.grpc)
    yield prediction_service_pb2_grpc.PredictionServiceStub(channel)
    channel.close()


def test_a_session_is_scored_from_its_history_which_is_left_out_unknown_ids_counted_once(stub):
    # "zz" twice and "qq": two distinct unknown ids; "a" twice counts once; "" pads.
    out = _answer(stub.Predict(_history_request([""], [["a", "zz", "zz", "a", "qq", ""]]), timeout=10))
    assert out[F.ITEMS_OUTPUT] == [["ccc", "bb", ""]] and out[F.TITLES_OUTPUT] == [["CCC", "BB", ""]]
    assert out[F.SCORES_OUTPUT] == [[4.0, 3.0, float("-inf")]]  # len + 1 known item; no candidate left for slot 3
    assert (out[F.UNKNOWN_ITEMS_OUTPUT], out[F.HISTORY_LENGTH_OUTPUT], out[F.FALLBACK_OUTPUT]) == ([2], [1], [False])


def test_a_known_users_stored_history_is_used_and_excluded_only_when_asked(stub):
    with_stored = _answer(stub.Predict(_history_request(["u"], [["a"]], use_stored=True), timeout=10))
    assert with_stored[F.ITEMS_OUTPUT] == [["bb", "", ""]] and with_stored[F.SCORES_OUTPUT][0][0] == 4.0
    assert with_stored[F.HISTORY_LENGTH_OUTPUT] == [2]  # "a" and the stored "ccc"
    given_only = _answer(stub.Predict(_history_request(["u"], [["a"]], use_stored=False), timeout=10))
    assert given_only[F.ITEMS_OUTPUT] == [["ccc", "bb", ""]] and given_only[F.HISTORY_LENGTH_OUTPUT] == [1]


def test_rows_weights_and_an_empty_history_fall_back_to_popularity(stub):
    # Two rows; an empty weights tensor of shape [0, 0] means every weight is 1.
    request = _history_request(["", "u"], [["bb", ""], ["", ""]], weights=np.zeros([0, 0]), use_stored=False)
    out = _answer(stub.Predict(request, timeout=10))
    assert out[F.ITEMS_OUTPUT] == [["ccc", "a", ""], ["ccc", "bb", "a"]]
    assert out[F.SCORES_OUTPUT][1] == [3.0, 2.0, 1.0]  # no known item: most popular (here: longest ids first)
    assert (out[F.HISTORY_LENGTH_OUTPUT], out[F.FALLBACK_OUTPUT]) == ([1, 0], [False, True])
    weighted = _answer(stub.Predict(_history_request([""], [["a", "bb"]], weights=[[2.0, 0.5]]), timeout=10))
    assert weighted[F.ITEMS_OUTPUT][0][0] == "ccc" and weighted[F.SCORES_OUTPUT][0][0] == 5.5
    empty = _answer(stub.Predict(_history_request([""], []), timeout=10))  # history of shape [1, 0]
    assert empty[F.ITEMS_OUTPUT] == [["ccc", "bb", "a"]] and empty[F.FALLBACK_OUTPUT] == [True]


def test_exclude_and_allow_lists_apply_to_every_row(stub):
    excluded = _answer(stub.Predict(_history_request(["", ""], [["a"], ["ccc"]], exclude=["bb"]), timeout=10))
    assert excluded[F.ITEMS_OUTPUT] == [["ccc", "", ""], ["a", "", ""]]
    allowed = _answer(stub.Predict(_history_request([""], [["a"]], allow=["bb", "a"]), timeout=10))
    assert allowed[F.ITEMS_OUTPUT][0][0] == "bb" and "ccc" not in allowed[F.ITEMS_OUTPUT][0]


def test_weights_of_another_shape_are_invalid_naming_the_input(stub):
    _refused(stub.Predict, _history_request([""], [["a", "bb"]], weights=[[1.0]]), grpc.StatusCode.INVALID_ARGUMENT,
             F.HISTORY_WEIGHTS_INPUT)


# --- the client and the CLI ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def client(target):
    with RecsysClient(target.grpc, timeout=30) as c:
        yield c


def test_client_recommend_by_history_returns_the_counts(client):
    assert client.recommend_by_history(["a", "zz", "zz"], k=3) == HistoryRecommendations(
        [Recommendation("ccc", "CCC", 4.0), Recommendation("bb", "BB", 3.0)], unknown_items=1, history_length=1,
        popularity_fallback=False)
    assert client.recommend_by_history([], k=2) == HistoryRecommendations(
        [Recommendation("ccc", "CCC", 3.0), Recommendation("bb", "BB", 2.0)], 0, 0, True)
    weighted = client.recommend_by_history(["a", "bb"], weights=[2.0, 0.5], k=1)
    assert weighted.items == [Recommendation("ccc", "CCC", 5.5)]
    assert client.recommend_by_history(["a"], user_id="u", use_stored_history=False, exclude=["bb"]).items == [
        Recommendation("ccc", "CCC", 4.0)]
    with pytest.raises(ValueError, match="1 weights for 2 history items"):
        client.recommend_by_history(["a", "bb"], weights=[1.0])


def test_client_recommend_with_recent_items_adds_them_to_the_stored_history(client):
    assert [r.item_id for r in client.recommend("u", k=2)] == ["bb", "a"]  # plain recommend: ccc is the user's
    assert client.recommend("u", k=3, recent_item_ids=["a"]) == [Recommendation("bb", "BB", 4.0)]
    assert client.recommend("u", k=3, recent_item_ids=[]) == [Recommendation("bb", "BB", 3.0),
                                                               Recommendation("a", "A", 2.0)]
    with pytest.raises(ValueError, match="exclude_rated=False"):
        client.recommend("u", exclude_rated=False, recent_item_ids=["a"])


def test_a_history_over_the_limit_is_cut_to_its_newest_items_by_the_client(client):
    # The oldest item ("a", weight 9) is the one cut: were it sent, "a" would be excluded and ccc score 12.
    history = ["a"] + ["bb"] * MAX_HISTORY_ITEMS
    answer = client.recommend_by_history(history, weights=[9.0] + [1.0] * MAX_HISTORY_ITEMS, k=3)
    assert answer == HistoryRecommendations([Recommendation("ccc", "CCC", 4.0), Recommendation("a", "A", 2.0)],
                                            0, 1, False)
    unknown = client.recommend_by_history(["a"] + [f"x{i}" for i in range(MAX_HISTORY_ITEMS)], k=3)
    assert (unknown.unknown_items, unknown.history_length, unknown.popularity_fallback) == (
        MAX_HISTORY_ITEMS, 0, True)


def test_cli_recommend_from_a_history(target, capsys):
    where = ["--target", target.grpc, "--timeout", "30"]
    assert cli.main(["recommend", "--history", "a,zz,zz,yy", "--k", "3", *where]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "top 2 items for an anonymous session, scored from 1 known item:",
        "  1. ccc         4.000  CCC",
        "  2. bb          3.000  BB",
        "2 unknown item ids ignored"]
    assert cli.main(["recommend", "--user", "u", "--history", "a", *where]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "top 1 items for user u, scored from 2 known items:", "  1. bb          4.000  BB"]
    assert cli.main(["recommend", "--history", "zz", "--allow", "a,bb", "--exclude", "a", *where]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "top 1 items for an anonymous session, scored from 0 known items:", "  1. bb          2.000  BB",
        "1 unknown item id ignored", "no known history item: these are the most popular items"]
    assert cli.main(["recommend", "--user", "u", "--k", "1", *where]) == 0  # the existing flags still work
    assert capsys.readouterr().out.splitlines() == ["top 1 items for user u:", "  1. bb          3.000  BB"]
    assert cli.main(["recommend", *where]) == cli.EXIT_ERROR
    assert "recommend needs --user (or --history" in capsys.readouterr().err
    assert cli.main(["recommend", "--history", "a", "--include-rated", *where]) == cli.EXIT_ERROR
    assert "--history cannot be combined" in capsys.readouterr().err


# --- REST ------------------------------------------------------------------------------------------------

def test_rest_columnar_format_with_2d_strings_and_empty_weights(target):
    if target.rest is None:
        pytest.skip("no REST port")
    body = {"signature_name": F.RECOMMEND_BY_HISTORY, "inputs": {
        F.USER_ID: ["", "u"], F.HISTORY_ITEMS_INPUT: [["a", "zz"], ["bb", ""]], F.HISTORY_WEIGHTS_INPUT: [[], []],
        F.USE_STORED_HISTORY_INPUT: True, F.K_INPUT: 1, F.EXCLUDE_ITEMS_INPUT: [], F.ALLOW_ITEMS_INPUT: []}}
    assert _post(target.rest, f"{MODEL}:predict", body) == (200, {"outputs": {
        F.ITEMS_OUTPUT: [["ccc"], ["a"]], F.TITLES_OUTPUT: [["CCC"], ["A"]], F.SCORES_OUTPUT: [[4.0], [3.0]],
        F.UNKNOWN_ITEMS_OUTPUT: [1, 0], F.HISTORY_LENGTH_OUTPUT: [1, 2], F.FALLBACK_OUTPUT: [False, False]}})
    body["inputs"][F.HISTORY_WEIGHTS_INPUT] = [[3.0, 1.0], [1.0, 0.0]]  # one weight per history id
    status, answer = _post(target.rest, f"{MODEL}:predict", body)
    assert status == 200 and answer["outputs"][F.SCORES_OUTPUT] == [[6.0], [3.0]]


def test_rest_row_format_and_ragged_rows_are_refused_with_the_way_out(target):
    if target.rest is None:
        pytest.skip("no REST port")
    # TF Serving's row format gives every input a leading dimension of one value per instance: the signature's
    # scalars (k, use_stored_history) cannot take it, on TF Serving as here. Columnar it is.
    instance = {F.USER_ID: "", F.HISTORY_ITEMS_INPUT: ["a"], F.HISTORY_WEIGHTS_INPUT: [],
                F.USE_STORED_HISTORY_INPUT: True, F.K_INPUT: 1, F.EXCLUDE_ITEMS_INPUT: [], F.ALLOW_ITEMS_INPUT: []}
    status, answer = _post(target.rest, f"{MODEL}:predict",
                           {"signature_name": F.RECOMMEND_BY_HISTORY, "instances": [instance, instance]})
    assert status == 400 and F.K_INPUT in answer["error"], answer
    ragged = {"signature_name": F.RECOMMEND_BY_HISTORY, "inputs": {
        F.USER_ID: ["", ""], F.HISTORY_ITEMS_INPUT: [["a", "bb"], ["a"]], F.HISTORY_WEIGHTS_INPUT: [[], []],
        F.USE_STORED_HISTORY_INPUT: True, F.K_INPUT: 1, F.EXCLUDE_ITEMS_INPUT: [], F.ALLOW_ITEMS_INPUT: []}}
    status, answer = _post(target.rest, f"{MODEL}:predict", ragged)
    assert status == 400, answer
    if target.embedded is not None:  # our messages; TF Serving words them its own way
        assert "send the columnar format" in _post(target.rest, f"{MODEL}:predict", {
            "signature_name": F.RECOMMEND_BY_HISTORY, "instances": [instance]})[1]["error"]
        assert answer["error"].startswith(f"input {F.HISTORY_ITEMS_INPUT}: lists of different lengths")
        assert 'pad shorter rows, e.g. a history with ""' in answer["error"]


def test_rest_history_over_the_limit_is_400_naming_input_and_limit(target):
    if target.rest is None:
        pytest.skip("no REST port")
    items = MAX_HISTORY_ITEMS + 1
    body = {"signature_name": F.RECOMMEND_BY_HISTORY, "inputs": {
        F.USER_ID: [""], F.HISTORY_ITEMS_INPUT: [["a"] * items], F.HISTORY_WEIGHTS_INPUT: [[]],
        F.USE_STORED_HISTORY_INPUT: True, F.K_INPUT: 1, F.EXCLUDE_ITEMS_INPUT: [], F.ALLOW_ITEMS_INPUT: []}}
    status, answer = _post(target.rest, f"{MODEL}:predict", body)
    # The server's check; on TF Serving the SavedModel's guard_columns words it "more items per row than ...".
    assert status == 400 and f"input {F.HISTORY_ITEMS_INPUT}" in answer["error"], answer
    assert f"the history limit of {MAX_HISTORY_ITEMS}" in answer["error"], answer
    if target.embedded is not None:
        assert answer["error"] == _history_limit_message(F.HISTORY_ITEMS_INPUT, items)


def test_the_saved_model_itself_guards_the_history_length(tmp_path):
    """What protects the real TF Serving: guard_columns in the exported signature."""
    signature = tf.saved_model.load(save_version(str(tmp_path / "m"), 1, 0.0)).signatures[F.RECOMMEND_BY_HISTORY]

    def call(width):
        return signature(**{F.USER_ID: tf.constant([""]), F.HISTORY_ITEMS_INPUT: tf.fill([1, width], "a"),
                            F.HISTORY_WEIGHTS_INPUT: tf.zeros([1, 0]), F.USE_STORED_HISTORY_INPUT: tf.constant(True),
                            F.K_INPUT: tf.constant(1), F.EXCLUDE_ITEMS_INPUT: tf.constant([], tf.string),
                            F.ALLOW_ITEMS_INPUT: tf.constant([], tf.string)})

    assert call(MAX_HISTORY_ITEMS)[F.HISTORY_LENGTH_OUTPUT].numpy().tolist() == [1]
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=f"input {F.HISTORY_ITEMS_INPUT}: more items per row than the history limit"):
        call(MAX_HISTORY_ITEMS + 1)


# --- limits, memory and batching on a `recsys serve` process -------------------------------------------

@pytest.fixture(scope="module")
def served(tmp_path_factory):
    if EXTERNAL:
        pytest.skip("probes a `recsys serve` process of its own")
    with serve_process(tmp_path_factory,
                       f"max_batch_size {{ value: 16 }}\nbatch_timeout_micros {{ value: {BATCH_TIMEOUT_MICROS} }}\n",
                       "--enable-batching", "--poll-interval", "60") as where:
        yield where


@our_server_only
def test_a_100k_item_history_is_refused_within_100_ms_and_the_server_barely_grows(served):
    items = 100_000
    request = _history_request([""], [[f"i{i:06d}" for i in range(items)]])
    assert request.ByteSize() > items * 8  # ~1 MB of real ids, not a declared-only shape
    served.predictions.Predict(_history_request([""], [["a"]]), timeout=10)  # the channel is connected and warm
    served.reset_peak()
    before = served.rss_mb()
    seconds = []
    for _ in range(5):
        started = time.perf_counter()
        _refused(served.predictions.Predict, request, grpc.StatusCode.INVALID_ARGUMENT)
        seconds.append(time.perf_counter() - started)
    growth = served.peak_mb() - before
    details = _refused(served.predictions.Predict, request, grpc.StatusCode.INVALID_ARGUMENT)
    print(f"\n100K-id history refused: {min(seconds) * 1000:.1f}-{max(seconds) * 1000:.1f} ms over 5 calls, "
          f"server peak RSS {growth:+.1f} MB ({'VmHWM' if served.peak_resettable else 'VmRSS'})")
    assert details == _history_limit_message(F.HISTORY_ITEMS_INPUT, items)
    assert max(seconds) < MAX_REFUSAL_SECONDS, seconds
    assert growth < MAX_RSS_GROWTH_MB, growth
    assert served.process.poll() is None


def _declared(dtype, dims, **values):
    return tensor_pb2.TensorProto(dtype=dtype, tensor_shape=tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims]), **values)


@our_server_only
def test_the_history_limit_is_checked_on_the_declared_shape_for_ids_and_weights(served):
    request = _history_request([""], [["a"]])
    request.inputs[F.HISTORY_ITEMS_INPUT].CopyFrom(_declared(types_pb2.DT_STRING, [1, 2_000_000_000],
                                                             string_val=[b"a"]))
    assert request.ByteSize() < 300
    started = time.perf_counter()
    _refused(served.predictions.Predict, request, grpc.StatusCode.INVALID_ARGUMENT,
             _history_limit_message(F.HISTORY_ITEMS_INPUT, 2_000_000_000))
    assert time.perf_counter() - started < MAX_REFUSAL_SECONDS
    weights = _history_request([""], [["a"]], weights=np.ones([1, MAX_HISTORY_ITEMS + 1]))
    weights.inputs[F.HISTORY_ITEMS_INPUT].CopyFrom(tf.make_tensor_proto([["a"] * (MAX_HISTORY_ITEMS + 1)]))
    _refused(served.predictions.Predict, weights, grpc.StatusCode.INVALID_ARGUMENT,
             f"input {F.HISTORY_ITEMS_INPUT}: {MAX_HISTORY_ITEMS + 1} items per row exceed")
    only_weights = _history_request([""], [["a"]], weights=np.ones([1, MAX_HISTORY_ITEMS + 1]))
    _refused(served.predictions.Predict, only_weights, grpc.StatusCode.INVALID_ARGUMENT,
             _history_limit_message(F.HISTORY_WEIGHTS_INPUT, MAX_HISTORY_ITEMS + 1))
    at_limit = served.predictions.Predict(_history_request([""], [["a"] * MAX_HISTORY_ITEMS]), timeout=30)
    assert _answer(at_limit)[F.HISTORY_LENGTH_OUTPUT] == [1]


@our_server_only
def test_rows_are_bounded_like_recommend(served):
    users = [""] * (MAX_RECOMMEND_USERS + 1)
    _refused(served.predictions.Predict, _history_request(users, [["a"]] * len(users)),
             grpc.StatusCode.INVALID_ARGUMENT,
             f"{MAX_RECOMMEND_USERS + 1} rows exceed the limit of {MAX_RECOMMEND_USERS} rows per request "
             f"for signature \"{F.RECOMMEND_BY_HISTORY}\"")


@our_server_only
def test_rest_refuses_a_100k_history_with_the_grpc_message(served):
    body = {"signature_name": F.RECOMMEND_BY_HISTORY, "inputs": {
        F.USER_ID: [""], F.HISTORY_ITEMS_INPUT: [[f"i{i:06d}" for i in range(100_000)]],
        F.HISTORY_WEIGHTS_INPUT: [[]], F.USE_STORED_HISTORY_INPUT: True, F.K_INPUT: 1, F.EXCLUDE_ITEMS_INPUT: [],
        F.ALLOW_ITEMS_INPUT: []}}
    served.reset_peak()
    before, started = served.rss_mb(), time.perf_counter()
    status, answer = _post(f"http://127.0.0.1:{served.rest_port}", f"{MODEL}:predict", body)
    seconds, growth = time.perf_counter() - started, served.peak_mb() - before
    print(f"\nREST 100K-id history refused: {seconds * 1000:.0f} ms, server peak RSS {growth:+.1f} MB")
    assert (status, answer) == (400, {"error": _history_limit_message(F.HISTORY_ITEMS_INPUT, 100_000)})
    assert growth < MAX_RSS_GROWTH_MB


@our_server_only
def test_concurrent_histories_of_different_lengths_are_each_answered_with_batching_on(served):
    """Rows of different lengths cannot be concatenated: they go to separate batches (same length: shared)."""
    cases = [  # (request, expected item_ids, expected history_length)
        (_history_request([""], [["a"]]), [["ccc", "bb", ""]], [1]),
        (_history_request(["u"], [["bb", "zz", "a"]], use_stored=False), [["ccc", "", ""]], [2]),
        (_history_request([""], [["bb"]]), [["ccc", "a", ""]], [1]),  # same length as the first: may share its batch
        (_history_request(["", ""], [["a", ""], ["", ""]], weights=np.zeros([0, 0])),  # [0, 0] weights: runs alone
         [["ccc", "bb", ""], ["ccc", "bb", "a"]], [1, 0]),
        (_history_request(["u", ""], [["a", "a"], ["bb", "a"]], weights=[[1.0, 2.0], [1.0, 1.0]]),
         [["bb", "", ""], ["ccc", "", ""]], [2, 2]),
    ]
    for _ in range(3):
        started = time.monotonic()
        with ThreadPoolExecutor(len(cases)) as pool:
            futures = [pool.submit(served.predictions.Predict, request, timeout=30) for request, _, _ in cases]
            answers = [_answer(f.result()) for f in futures]
        for (_, items, length), answer in zip(cases, answers):
            assert (answer[F.ITEMS_OUTPUT], answer[F.HISTORY_LENGTH_OUTPUT]) == (items, length)
        assert answers[4][F.SCORES_OUTPUT][0][0] == 2.0 + 3.0  # "a" weighs its larger weight, 2, plus stored ccc
        # Each waited for its batch's timeout (they were queued together), and no more than a few of them.
        assert BATCH_TIMEOUT_MICROS / 1e6 <= time.monotonic() - started < 5 * BATCH_TIMEOUT_MICROS / 1e6 + 2
