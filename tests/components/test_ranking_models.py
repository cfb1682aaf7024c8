"""Ranking models learn which items a user picks: on the generated sample (taste planted in the choice
of items) each beats most-popular on held-out interactions by a wide margin, training items excluded."""

import csv
import os

import numpy as np
import pytest
import tensorflow as tf

from components import catalog as catalog_lib
from components import features as F
from components import models
from components.models import ease, ials, topk, two_tower
from components.models.base import ModelDims
from components.training_config import TrainingConfig
from data import synthetic
from tests.components.test_models import item_content


@pytest.fixture(scope="module")
def split(tiny_data):
    """Per-user random 70/10/20 train/validation/test split of the tiny sample, as vocabulary indices."""
    with open(os.path.join(tiny_data, F.INTERACTIONS_FILE)) as f:
        rows = [(r[F.USER_ID], r[F.ITEM_ID]) for r in csv.DictReader(f)]
    with open(os.path.join(tiny_data, F.ITEMS_FILE)) as f:
        item_rows = {r[F.ITEM_ID]: r for r in csv.DictReader(f)}
    users = sorted({u for u, _ in rows})
    items = sorted({i for _, i in rows})
    u_index, i_index = ({v: n for n, v in enumerate(x)} for x in (users, items))
    pairs = np.array([(u_index[u], i_index[i]) for u, i in rows], dtype=np.int64)
    draw = np.random.default_rng(0).random(len(pairs))
    train, validation, test = pairs[draw < 0.7], pairs[(draw >= 0.7) & (draw < 0.8)], pairs[draw >= 0.8]
    # The items' content vectors (genre multi-hot, year) as the pipeline encodes them, in vocabulary order.
    content = item_content([[g for g in item_rows[i][synthetic.GENRES_COLUMN].split(synthetic.GENRE_SEPARATOR) if g]
                            for i in items], [float(item_rows[i][synthetic.YEAR]) for i in items])
    row_splits, rated = catalog_lib.ragged_rows(train, len(users) + 1)
    items_catalog = catalog_lib.Catalog([i.encode() for i in items], np.array([b""] * len(items), dtype=object),
                                        content, row_splits, rated)
    dims = ModelDims(len(users) + 1, len(items) + 1, content.shape[1], 3.5)
    dataset = tf.data.Dataset.from_tensor_slices((
        {F.USER_INDEX: train[:, 0], F.ITEM_INDEX: train[:, 1], F.ITEM_CONTENT: content[train[:, 1]]},
        np.ones(len(train), np.float32))).shuffle(len(train), seed=1).batch(256)
    return dict(dims=dims, items=items_catalog, train=train, dataset=dataset,
                validation=topk.Holdout(validation, row_splits, rated),
                test=topk.Holdout(test, row_splits, rated))


def _popularity_recall(split):
    counts = np.bincount(split["train"][:, 1], minlength=len(split["items"].item_ids)).astype(np.float32)
    return split["test"].recall(lambda users: np.tile(counts, (len(users), 1)))


def _model_recall(split, model):
    candidates = two_tower.candidates(split["items"])
    return split["test"].recall(lambda users: model.score_all_items(tf.constant(users, tf.int64), candidates).numpy())


def test_two_tower_beats_most_popular(split):
    config = TrainingConfig(model="two_tower", embedding_dim=16, batch_size=256, epochs=8, seed=3)
    tf.keras.utils.set_random_seed(config.seed)
    model = two_tower.train(split["dims"], config, split["items"], split["dataset"], split["validation"])
    recall, popular = _model_recall(split, model), _popularity_recall(split)
    print(f"two_tower Recall@10 {recall:.4f}, most popular {popular:.4f}")
    assert popular > 0.05
    assert recall > 1.4 * popular, (recall, popular)


def _planted_segments(seed=0, segments=4, per_segment=25, train_users=240, cold_users=80, picks=12, held=6):
    """Users of `segments` segments each pick items of their own segment (Zipf popularity within it, 10 % of
    picks anywhere). Returns the training pairs, each training user's segment, and cold users (never in
    training) with their segment and held-out items."""
    rng = np.random.default_rng(seed)
    num_items = segments * per_segment
    weight = 1.0 / np.arange(1, per_segment + 1) ** 0.7

    def pick(segment, count):
        own = segment * per_segment + rng.choice(per_segment, size=count, replace=False, p=weight / weight.sum())
        stray = rng.random(count) < 0.1
        return np.unique(np.where(stray, rng.integers(0, num_items, count), own))

    train_segment = np.arange(train_users) % segments
    pairs = np.array([(u, i) for u in range(train_users) for i in pick(train_segment[u], picks)], np.int64)
    cold_segment = np.arange(cold_users) % segments
    cold_items = [pick(s, held) for s in cold_segment]
    return num_items, pairs, train_segment, cold_segment, cold_items


def test_two_tower_ranks_for_a_user_without_history_by_the_users_attributes():
    """User cold start: users the model never saw (the OOV user index) but whose attributes say which segment
    they belong to get their segment's items: Recall@10 well above most-popular, and above the same model
    given no attributes."""
    segments = 4
    num_items, train, train_segment, cold_segment, cold_items = _planted_segments(segments=segments)
    num_users = len(train_segment) + F.OOV_BUCKETS
    oov_user = num_users - 1
    one_hot = np.eye(segments, dtype=np.float32)
    user_content = np.concatenate([one_hot[train_segment], np.zeros((1, segments), np.float32)])  # OOV row: zeros
    content = np.zeros((num_items, 1), np.float32)  # items without attributes: only ids and the user side here
    row_splits, rated = catalog_lib.ragged_rows(train, num_users)
    items = catalog_lib.Catalog([f"i{n}".encode() for n in range(num_items)], np.array([b""] * num_items, object),
                                content, row_splits, rated, user_content=user_content)
    dims = ModelDims(num_users, num_items + F.OOV_BUCKETS, 1, 1.0, user_content_dim=segments)
    dataset = tf.data.Dataset.from_tensor_slices((
        {F.USER_INDEX: train[:, 0], F.ITEM_INDEX: train[:, 1], F.ITEM_CONTENT: content[train[:, 1]],
         F.USER_CONTENT: user_content[train[:, 0]]}, np.ones(len(train), np.float32))).shuffle(
        len(train), seed=1).batch(128)
    config = TrainingConfig(model="two_tower", embedding_dim=16, batch_size=128, epochs=10, seed=3)
    tf.keras.utils.set_random_seed(config.seed)
    model = two_tower.train(dims, config, items, dataset, topk.Holdout(np.zeros((0, 2)), row_splits, rated))
    from components.trainer import _forget_oov_rows

    _forget_oov_rows(model)  # as the Trainer exports it: the never-trained OOV rows hold no noise
    # Cold users are numbered after the training users in the holdout; the model sees each as the OOV user.
    offset = num_users
    cold_pairs = np.array([(offset + n, i) for n, held in enumerate(cold_items) for i in held], np.int64)
    holdout = topk.Holdout(cold_pairs, row_splits, rated)
    candidates = two_tower.candidates(items)

    def scores(attributes):
        def score(users):
            rows = tf.constant(users - offset, tf.int64)
            return model.score_all_items(tf.fill([len(users)], tf.constant(oov_user, tf.int64)), candidates,
                                         user_content=tf.gather(attributes, rows)).numpy()
        return score

    recall = holdout.recall(scores(one_hot[cold_segment]))
    blind = holdout.recall(scores(np.zeros((len(cold_segment), segments), np.float32)))
    counts = np.bincount(train[:, 1], minlength=num_items).astype(np.float32)
    popular = holdout.recall(lambda users: np.tile(counts, (len(users), 1)))
    print(f"two_tower cold users Recall@10 {recall:.4f} with attributes, {blind:.4f} without; most popular "
          f"{popular:.4f}")
    assert popular > 0.05
    assert recall > 1.5 * popular and recall > 1.5 * blind, (recall, blind, popular)


def test_ease_beats_most_popular_and_picks_lambda_on_validation(split, capsys):
    model = ease.train(split["dims"], TrainingConfig(model="ease"), split["items"], None, split["validation"])
    recall, popular = _model_recall(split, model), _popularity_recall(split)
    print(f"ease Recall@10 {recall:.4f}, most popular {popular:.4f}, lambda {model.lam:.1f}")
    assert recall > 1.6 * popular, (recall, popular)
    assert len([line for line in capsys.readouterr().out.splitlines() if line.startswith("ease: lambda")]) == 4


def test_ease_scores_are_the_training_history_times_its_weights(split):
    model = ease.train(split["dims"], TrainingConfig(model="ease", ease_lambda=50.0), split["items"], None,
                       split["validation"])
    user = int(split["train"][0, 0])
    row_splits, items = model.history_row_splits.numpy(), model.history_items.numpy()
    history = items[row_splits[user]:row_splits[user + 1]]
    # refitted on train + validation: the history holds both, never the test split
    seen = {tuple(p) for p in np.stack([np.repeat(np.arange(len(row_splits) - 1), np.diff(row_splits)), items], 1)}
    assert seen == {tuple(p) for p in split["train"]} | {tuple(p) for p in split["validation"].pairs}
    expected = model.weights_matrix.numpy()[history].sum(axis=0)
    got = model.score_all_items(tf.constant([user], tf.int64), two_tower.candidates(split["items"])).numpy()[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    unknown = model.score_all_items(tf.constant([split["dims"].num_users - 1], tf.int64),
                                    two_tower.candidates(split["items"])).numpy()
    counts = np.bincount(items, minlength=len(split["items"].item_ids))
    np.testing.assert_allclose(unknown[0], counts / counts.max(), rtol=1e-6)  # no history: most popular


def test_ease_solved_in_the_background_scores_as_solved_in_line(split):
    """The Trainer's refit solve runs on a thread while it traces the signatures: the model must not score (or be
    saved) with the placeholder weights before the solve lands."""
    config = TrainingConfig(model="ease", ease_lambda=50.0, fresh_weight=1.0)
    inline = ease.train(split["dims"], config, split["items"], None, split["validation"])
    background = ease.train(split["dims"], config, split["items"], None, split["validation"], background=True)
    users = tf.constant(np.unique(split["train"][:, 0])[:20], tf.int64)
    candidates = two_tower.candidates(split["items"])
    expected = inline.score_all_items(users, candidates).numpy()
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(background.score_all_items(users, candidates).numpy(), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(background.weights_matrix.numpy(), inline.weights_matrix.numpy(), rtol=1e-4, atol=1e-5)


def test_ease_inverts_by_cholesky_what_lu_inverts():
    """EASE's P by potrf/potri (half LU's flops) is the general inverse; a matrix that is not positive definite and a
    lambda that would not make X^T X so are refused."""
    from scipy import sparse

    from components.ranking_eval import ease_weights, spd_inverse

    rng = np.random.default_rng(0)
    x = (rng.random((400, 150)) < 0.05).astype(np.float64)
    gram = x.T @ x + 20.0 * np.eye(150)
    np.testing.assert_allclose(spd_inverse(gram.copy()), np.linalg.inv(gram), rtol=1e-9, atol=1e-12)
    p = np.linalg.inv(gram)
    expected = p / -np.diag(p)
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(ease_weights(sparse.csr_matrix(x), 20.0), expected, rtol=1e-5, atol=1e-7)
    with pytest.raises(np.linalg.LinAlgError, match="not positive definite"):
        spd_inverse(np.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="lambda must be positive"):
        ease_weights(sparse.csr_matrix(x), 0.0)


def test_ease_solves_a_large_catalogue_in_line_even_when_asked_for_the_background(split, monkeypatch):
    """Above BACKGROUND_SOLVE_MAX_ITEMS a solve on one BLAS thread outlasts the tracing it would overlap, and its zero
    placeholder would double B's memory: the Trainer's request for a background solve is declined."""
    config = TrainingConfig(model="ease", ease_lambda=50.0, fresh_weight=1.0)
    num_items = len(split["items"].item_ids)
    monkeypatch.setattr(ease, "BACKGROUND_SOLVE_MAX_ITEMS", num_items)
    pending = ease.train(split["dims"], config, split["items"], None, split["validation"], background=True)
    assert pending._pending is not None
    # Waited for: a solve left running would restore the process's BLAS threads (threadpoolctl's limits are global)
    # under the next test's own limit.
    pending.finish_fitting()
    monkeypatch.setattr(ease, "BACKGROUND_SOLVE_MAX_ITEMS", num_items - 1)
    model = ease.train(split["dims"], config, split["items"], None, split["validation"], background=True)
    assert model._pending is None and np.abs(model.weights_matrix.numpy()).max() > 0


def test_ials_beats_most_popular_and_walks_alpha_then_regularization_on_validation(split, capsys):
    config = TrainingConfig(model="ials", ials_factors=16, ials_iterations=10)
    model = ials.train(split["dims"], config, split["items"], None, split["validation"])
    recall, popular = _model_recall(split, model), _popularity_recall(split)
    print(f"ials Recall@10 {recall:.4f}, most popular {popular:.4f}")
    assert recall > 1.4 * popular, (recall, popular)
    trials = [line for line in capsys.readouterr().out.splitlines() if line.startswith("ials: alpha")]
    # alpha and its two neighbours, then at least the regularisation's two neighbours; each walk stops
    assert 5 <= len(trials) <= 2 * (ials.MAX_STEPS + 2), trials
    assert 0 < model.validation_recall <= 1


def test_ials_folds_in_any_history_exactly_as_the_library_solves_a_user(split):
    """The exported graph's user vector is implicit's own least-squares solve for that history (the step ALS
    training makes), so a known user, a session or a user with fresh interactions are scored alike."""
    from implicit.cpu.als import AlternatingLeastSquares
    from scipy import sparse

    config = TrainingConfig(model="ials", ials_factors=8, ials_iterations=5, ials_alpha=10.0,
                            ials_regularization=50.0, ials_refit=False, fresh_weight=1.0)
    model = ials.train(split["dims"], config, split["items"], None, split["validation"])
    n = len(split["items"].item_ids)
    library = AlternatingLeastSquares(factors=8, regularization=50.0, alpha=10.0)
    library.item_factors = model.item_factors.numpy()
    library.user_factors = np.zeros((1, 8), np.float32)
    rows = [[0, 5, 9], [3], [1, 2, 4, 8, 16, 32]]
    weights = [[1.0, 1.0, 1.0], [1.0], [1.0, 2.0, 1.0, 1.0, 0.5, 1.0]]
    matrix = sparse.csr_matrix((np.concatenate(weights).astype(np.float32),
                                (np.repeat(np.arange(3), [len(r) for r in rows]), np.concatenate(rows))), shape=(3, n))
    expected = np.asarray(library.recalculate_user(np.arange(3), matrix))
    history = tf.sparse.reorder(tf.SparseTensor(np.stack(matrix.nonzero(), 1).astype(np.int64),
                                                matrix.data.astype(np.float32), [3, n]))
    got = model.user_vectors_from_history(history).numpy()
    np.testing.assert_allclose(got, expected, rtol=2e-3, atol=1e-4)
    assert np.abs(expected).max() > 1e-2  # not trivially zero
    # An empty history is a zero vector, which the model answers with popularity.
    empty = tf.SparseTensor(np.zeros((0, 2), np.int64), np.zeros(0, np.float32), [1, n])
    assert not model.user_vectors_from_history(empty).numpy().any()
    unknown = model.score_all_items(tf.constant([split["dims"].num_users - 1], tf.int64),
                                    two_tower.candidates(split["items"])).numpy()[0]
    counts = np.bincount(model.history_items.numpy(), minlength=n)
    np.testing.assert_allclose(unknown, counts / counts.max(), rtol=1e-6)


def test_ease_refuses_a_catalogue_above_its_limit_in_one_line(split):
    with pytest.raises(ease.CatalogueTooLarge) as error:
        ease.train(split["dims"], TrainingConfig(model="ease", ease_max_items=50), split["items"], None,
                   split["validation"])
    message = str(error.value)
    assert "\n" not in message and "limit of 50" in message and "two_tower" in message


def test_auto_means_ease_when_the_catalogue_fits_and_ials_or_two_tower_above():
    assert models.candidates(models.AUTO, 5_000, 10_000) == ("ease",)
    assert models.candidates(models.AUTO, 50_000, 10_000) == ("ials", "two_tower")
    assert models.candidates("mf", 50_000, 10_000) == ("mf",)
    assert models.is_ranking("auto") and models.is_ranking("ease") and not models.is_ranking("mf")
    with pytest.raises(ValueError, match="unknown model"):
        models.is_ranking("nope")


def test_holdout_recall_excludes_training_items_and_is_one_for_an_oracle():
    row_splits, rated = catalog_lib.ragged_rows(np.array([[0, 0], [0, 1]]), 2)
    holdout = topk.Holdout(np.array([[0, 2], [1, 3]]), row_splits, rated)
    oracle = np.array([[9.0, 9.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0, 0.0]])  # training items score highest
    assert holdout.recall(lambda users: oracle[users], k=1) == 1.0


def test_two_tower_weighs_positives_by_the_interaction_weight(split):
    """With a weight column (implicit data), an item whose interactions all weigh 0 is never learnt as a positive:
    it falls in every user's ranking; unweighted, the same data ranks it as usual."""
    train, content = split["train"], split["items"].item_content
    target = int(np.bincount(train[:, 1]).argmax())  # the most popular item
    weights = np.where(train[:, 1] == target, 0.0, 1.0).astype(np.float32)
    features = {F.USER_INDEX: train[:, 0], F.ITEM_INDEX: train[:, 1], F.ITEM_CONTENT: content[train[:, 1]]}
    config = TrainingConfig(model="two_tower", embedding_dim=16, batch_size=256, epochs=4, seed=3)
    users = np.unique(train[:, 0])[:200]
    ranks = {}
    for weighted in (False, True):
        dims = ModelDims(split["dims"].num_users, split["dims"].num_items, content.shape[1], 3.5, weighted=weighted)
        data = tf.data.Dataset.from_tensor_slices((features, weights)).shuffle(len(train), seed=1).batch(256)
        no_holdout = topk.Holdout(train[:0], split["items"].rated_row_splits, split["items"].rated_items)
        model = two_tower.train(dims, config, split["items"], data, no_holdout)
        scores = model.score_all_items(tf.constant(users, tf.int64), two_tower.candidates(split["items"])).numpy()
        ranks[weighted] = float(np.mean((scores > scores[:, [target]]).sum(axis=1)))
    assert ranks[True] > ranks[False] + 20, ranks  # its mean rank drops by many places
