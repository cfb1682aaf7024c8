"""Warm start from the latest blessed model (issue 19): EASE keeps its chosen lambda and searches nothing, iALS
keeps alpha and the regularisation and starts from the known items' factors, reaching the cold model's recall in
a third of the sweeps; new ids start fresh; another family, or no base model, trains from scratch."""

import dataclasses
import time

import numpy as np
import pytest
import tensorflow as tf

from components import catalog as catalog_lib
from components import features as F
from components import warm_start
from components.models import ease, ials, mf, two_tower
from components.models.base import ModelDims
from components.training_config import TrainingConfig
from tests.components.test_ranking_models import _model_recall, split  # noqa: F401 (a fixture)


def _exported(tmp_path, model, item_ids):
    """The variables a Trainer export carries for warm start, saved as a SavedModel (checkpoint and all)."""
    module = tf.Module()
    module.model_family = tf.Variable(model.name, dtype=tf.string)
    module.catalog_item_ids = tf.Variable(list(item_ids), dtype=tf.string)
    for name in (warm_start.EASE_LAMBDA_SCALE, warm_start.ALPHA, warm_start.REGULARIZATION, warm_start.ITEM_FACTORS,
                 warm_start.FRESH_WEIGHT):
        if hasattr(model, name):
            setattr(module, name, getattr(model, name))
    path = str(tmp_path / model.name)
    tf.saved_model.save(module, path)
    return warm_start.load(path)


def test_ease_keeps_the_lambda_it_chose_and_searches_nothing(split, tmp_path, capsys):  # noqa: F811
    cold = ease.train(split["dims"], TrainingConfig(model="ease"), split["items"], None, split["validation"])
    assert len([line for line in capsys.readouterr().out.splitlines() if line.startswith("ease: lambda")]) == 4
    base = _exported(tmp_path, cold, split["items"].item_ids)
    assert base.family == "ease" and warm_start.candidates(("ease",), base) == ("ease",)
    config = warm_start.warm_config(TrainingConfig(model="ease"), "ease", base)
    assert config.ease_lambda_scale > 0 and config.fresh_weight == pytest.approx(float(cold.fresh_weight.numpy()))
    warm = ease.train(split["dims"], config, split["items"], None, split["validation"])
    printed = capsys.readouterr().out.splitlines()
    assert len([line for line in printed if line.startswith("ease: lambda")]) == 1
    assert any(line.endswith("kept: no validation solve") for line in printed), printed  # the refit only
    assert warm.lam == pytest.approx(cold.lam, rel=1e-5)  # the same data: the same lambda, the same model
    assert _model_recall(split, warm) == pytest.approx(_model_recall(split, cold), abs=1e-6)
    # `--tune` (keep_tuned off): nothing kept, the search runs again.
    retuned = TrainingConfig(model="ease", keep_tuned=False)
    assert warm_start.warm_config(retuned, "ease", base) == retuned
    ease.train(split["dims"], retuned, split["items"], None, split["validation"])
    assert len([line for line in capsys.readouterr().out.splitlines() if line.startswith("ease: lambda")]) == 4


def test_ials_starts_from_the_known_items_factors_and_needs_a_third_of_the_sweeps(split, tmp_path, capsys):  # noqa: F811
    config = TrainingConfig(model="ials", ials_factors=16, ials_iterations=15, ials_warm_iterations=5)
    cold = ials.train(split["dims"], config, split["items"], None, split["validation"])
    base = _exported(tmp_path, cold, split["items"].item_ids)
    warm_config = warm_start.warm_config(config, "ials", base)
    assert (warm_config.ials_alpha, warm_config.ials_regularization) == (float(cold.alpha.numpy()), cold.regularization)
    extra = warm_start.train_arguments("ials", base, [], split["items"].item_ids, config)
    assert set(extra) == {"initial_item_factors"} and not warm_start.train_arguments("ease", base, [], [], config)
    capsys.readouterr()
    warm = ials.train(split["dims"], warm_config, split["items"], None, split["validation"], **extra)
    printed = capsys.readouterr().out.splitlines()
    assert not [line for line in printed if line.startswith("ials: alpha")]  # no search
    assert any(line.startswith("ials: no fit on train alone") for line in printed), printed  # the refit only
    # Five sweeps from yesterday's factors against fifteen from random ones: the same test recall (within 2 %); five
    # sweeps from random factors fall short (measured: 0.5366 warm, 0.5322 cold, 0.5197 five cold sweeps).
    cold_recall, warm_recall = _model_recall(split, cold), _model_recall(split, warm)
    short = ials.train(split["dims"], TrainingConfig(**{**warm_config.__dict__, "ials_iterations": 5}), split["items"],
                       None, split["validation"])
    print(f"ials test Recall@10: cold 15 sweeps {cold_recall:.4f}, warm 5 sweeps {warm_recall:.4f}, cold 5 sweeps "
          f"{_model_recall(split, short):.4f}")
    assert warm_recall >= 0.98 * cold_recall, (warm_recall, cold_recall)
    assert warm_recall > _model_recall(split, short)  # the same five sweeps from random factors: the start matters
    # Another family, or no base model: nothing carried over.
    assert warm_start.warm_config(config, "ease", base) == config
    assert warm_start.initial_item_factors(None, split["items"].item_ids, 16, seed=1) is None
    assert warm_start.initial_item_factors(base, split["items"].item_ids, 32, seed=1) is None  # other width
    assert warm_start.candidates(("ials", "two_tower"), base) == ("ials",)
    assert warm_start.candidates(("ease",), base) == ("ease",)  # not a candidate: auto's choice stands
    fixed = TrainingConfig(model="ials", ials_alpha=3.0)
    assert warm_start.warm_config(fixed, "ials", base).ials_alpha == 3.0  # a value the config fixes wins


def test_ials_given_its_hyperparameters_is_still_measured_on_validation(split):  # noqa: F811
    """`auto` above EASE's limit keeps iALS or two_tower by validation recall: given alpha and regularisation (no
    search, no warm start), iALS's recall is measured all the same, not left at 0 to lose every comparison."""
    config = TrainingConfig(model="ials", ials_factors=16, ials_alpha=10.0, ials_regularization=100.0)
    model = ials.train(split["dims"], config, split["items"], None, split["validation"])
    assert model.validation_recall > 0.2, model.validation_recall


def test_known_ids_keep_their_rows_and_new_ids_start_fresh():
    old_rows = np.arange(6, dtype=np.float32).reshape(3, 2)
    fresh = np.full((4, 2), -1.0, np.float32)
    rows, known = warm_start.mapped_rows([b"c", b"new", b"a", b"other"], [b"a", b"b", b"c"], old_rows, fresh)
    assert known == 2
    np.testing.assert_array_equal(rows, [[4, 5], [-1, -1], [0, 1], [-1, -1]])
    assert warm_start.load("") is None


def _saved_keras(tmp_path, model, item_ids, user_ids, inputs):
    """`model` saved as the Trainer exports it (its family, the catalogue's ids, the user vocabulary in assets)."""
    model(inputs)  # Keras saves a model it has seen called
    model.model_family = tf.Variable(model.name, dtype=tf.string, trainable=False, name=warm_start.FAMILY)
    model.catalog_item_ids = tf.Variable(list(item_ids), dtype=tf.string, trainable=False)
    path = str(tmp_path / f"{model.name}_base")
    model.save(path, save_format="tf")
    tf.io.gfile.makedirs(f"{path}/assets")
    with open(f"{path}/assets/{F.USER_VOCAB}", "wb") as f:
        f.write(b"".join(user + b"\n" for user in user_ids))
    return warm_start.load(path)


def _two_tower(split, pairs, start_from=None, epochs=12):
    """two_tower fitted on `pairs` (some of the split's training pairs): (model, epochs run, seconds)."""
    items = split["items"]
    row_splits, rated = catalog_lib.ragged_rows(pairs, split["dims"].num_users)
    items = catalog_lib.Catalog(items.item_ids, items.titles, items.item_content, row_splits, rated)
    data = tf.data.Dataset.from_tensor_slices((
        {F.USER_INDEX: pairs[:, 0], F.ITEM_INDEX: pairs[:, 1], F.ITEM_CONTENT: items.item_content[pairs[:, 1]]},
        np.ones(len(pairs), np.float32))).shuffle(len(pairs), seed=1).batch(256)
    config = TrainingConfig(model="two_tower", embedding_dim=16, batch_size=256, epochs=epochs, seed=3)
    tf.keras.utils.set_random_seed(config.seed)
    started = time.perf_counter()
    model = two_tower.train(split["dims"], config, items, data, split["validation"], start_from=start_from)
    return model, len(model.history.epoch), time.perf_counter() - started


def test_two_tower_warm_from_yesterday_matches_cold_in_fewer_epochs(split, tmp_path, capsys):  # noqa: F811
    """Yesterday's model saw 80 % of today's training pairs. Started from it, today's fit (at most warm_epochs, 3)
    reaches the cold fit's test recall within 2 % in fewer epochs. Measured: yesterday's 0.4762, cold 0.5020 in 5
    epochs, warm 0.4933 in 3; on data this small two_tower converges from random weights in 3 epochs too (0.5020),
    so here the start saves nothing over the cap: a larger replay (issue 19, part 7) measures what it saves."""
    item_ids = list(split["items"].item_ids)
    user_ids = [f"u{n}".encode() for n in range(split["dims"].num_users - F.OOV_BUCKETS)]
    today = split["train"]
    yesterday = today[np.random.default_rng(5).random(len(today)) < 0.8]
    base_model, _, _ = _two_tower(split, yesterday)
    base = _saved_keras(tmp_path, base_model, item_ids, user_ids, next(iter(split["dataset"]))[0])
    assert base.family == "two_tower" and base.user_ids == tuple(user_ids)
    extra = warm_start.train_arguments("two_tower", base, user_ids, item_ids, TrainingConfig(model="two_tower"))
    cold, cold_epochs, cold_seconds = _two_tower(split, today)
    warm, warm_epochs, warm_seconds = _two_tower(split, today, extra["start_from"])
    assert "two_tower: warm start (" in capsys.readouterr().out
    short, short_epochs, _ = _two_tower(split, today, epochs=warm_epochs)
    recall = {name: _model_recall(split, model) for name, model in
              (("yesterday", base_model), ("cold", cold), ("warm", warm), ("short", short))}
    print(f"two_tower test Recall@10: yesterday's {recall['yesterday']:.4f}; cold {recall['cold']:.4f} in "
          f"{cold_epochs} epochs ({cold_seconds:.1f} s), warm {recall['warm']:.4f} in {warm_epochs} epochs "
          f"({warm_seconds:.1f} s), cold {short_epochs} epochs {recall['short']:.4f}")
    assert recall["warm"] >= 0.98 * recall["cold"], recall
    assert warm_epochs <= TrainingConfig.warm_epochs < cold_epochs, (warm_epochs, cold_epochs)
    assert recall["warm"] > recall["yesterday"], recall  # today's new pairs were learned, not just kept


def test_rows_follow_the_ids_into_a_new_vocabulary(split, tmp_path):  # noqa: F811
    """Tomorrow's vocabulary orders ids differently, drops some and adds others: each known id's rows (in every id
    table: embeddings and biases, users and items) are yesterday's; a new id keeps its initial row; the OOV rows are
    not carried; weights of another shape are left alone."""
    dims = split["dims"]
    old_users = [f"u{n}".encode() for n in range(dims.num_users - F.OOV_BUCKETS)]
    old_items = list(split["items"].item_ids)
    config = TrainingConfig(model="mf", embedding_dim=4, seed=1)
    old = mf.build(dims, config)
    old.global_mean.assign(4.25)
    base = _saved_keras(tmp_path, old, old_items, old_users, {F.USER_INDEX: tf.constant([0]),
                                                              F.ITEM_INDEX: tf.constant([0])})
    new_users = [b"new-user"] + old_users[::-1][:-1]  # reversed, the last old user gone, one new user first
    new_items = old_items[1:] + [b"new-item"]
    new_dims = ModelDims(len(new_users) + F.OOV_BUCKETS, len(new_items) + F.OOV_BUCKETS, dims.item_content_dim, 3.5)
    new = mf.build(new_dims, dataclasses.replace(config, seed=2))
    new({F.USER_INDEX: tf.constant([0]), F.ITEM_INDEX: tf.constant([0])})
    before = new.user_embedding.embeddings.numpy().copy()
    carried = warm_start.warm_weights(new, base, new_users, new_items)
    assert carried.startswith(f"{len(new_items) - 1} of {len(new_items)} item_ids known, "
                              f"{len(new_users) - 1} of {len(new_users)} user_ids known"), carried
    for table in ("user_embedding", "user_bias"):
        old_rows, new_rows = (getattr(m, table).embeddings.numpy() for m in (old, new))
        np.testing.assert_array_equal(new_rows[1], old_rows[old_users.index(new_users[1])])
        np.testing.assert_array_equal(new_rows[len(new_users)], getattr(new, table).embeddings.numpy()[-1])
    np.testing.assert_array_equal(new.user_embedding.embeddings.numpy()[0], before[0])  # the new user: as initialised
    np.testing.assert_array_equal(new.user_embedding.embeddings.numpy()[-1], before[-1])  # OOV: not carried
    for table in ("item_embedding", "item_bias"):
        old_rows, new_rows = (getattr(m, table).embeddings.numpy() for m in (old, new))
        np.testing.assert_array_equal(new_rows[:len(new_items) - 1], old_rows[1:len(old_items)])
    assert float(new.global_mean.numpy()) == 4.25  # another trainable weight of the same path and shape
    wider = mf.build(new_dims, dataclasses.replace(config, embedding_dim=8))
    initial = wider.user_embedding.embeddings.numpy().copy()
    assert "user_ids known" in warm_start.warm_weights(wider, base, new_users, new_items)  # the biases still fit
    np.testing.assert_array_equal(wider.user_embedding.embeddings.numpy(), initial)  # another width: left alone
    assert warm_start.warm_weights(new, None, new_users, new_items) is None
    other_family = dataclasses.replace(base, values={**base.values, warm_start.FAMILY: b"ials"})
    assert warm_start.warm_weights(new, other_family, new_users, new_items) is None
