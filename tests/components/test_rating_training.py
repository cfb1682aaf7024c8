"""The Trainer's rating path (issue 20): each form `rating_history` allows is fitted and the better one on validation
kept; then a fresh model of that form is refitted on train + validation for the epochs early stopping chose."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from components import catalog as catalog_lib
from components import trainer, warm_start
from components.models.base import ModelDims
from components.training_config import TrainingConfig
from data import synthetic
from tests.components.test_models import _inputs, _load
from tests.components.test_warm_start import _saved_keras


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("rating_training")
    synthetic.generate(str(root), synthetic.SampleSpec(num_users=300, num_items=300, num_ratings=20_000, seed=3))
    u, i, y, n_users, content = _load(root)
    fold = np.arange(len(y)) % 10
    train, validation = fold >= 1, fold == 0
    rated_splits, rated = catalog_lib.ragged_rows(np.stack([u[train], i[train]], 1), n_users + 1)
    items = catalog_lib.Catalog([b"%d" % n for n in range(len(content))], np.full(len(content), b"", object),
                                content, rated_splits, rated)
    data = {"train": (u[train], i[train], y[train]), "validation": (u[validation], i[validation], y[validation])}
    dims = ModelDims(n_users + 1, len(content) + 1, content.shape[1], float(y[train].mean()))
    return dims, items, np.stack([u[validation], i[validation]], 1), data, content


def _datasets(data, content):
    """The Trainer's training_data / evaluation_data over in-memory splits named like files."""
    def of(files, shuffle):
        parts = [data[name] for name in files]
        u, i, y = (np.concatenate(column) for column in zip(*parts))
        dataset = tf.data.Dataset.from_tensor_slices((_inputs(u, i, content), y.astype(np.float32)))
        return (dataset.shuffle(len(y), seed=1) if shuffle else dataset).batch(1024)
    return (lambda files: of(files, True)), (lambda files: of(files, False))


def _train(split, config, tmp_path, capsys):
    dims, items, validation_pairs, data, content = split
    training_data, evaluation_data = _datasets(data, content)
    model = trainer._train_rating_model(config.model, dims, config, items, validation_pairs, training_data,
                                        evaluation_data, ["train"], ["validation"], None, None, str(tmp_path))
    return model, capsys.readouterr().out


def test_auto_fits_both_forms_keeps_the_better_and_refits_on_train_and_validation(split, tmp_path, capsys):
    dims, items, validation_pairs, data, content = split
    config = TrainingConfig(model="mf", epochs=6, learning_rate=0.01)
    model, out = _train(split, config, tmp_path, capsys)
    (kept,) = [line for line in out.splitlines() if line.startswith("kept mf with rating_history")]
    scores = dict(part.split() for part in kept.split("validation RMSE ")[1].split(", "))
    form = kept.split()[4].rstrip(":")
    assert set(scores) == {"on", "off"} and float(scores[form]) == min(map(float, scores.values()))
    (refit,) = [line for line in out.splitlines() if line.startswith("refit mf")]
    epochs = int(refit.split(" for ")[1].split()[0])
    assert 1 <= epochs <= config.epochs
    if form == "on":  # the exported model's history: train + validation, what it was refitted on
        expected = catalog_lib.ragged_rows(np.concatenate([items.train_pairs, validation_pairs]), dims.num_users)
        np.testing.assert_array_equal(model.chosen.items.numpy(), expected[1])
        np.testing.assert_array_equal(model.chosen.row_splits.numpy(), expected[0])
        assert len(expected[1]) > len(items.rated_items)
    # The refitted model learned the validation ratings too: its error there is below the selected fit's.
    u, i, y = data["validation"]
    no_refit, _ = _train(split, dataclasses.replace(config, rating_refit=False, rating_history=form), tmp_path, capsys)
    error = {name: float(np.sqrt(np.mean((m.predict(_inputs(u, i, content), verbose=0) - y) ** 2)))
             for name, m in (("refit", model), ("selected", no_refit))}
    assert error["refit"] < error["selected"] - 0.01, error


def test_without_refit_or_auto_one_form_is_fitted_and_returned(split, tmp_path, capsys):
    config = TrainingConfig(model="mf", epochs=2, rating_history="off", rating_refit=False)
    model, out = _train(split, config, tmp_path, capsys)
    assert model.chosen is None
    assert "kept mf" not in out and "refit" not in out
    config = TrainingConfig(model="mlp", epochs=2, hidden_units=(8,), rating_refit=False)  # no implicit term there
    _, out = _train(split, config, tmp_path, capsys)
    assert "kept mlp" not in out


def test_warm_start_from_yesterdays_model_fits_fewer_epochs_to_the_same_error(split, tmp_path, capsys):
    """Issue 19: yesterday's mf saw 80 % of today's training ratings. Today's fit started from it (every id table row
    by id, the global mean) runs at most warm_epochs (3) and reaches the cold fit's validation RMSE within 2 % (the
    issue's bound); as many epochs from random weights do not. Measured: yesterday's 0.6387; cold 0.6128 in 12
    epochs, warm 0.6188 in 3, cold 3 epochs 0.6875."""
    dims, items, validation_pairs, data, content = split
    u, i, y = data["train"]
    older = np.random.default_rng(4).random(len(y)) < 0.8
    data = {**data, "yesterday": (u[older], i[older], y[older])}
    training_data, evaluation_data = _datasets(data, content)
    config = TrainingConfig(model="mf", epochs=12, rating_history="off", rating_refit=False, learning_rate=0.01)

    def fit(files, start_from=None, **changes):
        tf.keras.utils.set_random_seed(config.seed)
        model = trainer._train_rating_model("mf", dims, dataclasses.replace(config, **changes), items,
                                            validation_pairs, training_data, evaluation_data, files, ["validation"],
                                            None, None, str(tmp_path), start_from)
        epochs = len(model.history.epoch)
        vu, vi, vy = data["validation"]
        rmse = float(np.sqrt(np.mean((model.predict(_inputs(vu, vi, content), verbose=0) - vy) ** 2)))
        return model, rmse, epochs

    yesterday, yesterday_rmse, _ = fit(["yesterday"])
    user_ids = [b"u%d" % n for n in range(dims.num_users - 1)]
    base = _saved_keras(tmp_path, yesterday, items.item_ids, user_ids, _inputs(u[:2], i[:2], content))
    cold, cold_rmse, cold_epochs = fit(["train"])
    capsys.readouterr()
    warm, warm_rmse, warm_epochs = fit(["train"], warm_start.weights_starter("mf", base, user_ids, items.item_ids))
    assert f"mf: warm start ({len(items.item_ids)} of {len(items.item_ids)} item_ids known" in capsys.readouterr().out
    _, short_rmse, _ = fit(["train"], epochs=warm_epochs)
    print(f"mf validation RMSE: yesterday's {yesterday_rmse:.4f}; cold {cold_rmse:.4f} in {cold_epochs} epochs, warm "
          f"{warm_rmse:.4f} in {warm_epochs}, cold {warm_epochs} epochs {short_rmse:.4f}")
    assert warm_epochs <= config.warm_epochs < cold_epochs, (warm_epochs, cold_epochs)
    assert warm_rmse <= 1.02 * cold_rmse, (warm_rmse, cold_rmse)
    assert warm_rmse < short_rmse - 0.01, (warm_rmse, short_rmse)
