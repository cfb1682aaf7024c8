"""The real pipeline (LocalDagRunner, every TFX component) on tiny generated data."""

import collections
import csv
import dataclasses
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from components import features as F
from pipeline import local_runner, run_summary

pytestmark = pytest.mark.slow


def _versions(serving_dir):
    return sorted(v for v in tf.io.gfile.listdir(serving_dir) if v.strip("/").isdigit()) if os.path.isdir(serving_dir) else []


def _ratings(data_root):
    with open(os.path.join(data_root, F.INTERACTIONS_FILE), newline="") as f:
        return np.array([float(r[F.RATING]) for r in csv.DictReader(f)])


def test_pipeline_blesses_and_pushes_a_model_that_beats_the_global_mean(pipeline_run):
    versions = _versions(pipeline_run.serving_dir)
    assert len(versions) == 1
    assert tf.io.gfile.exists(os.path.join(pipeline_run.serving_dir, versions[0], "saved_model.pb"))
    summary = run_summary.latest(pipeline_run)
    assert summary.blessed and summary.pushed_to.rstrip("/").endswith(versions[0].strip("/"))
    baseline_rmse = float(_ratings(pipeline_run.data_root).std())
    rmse = summary.metrics[run_summary.RMSE]
    assert rmse < 0.9 * baseline_rmse, (rmse, baseline_rmse)
    assert summary.metrics["example_count"] > 300


def test_pushed_model_takes_raw_ids_and_ranks_the_catalogue(pipeline_run):
    version = _versions(pipeline_run.serving_dir)[0]
    model = tf.saved_model.load(os.path.join(pipeline_run.serving_dir, version))
    assert {F.SERVING_DEFAULT, F.PREDICT, F.RECOMMEND} <= set(model.signatures)
    with open(os.path.join(pipeline_run.data_root, F.ITEMS_FILE), newline="") as f:
        titles = {r[F.ITEM_ID]: r["title"] for r in csv.DictReader(f)}  # the movie sample's title column

    out = model.signatures[F.PREDICT](user_id=tf.constant(["u00001", "never-seen"]),
                                      item_id=tf.constant(["i00001", "i00001"]))
    ratings = out[F.RATING_OUTPUT].numpy()
    assert ratings.shape == (2,) and np.all(np.isfinite(ratings)) and np.all((0 < ratings) & (ratings < 6))
    # Both ids unseen: MF falls back to its global mean exactly (the OOV rows carry nothing).
    mean = model.global_mean.numpy()  # the model's attribute, as TF Serving's SavedModel tracks it
    cold = model.signatures[F.PREDICT](user_id=tf.constant(["nobody"]), item_id=tf.constant(["nothing"]))
    np.testing.assert_allclose(cold[F.RATING_OUTPUT].numpy(), [mean], rtol=1e-6)

    top = model.signatures[F.RECOMMEND](user_id=tf.constant(["u00001"]), k=tf.constant(5),
                                        exclude_rated=tf.constant(False))
    ids = [i.decode() for i in top[F.ITEMS_OUTPUT].numpy()[0]]
    scores = top[F.SCORES_OUTPUT].numpy()[0]
    assert len(set(ids)) == 5 and all(i in titles for i in ids)
    assert [t.decode() for t in top[F.TITLES_OUTPUT].numpy()[0]] == [titles[i] for i in ids]
    assert np.all(np.diff(scores) <= 0)
    # The top score is the model's own pairwise prediction for that item.
    pair = model.signatures[F.PREDICT](user_id=tf.constant(["u00001"]), item_id=tf.constant([ids[0]]))
    np.testing.assert_allclose(pair[F.RATING_OUTPUT].numpy()[0], scores[0], rtol=1e-4)


def _callers(export_dir):
    """{traced function: the traced functions of the SavedModel's library that call it}, by Python name."""
    from tensorflow.core.protobuf import saved_model_pb2

    def python_name(name):  # __inference_recommend_by_history_1234 -> recommend_by_history
        return re.sub(r"^__inference_|_\d+$", "", name)

    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        library = saved_model_pb2.SavedModel.FromString(f.read()).meta_graphs[0].graph_def.library.function
    callers = collections.defaultdict(list)
    for function in library:
        callers[python_name(function.signature.name)]  # listed even when nothing calls it
        for node in function.node_def:
            if node.op in ("StatefulPartitionedCall", "PartitionedCall"):
                callers[python_name(node.attr["f"].func.name)].append(python_name(function.signature.name))
    return callers


def test_signatures_share_one_traced_copy_of_the_id_lookups_and_the_top_k(pipeline_run):
    """The Transform's id lookups, the top-k and the users' scores are traced and saved once and called by every
    signature that needs them (a copy in each signature cost the Trainer ~40 % of its tracing and saving)."""
    callers = _callers(os.path.join(pipeline_run.serving_dir, _versions(pipeline_run.serving_dir)[0]))
    assert {F.PREDICT, F.RECOMMEND_BY_HISTORY, "user_scores"} <= set(callers["user_index"])
    assert {F.PREDICT, F.RECOMMEND_BY_HISTORY, F.SIMILAR_ITEMS, "allowed_items"} <= set(callers["item_index"])
    assert {F.RECOMMEND, F.RECOMMEND_FILTERED, F.RECOMMEND_BY_FEATURES, F.RECOMMEND_BY_HISTORY,
            F.SIMILAR_ITEMS} <= set(callers["top_k"])
    assert sorted(callers["user_scores"]) == sorted([F.RECOMMEND, F.RECOMMEND_FILTERED])


def test_recommend_can_leave_out_everything_the_user_rated(pipeline_run):
    version = _versions(pipeline_run.serving_dir)[0]
    model = tf.saved_model.load(os.path.join(pipeline_run.serving_dir, version))
    with open(os.path.join(pipeline_run.data_root, F.INTERACTIONS_FILE), newline="") as f:
        rated = {r[F.ITEM_ID] for r in csv.DictReader(f) if r[F.USER_ID] == "u00002"}
    everything = tf.constant(10_000)  # more than the catalogue: rank it all
    unfiltered = model.signatures[F.RECOMMEND](user_id=tf.constant(["u00002"]), k=everything,
                                               exclude_rated=tf.constant(False))
    assert np.all(np.isfinite(unfiltered[F.SCORES_OUTPUT].numpy()))
    catalogue = {i.decode() for i in unfiltered[F.ITEMS_OUTPUT].numpy()[0]}
    kept = model.signatures[F.RECOMMEND](user_id=tf.constant(["u00002"]), k=everything,
                                         exclude_rated=tf.constant(True))
    shown = {i.decode() for i, s in zip(kept[F.ITEMS_OUTPUT].numpy()[0], kept[F.SCORES_OUTPUT].numpy()[0])
             if np.isfinite(s)}
    # Served: every item the user interacted with in any split is left out, and nothing else.
    assert len(rated & catalogue) >= 10 and shown == catalogue - rated


def test_server_answers_the_pushed_model_through_the_official_stubs(pipeline_run):
    import grpc
    from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                         predict_pb2, prediction_service_pb2_grpc, regression_pb2)

    from serving.client import RecsysClient
    from serving.server import build_server

    version = int(_versions(pipeline_run.serving_dir)[0].strip("/"))
    server, port, store = build_server(pipeline_run.model_name, pipeline_run.serving_dir, port=0, host="127.0.0.1")
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        predictions = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = pipeline_run.model_name
        request.model_spec.signature_name = F.PREDICT
        request.inputs[F.USER_ID].CopyFrom(tf.make_tensor_proto(["u00002", "a-user-nobody-has-seen"]))
        request.inputs[F.ITEM_ID].CopyFrom(tf.make_tensor_proto(["i00003", "i00003"]))
        ratings = tf.make_ndarray(predictions.Predict(request, timeout=30).outputs[F.RATING_OUTPUT])
        assert ratings.shape == (2,) and np.all(np.isfinite(ratings))

        # The same pairs as tf.Examples through Regress (TF Serving's regression signature contract).
        regress = regression_pb2.RegressionRequest()
        regress.model_spec.name, regress.model_spec.signature_name = pipeline_run.model_name, F.REGRESS
        for user in ("u00002", "a-user-nobody-has-seen"):
            example = regress.input.example_list.examples.add()
            example.features.feature[F.USER_ID].bytes_list.value.append(user.encode())
            example.features.feature[F.ITEM_ID].bytes_list.value.append(b"i00003")
        regressions = predictions.Regress(regress, timeout=30).result.regressions
        np.testing.assert_allclose([r.value for r in regressions], ratings, rtol=1e-5)
        assert tf.io.gfile.exists(os.path.join(pipeline_run.serving_dir, str(version), F.WARMUP_REQUESTS_FILE))

        metadata_request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        metadata_request.model_spec.name = pipeline_run.model_name
        signatures = get_model_metadata_pb2.SignatureDefMap()
        predictions.GetModelMetadata(metadata_request, timeout=30).metadata["signature_def"].Unpack(signatures)
        assert {F.SERVING_DEFAULT, F.PREDICT, F.RECOMMEND} <= set(signatures.signature_def)
        assert set(signatures.signature_def[F.PREDICT].inputs) == {F.USER_ID, F.ITEM_ID}

        status_request = get_model_status_pb2.GetModelStatusRequest()
        status_request.model_spec.name = pipeline_run.model_name
        statuses = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status_request, timeout=30)
        assert [(s.version, s.state) for s in statuses.model_version_status] == [
            (version, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]

        with RecsysClient(f"127.0.0.1:{port}", model_name=pipeline_run.model_name) as client:
            recommendations = client.recommend("u00002", k=10)
        assert len(recommendations) == 10 and all(r.title for r in recommendations)
    finally:
        channel.close()
        server.stop(0)
        store.stop()


def test_runs_show_prints_slices_and_writes_a_report(pipeline_run, capsys):
    from pipeline import cli

    assert cli.main(["runs", "show", "--output-dir", pipeline_run.output_dir]) == 0
    out = capsys.readouterr().out
    assert "overall" in out and "genres=Drama" in out and "BLESSED: every threshold passed" in out
    # The ranking gate's table beside TFMA's: reported for a rating model, most popular next to it.
    assert "most_popular recall@10" in out and "user_activity=" in out
    for name in ("mean_label", "mean_prediction", run_summary.RMSE):
        assert name in out
    html_path, png_path = out.strip().splitlines()[-1].removeprefix("report: ").split(", ")
    assert open(png_path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert "genres=Drama" in open(html_path, encoding="utf-8").read()


def _tree_digest(root):
    import hashlib

    digest = hashlib.sha256()
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            path = os.path.join(folder, name)
            digest.update(path.encode() + open(path, "rb").read())
    return digest.hexdigest()


def test_a_degraded_model_is_not_blessed_against_the_baseline_and_not_pushed(pipeline_run, capsys):
    """One training step from scratch (`--cold`: from the blessed model's weights it would be that model), judged
    with a loose absolute bound: only the change threshold can reject it."""
    before = _tree_digest(pipeline_run.serving_dir)
    baseline_rmse = run_summary.latest(pipeline_run).metrics[run_summary.RMSE]
    strict = dataclasses.replace(pipeline_run, train_steps=1, warm_start=False,
                                 training=dataclasses.replace(pipeline_run.training, epochs=1),
                                 evaluation=dataclasses.replace(pipeline_run.evaluation, rmse_upper_bound=5.0))
    local_runner.run(strict)
    summary = run_summary.latest(strict)
    assert not summary.blessed and summary.pushed_to is None
    assert any(run_summary.RMSE in failure for failure in summary.failures), summary.failures
    assert baseline_rmse * 1.01 < summary.metrics[run_summary.RMSE] < 5.0  # worse than the baseline, under the bound
    assert _tree_digest(pipeline_run.serving_dir) == before  # byte for byte
    from pipeline import cli

    capsys.readouterr()
    assert cli.main(["runs", "show", "--output-dir", pipeline_run.output_dir]) == 0
    assert "NOT BLESSED: overall: root_mean_squared_error" in capsys.readouterr().out


def _corrupt_rating(line):
    parts = line.split(",")
    return ",".join(parts[:2] + ["9.5"] + parts[3:])


def _corrupt_genre(line):
    item_id, title, _, year = line.split(",")
    return ",".join([item_id, title, "Space-Opera", year])


@pytest.mark.parametrize("file_name, corrupt, anomaly", [
    (F.INTERACTIONS_FILE, _corrupt_rating, ("feature 'rating' (", "Unexpectedly high value: 9.5>",
                                            "the schema allows [")),
    (F.ITEMS_FILE, _corrupt_genre, ("feature 'genres' (", "Examples contain values missing from the schema: Space-Opera")),
])
def test_bad_data_stops_the_run_at_the_data_gate(pipeline_run, tmp_path, capsys, file_name, corrupt, anomaly):
    """The curated schema the first run wrote (with the rating scale the data contract measured) catches bad data."""
    import shutil

    from components.contract import CONTRACT_FILE
    from pipeline import cli
    from pipeline.config import SCHEMA_FILE

    tiny_data = pipeline_run.data_root
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in (CONTRACT_FILE, SCHEMA_FILE):  # the reviewed contract and schema travel with the data
        shutil.copy(os.path.join(tiny_data, name), bad / name)
    for name in (F.INTERACTIONS_FILE, F.ITEMS_FILE):
        with open(os.path.join(tiny_data, name)) as src:
            lines = src.read().splitlines()
        if name == file_name:
            lines[1:40] = [corrupt(line) for line in lines[1:40]]
        (bad / name).write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"

    code = cli.main(["run", "--data-root", str(bad), "--output-dir", str(out)])

    err = capsys.readouterr().err.strip().splitlines()
    assert code == cli.EXIT_ERROR
    assert len(err) == 1, err  # one line: what is wrong (TFDV's long description, the reviewed range), what to do
    assert err[0].startswith("recsys run: error: data validation failed:"), err[0]
    assert all(part in err[0] for part in anomaly), err[0]
    assert "edit " in err[0] and "schema" in err[0], err[0]
    assert not (out / "pipeline_root" / "Transform").exists()
    assert _versions(str(out / "serving" / F.DEFAULT_MODEL_NAME)) == []


def _example(user, item, genres=(), year=None):
    """A serving tf.Example with the movie sample's attributes (its columns `genres` and `year`)."""
    feature = {F.USER_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[user.encode()])),
               F.ITEM_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[item.encode()]))}
    if genres:
        feature["genres"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[g.encode() for g in genres]))
    if year:
        feature["year"] = tf.train.Feature(float_list=tf.train.FloatList(value=[year]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


@pytest.mark.parametrize("name", ["mlp", "content", "hybrid"])
def test_every_model_trains_in_the_pipeline_and_serves_new_items(tiny_data, tmp_path, name):
    """Blessed and pushed; content-aware models use the catalogue, or the request's attributes for new items.
    hybrid runs as a user gets it by default (the budgeted Tuner, then the form validation prefers, refitted)."""
    from components.training_config import TrainingConfig
    from pipeline.config import PipelineConfig

    config = PipelineConfig(data_root=tiny_data, output_dir=str(tmp_path),
                            training=TrainingConfig(model=name, epochs=3, batch_size=256, learning_rate=0.01,
                                                    tuner_epochs=3, tuner_budget_s=10),  # a shorter budget, same path
                            tune=None if name == "hybrid" else False)
    local_runner.run(config, quiet=True)
    assert run_summary.latest(config).blessed
    tuned = tf.io.gfile.glob(f"{config.pipeline_root}/Tuner/best_hyperparameters/*/best_hyperparameters.txt")
    assert len(tuned) == int(name == "hybrid")
    if tuned:  # the search chose the form too, and the Trainer built it
        form = json.loads(tf.io.gfile.GFile(tuned[0]).read())["values"]["rating_history"]
        assert form in ("on", "off")
    (version,) = _versions(config.serving_dir)
    model = tf.saved_model.load(os.path.join(config.serving_dir, version))
    known = model.signatures[F.PREDICT](user_id=tf.constant(["u00001"]), item_id=tf.constant(["i00001"]))
    examples = tf.constant([
        _example("u00001", "i00001"),  # known item, no attributes sent: the catalogue's are used
        _example("u00001", "brand-new-1", ["Drama", "Romance"], 1990),
        _example("u00001", "brand-new-2", ["Horror", "War"], 1990),
    ])
    ratings = model.signatures[F.SERVING_DEFAULT](examples=examples)[F.RATING_OUTPUT].numpy()
    np.testing.assert_allclose(ratings[0], known[F.RATING_OUTPUT].numpy()[0], rtol=1e-5)
    assert np.all(np.isfinite(ratings))
    if name != "mlp":  # mlp reads ids only: two unseen items look the same to it
        assert abs(ratings[1] - ratings[2]) > 1e-3
    top = model.signatures[F.RECOMMEND](user_id=tf.constant(["u00001"]), k=tf.constant(3),
                                        exclude_rated=tf.constant(True))
    assert top[F.ITEMS_OUTPUT].shape == (1, 3)
    # recommend's scores (a precomputed item tower for content) are the model's ratings of those items
    ids = top[F.ITEMS_OUTPUT].numpy()[0]
    rated = model.signatures[F.PREDICT](user_id=tf.constant(["u00001"] * 3), item_id=tf.constant(ids))
    np.testing.assert_allclose(top[F.SCORES_OUTPUT].numpy()[0], rated[F.RATING_OUTPUT].numpy(), rtol=1e-4)


def test_promote_and_rollback_move_labels_on_a_live_server(pipeline_run, tmp_path, capsys):
    import shutil

    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from pipeline import cli
    from serving.options import ServerOptions
    from serving.server import build_server, read_model_config_file

    out = tmp_path / "out"
    shutil.copytree(pipeline_run.output_dir, out)
    serving = out / "serving" / pipeline_run.model_name
    blessed = int(_versions(str(serving))[0].strip("/"))
    unblessed = blessed + 1  # a version no blessed pipeline run pushed
    shutil.copytree(serving / str(blessed), serving / str(unblessed))
    common = ["--output-dir", str(out), "--model-name", pipeline_run.model_name]

    assert cli.main(["promote", str(blessed), "--label", "stable", *common]) == 0
    assert cli.main(["promote", str(unblessed), "--label", "canary", *common]) == cli.EXIT_ERROR
    assert "was not blessed" in capsys.readouterr().err
    assert cli.main(["promote", str(unblessed), "--label", "canary", "--force", "--reason", "try it", *common]) == 0

    config = read_model_config_file(str(out / "serving" / "models.config"))
    server, port, models = build_server(config=config, port=0, host="127.0.0.1",
                                        options=ServerOptions(admin_port=0))
    target = f"127.0.0.1:{server.admin_port}"  # model management: the loopback admin port only
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def version_for(label):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = pipeline_run.model_name
        request.model_spec.signature_name = F.PREDICT
        request.model_spec.version_label = label
        request.inputs[F.USER_ID].CopyFrom(tf.make_tensor_proto(["u00001"]))
        request.inputs[F.ITEM_ID].CopyFrom(tf.make_tensor_proto(["i00001"]))
        return stub.Predict(request, timeout=30).model_spec.version.value

    import threading

    answered, failures, stop = set(), [], threading.Event()

    def client_loop():  # a client that keeps asking for "stable" while the label moves
        while not stop.is_set():
            try:
                answered.add(version_for("stable"))
            except grpc.RpcError as e:
                failures.append(e.code())

    try:
        assert (version_for("stable"), version_for("canary")) == (blessed, unblessed)
        loop = threading.Thread(target=client_loop)
        loop.start()
        assert cli.main(["promote", str(unblessed), "--label", "stable", "--force", "--target", target, *common]) == 0
        assert version_for("stable") == unblessed
        assert cli.main(["rollback", "--target", target, "--reason", "bad canary", *common]) == 0
        assert version_for("stable") == blessed
        stop.set()
        loop.join()
        assert failures == [] and blessed in answered and answered <= {blessed, unblessed}
    finally:
        stop.set()
        channel.close()
        server.stop(0)
        models.stop()

    capsys.readouterr()
    assert cli.main(["models", "history", *common]) == 0
    history = capsys.readouterr().out.strip().splitlines()
    assert len(history) == 4 and "FORCED" in history[1] and "try it" in history[1]
    assert "rollback" in history[3] and f"{unblessed} -> {blessed}" in history[3]
    assert cli.main(["models", "list", *common]) == 0
    listing = capsys.readouterr().out
    # The rollback took every label off the rolled-back version, its canary too: it gets no traffic.
    assert f"{blessed}  blessed  stable" in listing and f"{unblessed}  NOT blessed  -" in listing
    # Lineage: the stable version's run, down to the transformed examples and the transform graph.
    stable_line = next(line for line in listing.splitlines() if line.startswith(f"{blessed}  "))
    root = os.path.join(pipeline_run.pipeline_root, "Transform")
    assert f"examples={root}/transformed_examples/" in stable_line and f"transform_graph={root}/transform_graph/" in stable_line
    assert '"model": "mf"' in listing and "data: span 0, split:single_split" in listing


def test_the_ranking_gate_refuses_a_model_that_does_not_beat_most_popular_and_nothing_is_pushed(
        tiny_data, tmp_path, capsys):
    """A two-tower model trained for a single step (one epoch, one batch) asked to reach twice most popular's
    recall (`--min-lift-over-popular 1`): `recsys run` exits 3, nothing pushed. (The history tower already edges
    past most popular after that one step: 0.287 vs 0.261 on this sample.)"""
    from pipeline import cli
    from pipeline.config import PipelineConfig

    out = str(tmp_path / "out")
    code = cli.main(["run", "--data-root", tiny_data, "--output-dir", out, "--model", "two_tower", "--epochs", "1",
                     "--batch-size", "8192", "--min-lift-over-popular", "1"])
    captured = capsys.readouterr()
    assert code == cli.EXIT_NOT_BLESSED, captured.out
    refusal = captured.err.strip().splitlines()
    assert len(refusal) == 1, refusal  # one line naming the gate, the figures and what to do
    assert refusal[0].startswith("recsys run: model NOT blessed, nothing pushed: overall: recall@10"), refusal
    assert "--min-lift-over-popular" in refusal[0] and "recsys runs show" in refusal[0], refusal
    config = PipelineConfig(output_dir=out)
    assert _versions(config.serving_dir) == []
    summary = run_summary.latest(config)
    assert not summary.blessed and summary.pushed_to is None and summary.metrics == {}  # no TFMA for ranking
    model, popular = (summary.ranking[k]["overall"] for k in ("model", "most_popular"))
    assert popular["recall"] > 0.15 and model["recall"] < 2 * popular["recall"], (model, popular)
    assert popular["users"] == model["users"] > 100

    assert cli.main(["runs", "show", "--output-dir", out]) == 0
    shown = capsys.readouterr().out
    assert "most_popular recall@10" in shown and "user_activity=" in shown and "item_popularity=" in shown
    assert "NOT BLESSED: overall: recall@10" in shown and "is not above most popular's" in shown


def test_examples_transformed_as_they_are_read_equal_transforms_materialized_ones(pipeline_run):
    """A window's Trainer reads ExampleGen's examples through the transform graph (catalog.read_transformed, raw):
    the same pairs, labels and catalogue as from the examples Transform wrote."""
    import glob

    import tensorflow_transform as tft

    from components import catalog
    from components import contract as contract_lib

    root = pipeline_run.pipeline_root

    def only(pattern):  # the fixture's own run: the first (other tests here run the pipeline again)
        return min(glob.glob(os.path.join(root, pattern)), key=lambda path: int(os.path.basename(path)))

    def files(examples_dir, split):
        return [os.path.join(examples_dir, f"Split-{split}", "*")]

    raw_dir, written_dir = only("RatingsExampleGen/examples/*"), only("Transform/transformed_examples/*")
    tft_output = tft.TFTransformOutput(only("Transform/transform_graph/*"))
    for split in F.SPLIT_NAMES:
        written = catalog.read_pairs(files(written_dir, split), tft_output)
        read = catalog.read_pairs(files(raw_dir, split), tft_output, raw=True)
        assert len(read) > 0 and np.array_equal(np.sort(written, axis=0), np.sort(read, axis=0)), split
    # The three reads applied one traced transform (a new trace per read cost a Trainer ~0.2 s each).
    assert [f.experimental_get_tracing_count() for f in catalog._TRANSFORMS[tft_output].values()] == [1]
    layout = catalog.content_layout(contract_lib.load_or_infer(pipeline_run.data_root)[0], tft_output)
    mean, items = catalog.build(files(written_dir, F.TRAIN_SPLIT), tft_output, layout)
    raw_mean, raw_items = catalog.build(files(raw_dir, F.TRAIN_SPLIT), tft_output, layout, raw=True)
    assert raw_mean == pytest.approx(mean, rel=1e-6)
    assert np.allclose(raw_items.item_content, items.item_content) and list(raw_items.titles) == list(items.titles)
    assert np.array_equal(raw_items.rated_items, items.rated_items)
