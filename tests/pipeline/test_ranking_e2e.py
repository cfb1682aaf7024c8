"""The default model (`auto`: EASE on a catalogue this size) through the real pipeline: it learns taste,
is blessed by the ranking gate and pushed, and its exclusion tables follow the protocol (served: every
split the pipeline saw; evaluated: training items only)."""

import os

import pytest
import tensorflow as tf

from components import features as F
from components import ranking_eval as R
from pipeline import local_runner, quality, run_summary

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def auto_run(tiny_data, tmp_path_factory):
    from pipeline.config import PipelineConfig

    config = PipelineConfig(data_root=tiny_data, output_dir=str(tmp_path_factory.mktemp("auto_run")))
    local_runner.run(config, quiet=True)
    summary = run_summary.latest(config)
    (version,) = os.listdir(config.serving_dir)
    model = tf.saved_model.load(os.path.join(config.serving_dir, version))
    splits = {name: [(user, item) for user, item, _ in quality.split_interactions(config.pipeline_root, name)]
              for name in F.SPLIT_NAMES}
    return config, summary, model, splits


def test_the_default_model_beats_most_popular_and_is_blessed(auto_run):
    _, summary, _, _ = auto_run
    assert summary.blessed and summary.pushed_to
    model, popular = (summary.ranking[k]["overall"] for k in ("model", "most_popular"))
    print(f"auto: Recall@10 {model['recall']:.4f} vs most popular {popular['recall']:.4f}")
    assert model["recall"] > 1.5 * popular["recall"] > 0.1, (model, popular)


def test_served_recommendations_exclude_every_split_and_evaluation_only_train(auto_run):
    _, _, model, splits = auto_run
    seen = R.relevant_by_user(p for name in F.SPLIT_NAMES for p in splits[name])
    train = R.relevant_by_user(splits[F.TRAIN_SPLIT])
    held_out = R.relevant_by_user(splits[F.EVAL_SPLIT] + splits[F.VALIDATION_SPLIT])
    users = sorted(held_out)[:60]
    k = tf.constant(50)
    served = model.signatures[F.RECOMMEND](user_id=tf.constant(users), k=k, exclude_rated=tf.constant(True))
    for user, items in zip(users, served[F.ITEMS_OUTPUT].numpy()):
        assert not {i.decode() for i in items} & seen[user], user  # nothing the user already has, any split
    filtered = model.signatures[F.RECOMMEND_FILTERED]
    hits = 0
    for user in users:
        out = filtered(user_id=tf.constant([user]), k=k, exclude_rated=tf.constant(False),
                       exclude_item_ids=tf.constant(sorted(train[user]), tf.string),
                       allow_item_ids=tf.constant([], tf.string))
        items = {i.decode() for i in out[F.ITEMS_OUTPUT].numpy()[0]}
        assert not items & train[user]
        hits += len(items & held_out[user])  # held-out items may come back: evaluation excludes train only
    assert hits > 0


def test_recommend_filtered_honours_allow_and_exclude_lists_and_similar_items_answers(auto_run):
    _, _, model, splits = auto_run
    user, item = splits[F.TRAIN_SPLIT][0]
    catalogue = sorted({i for name in F.SPLIT_NAMES for _, i in splits[name]})
    allow = catalogue[:5]
    out = model.signatures[F.RECOMMEND_FILTERED](
        user_id=tf.constant([user, "never-seen-user"]), k=tf.constant(10), exclude_rated=tf.constant(False),
        exclude_item_ids=tf.constant([allow[0], "unknown-item"]), allow_item_ids=tf.constant(allow + ["unknown-item"]))
    ids = out[F.ITEMS_OUTPUT].numpy()
    assert ids.shape == (2, 4)  # k clipped to the 4 allowed, not excluded items
    for row in ids:
        assert sorted(i.decode() for i in row) == allow[1:]
    similar = model.signatures[F.SIMILAR_ITEMS](item_id=tf.constant([item, "unknown-item"]), k=tf.constant(5))
    first, unknown = similar[F.ITEMS_OUTPUT].numpy()
    assert len({i.decode() for i in first} - {""}) == 5 and item.encode() not in first
    assert not any(unknown)  # an unknown item matches nothing


def test_user_keyed_signatures_refuse_oversized_requests_inside_the_model(auto_run):
    from serving import limits

    _, _, model, _ = auto_run
    too_many = tf.constant(["u00001"] * (limits.MAX_RECOMMEND_USERS + 1))
    with pytest.raises(tf.errors.InvalidArgumentError, match="limit"):
        model.signatures[F.RECOMMEND](user_id=too_many, k=tf.constant(10), exclude_rated=tf.constant(True))
    example = tf.train.Example()
    example.features.feature[F.USER_ID].bytes_list.value.append(b"someone-new")
    too_many_examples = tf.constant([example.SerializeToString()] * (limits.MAX_RECOMMEND_USERS + 1))
    with pytest.raises(tf.errors.InvalidArgumentError, match="limit"):  # refused before parsing or scoring
        model.signatures[F.RECOMMEND_BY_FEATURES](examples=too_many_examples, k=tf.constant(10))
    answer = model.signatures[F.RECOMMEND_BY_FEATURES](examples=too_many_examples[:1], k=tf.constant(10))
    assert answer[F.ITEMS_OUTPUT].shape == (1, 10)


def test_the_served_default_model_answers_filtered_recommend_similar_items_and_scores_over_grpc(auto_run, capsys):
    from pipeline import cli
    from serving.server import build_server

    config, _, _, splits = auto_run
    user, item = splits[F.TRAIN_SPLIT][0]
    allowed = sorted({i for _, i in splits[F.EVAL_SPLIT]})[:3]
    server, port, store = build_server(config.model_name, config.serving_dir, port=0, host="127.0.0.1")
    target = ["--target", f"127.0.0.1:{port}", "--model-name", config.model_name]
    try:
        assert cli.main(["recommend", "--user", user, "--k", "10", "--allow", ",".join(allowed), *target]) == 0
        listed = capsys.readouterr().out
        shown = {line.split()[1] for line in listed.splitlines()[1:]}
        assert shown and shown <= set(allowed), listed  # only allowed items (fewer if the user has some)
        assert cli.main(["similar", "--item", item, "--k", "5", *target]) == 0
        similar = capsys.readouterr().out.splitlines()
        assert similar[0] == f"5 items like {item}:" and len(similar) == 6 and item not in similar[1:][0]
        assert cli.main(["predict", "--user", user, "--item", item, *target]) == 0
        assert "ranking score (not a rating" in capsys.readouterr().out
    finally:
        server.stop(0)
        store.stop()
