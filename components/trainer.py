"""Trainer's entry point: read transformed examples, fit the chosen model, export it with signatures."""

from __future__ import annotations

import dataclasses
import logging
from typing import List, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from components import ann, availability, catalog, example_files, models, signatures, warm_start, warmup
from components import contract as contract_lib
from components import features as F
from components.models import topk
from components.models.base import ModelDims
from components.training_config import TrainingConfig


def input_fn(
    file_pattern: List[str],
    tft_output: tft.TFTransformOutput,
    layout: catalog.ContentLayout,
    batch_size: int,
    shuffle: bool,
    seed: int,
    in_memory_max_mb: float = TrainingConfig.in_memory_input_max_mb,
    raw: bool = False,
) -> tf.data.Dataset:
    """(model inputs, rating) batches; one pass per epoch, reshuffled every epoch when `shuffle`.

    Tuned with bench/training_throughput.py (2 cores, the 100K sample; numbers in
    bench/results/training_throughput.json). Alone, TFXIO's dataset delivered ~50K examples/s: its
    parallel interleave hands every record between threads (~2.5x slower here than the sequential
    one) and it parses on one thread; the MF step alone runs at ~350K, so training waited for input
    (0.1-0.2 of the in-memory rate). Now (files read in order and parsed on parallel threads by
    components/example_files.py):
    - a split of up to `in_memory_max_mb` (TrainingConfig.in_memory_input_max_mb, default 64) MiB of files is read
      once, converted to model inputs and kept in memory (~100 bytes per example, and a
      permuted copy while an epoch runs); each epoch permutes it in one gather (a global shuffle,
      deterministic from `seed`) and slices batches off it, so an epoch costs no per-example work;
    - a larger split streams: model inputs built in parallel (out of order when training), prefetched.
    `raw`: the files are ExampleGen's, transformed as they are read (catalog.read_transformed).
    """
    common = dict(label_key=F.LABEL_XF, num_epochs=1)

    @tf.autograph.experimental.do_not_convert  # no tensor-dependent Python control flow: nothing to transpile
    def to_model_inputs(features, label):
        return catalog.model_inputs(features, layout), tf.reshape(label, [-1])

    files = example_files.matching_files(file_pattern)
    in_memory_max = in_memory_max_mb * 2**20
    chunks = []
    if files and sum(tf.io.gfile.stat(path).length for path in files) <= in_memory_max:
        chunks = list(catalog.read_transformed(
            file_pattern, tft_output, tfxio.TensorFlowDatasetOptions(batch_size=8192, shuffle=False, **common), raw,
        ).map(to_model_inputs, num_parallel_calls=tf.data.AUTOTUNE))
    if chunks:
        data = tf.nest.map_structure(lambda *parts: tf.concat(parts, axis=0), *chunks)
        del chunks
        n = int(data[1].shape[0])
        whole = n - n % batch_size

        def batches(split):  # [n, ...] tensors -> batch_size batches (the last one short): slices, no per-batch fn
            full = tf.nest.map_structure(
                lambda t: tf.reshape(t[:whole], tf.concat([[-1, batch_size], tf.shape(t)[1:]], 0)), split)
            dataset = tf.data.Dataset.from_tensor_slices(full)
            if whole < n:
                dataset = dataset.concatenate(tf.data.Dataset.from_tensors(
                    tf.nest.map_structure(lambda t: t[whole:], split)))
            return dataset

        if not shuffle:
            return batches(data).prefetch(tf.data.AUTOTUNE)

        # Each pass permutes the whole split in one gather: a global shuffle without a per-example shuffle
        # buffer. One random draw per pass (a new one each epoch, the same sequence for the same seed) seeds it.
        def permuted(draw):
            order = tf.random.experimental.stateless_shuffle(
                tf.range(n, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), draw]))
            return batches(tf.nest.map_structure(lambda t: tf.gather(t, order), data))

        return (tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
                .flat_map(permuted).prefetch(tf.data.AUTOTUNE))

    dataset = catalog.read_transformed(
        file_pattern, tft_output,
        tfxio.TensorFlowDatasetOptions(batch_size=batch_size, shuffle=shuffle, shuffle_seed=seed,
                                       sloppy_ordering=shuffle, **common),
        raw,
    ).map(to_model_inputs, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not shuffle)
    options = tf.data.Options()
    options.deterministic = not shuffle  # training does not need the file order, only its shuffle
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def _forget_oov_rows(model: tf.keras.Model) -> None:
    """Zeroes the OOV rows (the last rows) of every id embedding, which training never updates.

    An unseen user or item then contributes nothing of its own: MF predicts global mean + the known
    side's bias, and no model adds the random noise those rows were initialised with.
    """
    for layer in model.submodules:
        if isinstance(layer, tf.keras.layers.Embedding):
            table = layer.embeddings
            table.assign(tf.concat([table[:-F.OOV_BUCKETS], tf.zeros_like(table[-F.OOV_BUCKETS:])], axis=0))


def _other_split_files(train_files: List[str], split: str) -> List[str]:
    """The file patterns of another split of the same transformed examples (Split-train -> Split-<split>)."""
    marker = f"Split-{F.TRAIN_SPLIT}"
    patterns = [p.replace(marker, f"Split-{split}") for p in train_files if marker in p]
    return [p for p in patterns if tf.io.gfile.glob(p)]


def compile_rating_model(model: tf.keras.Model, config: TrainingConfig) -> tf.keras.Model:
    """Adam at the config's rate, MSE, RMSE and MAE: how the Trainer and every Tuner trial compile a rating model."""
    model.compile(
        optimizer=tf.keras.optimizers.Adam(config.learning_rate),
        loss=tf.keras.losses.MeanSquaredError(),
        metrics=[tf.keras.metrics.RootMeanSquaredError(name="rmse"), tf.keras.metrics.MeanAbsoluteError(name="mae")],
    )
    return model


def _start_warm(model: tf.keras.Model, data: tf.data.Dataset, start_from) -> None:
    """Builds `model` on one batch of `data` and starts it from the base model (warm_start.weights_starter)."""
    if start_from is None:
        return
    for features, _ in data.take(1):
        model(features)
    start_from(model)


def _fit_rating_model(model_module, dims: ModelDims, config: TrainingConfig, rows, train, validation,
                      steps_per_epoch, validation_steps, log_dir: str,
                      start_from=None) -> Tuple[tf.keras.Model, int, float]:
    """One fit with early stopping on validation RMSE: (model at its best epoch, epochs to reach it, its RMSE)."""
    model = compile_rating_model(model_module.build(dims, config, rows), config)
    _start_warm(model, train, start_from)
    stopping = tf.keras.callbacks.EarlyStopping(
        monitor="val_rmse", patience=config.early_stopping_patience, restore_best_weights=True)
    history = model.fit(
        train,
        validation_data=validation,
        epochs=config.fit_epochs(warm=start_from is not None),
        steps_per_epoch=steps_per_epoch,
        validation_steps=validation_steps,
        verbose=2,
        callbacks=[stopping, tf.keras.callbacks.TensorBoard(log_dir=log_dir)],
    ).history
    scores = history.get("val_rmse") or [float("nan")]
    best = int(np.nanargmin(scores)) if not np.all(np.isnan(scores)) else len(scores) - 1
    return model, best + 1, float(scores[best])


def _train_rating_model(model_name: str, dims: ModelDims, config: TrainingConfig, items: catalog.Catalog,
                        validation_pairs: np.ndarray, training_data, evaluation_data, train_files: List[str],
                        validation_files: List[str], steps_per_epoch, validation_steps, log_dir: str,
                        start_from=None) -> tf.keras.Model:
    """Fits each form `rating_history` allows and keeps the one with the lower validation RMSE; then, with
    `rating_refit`, fits a fresh model of that form for the epochs early stopping chose, on train + validation
    (the history rows too), so the exported model has learned from every split but eval. `start_from` (warm start)
    sets each model's weights before its fit."""
    module = models.get(model_name)
    train_rows = (items.rated_row_splits, items.rated_items)
    fitted = []
    for form in models.rating_history_forms(model_name, config.rating_history):
        form_config = dataclasses.replace(config, rating_history=form)
        tf.keras.utils.set_random_seed(config.seed)
        model, epochs, rmse = _fit_rating_model(module, dims, form_config, train_rows, training_data(train_files),
                                                evaluation_data(validation_files), steps_per_epoch, validation_steps,
                                                log_dir, start_from)
        fitted.append((rmse, form, epochs, model))
    rmse, form, epochs, model = min(fitted, key=lambda entry: (np.nan_to_num(entry[0], nan=np.inf)))
    if len(fitted) > 1:
        print(f"kept {model_name} with rating_history {form}: validation RMSE " +
              ", ".join(f"{f} {r:.4f}" for r, f, _, _ in fitted), flush=True)
    if not config.rating_refit or not len(validation_pairs) or not validation_files:
        return model
    num_users = len(items.rated_row_splits) - 1
    refit_rows = catalog.ragged_rows(np.concatenate([items.train_pairs, validation_pairs]), num_users)
    refit_config = dataclasses.replace(config, rating_history=form)
    tf.keras.utils.set_random_seed(config.seed)
    refit = compile_rating_model(module.build(dims, refit_config, refit_rows), refit_config)
    steps = None
    if steps_per_epoch:  # a fixed step budget: the same share of the larger data per epoch
        steps = max(1, int(round(steps_per_epoch * (len(items.rated_items) + len(validation_pairs))
                                 / max(1, len(items.rated_items)))))
    print(f"refit {model_name} (rating_history {form}) on train + validation for {epochs} epoch(s), the number "
          f"early stopping chose (validation RMSE {rmse:.4f})", flush=True)
    data = training_data(train_files + validation_files)
    _start_warm(refit, data, start_from)
    refit.fit(data, epochs=epochs, steps_per_epoch=steps, verbose=2,
              callbacks=[tf.keras.callbacks.TensorBoard(log_dir=log_dir)])
    return refit


def _fit_ranking_models(names, dims: ModelDims, config: TrainingConfig, items: catalog.Catalog, train, holdout,
                        steps_per_epoch, log_dir: str, base: warm_start.BaseModel = None,
                        user_ids=()) -> tf.keras.Model:
    """Each candidate fitted (warm from `base` where it is of the same family); the one with the best validation
    Recall@10 (each model's `validation_recall`, measured before any refit on validation) is kept."""
    fitted = []
    for name in names:
        warm = warm_start.warm_config(config, name, base)
        extra = warm_start.train_arguments(name, base, user_ids, items.item_ids, config)
        background = {"background": True} if models.solves_in_background(name) else {}
        if warm != config or extra:
            changed = {f: getattr(warm, f) for f in ("ease_lambda_scale", "ials_alpha", "ials_regularization",
                                                     "fresh_weight") if getattr(warm, f) != getattr(config, f)}
            print(f"warm start: {name} from {base.path}: " + ", ".join(f"{k} {v:g}" for k, v in changed.items()) +
                  (f", item factors of the known items ({config.ials_warm_iterations} sweeps)"
                   if "initial_item_factors" in extra else "") +
                  (", the weights of the known ids" if "start_from" in extra else ""), flush=True)
        elif base is not None:
            print(f"warm start: not for {name} (the latest blessed model is {base.family or 'unnamed'}); from scratch",
                  flush=True)
        model = models.get(name).train(dims, warm, items, train, holdout, steps_per_epoch,
                                       [tf.keras.callbacks.TensorBoard(log_dir=log_dir)], **extra, **background)
        fitted.append((float(getattr(model, "validation_recall", 0.0)), name, model))
    if len(fitted) > 1:
        best = max(fitted, key=lambda entry: entry[0])
        print("kept " + best[1] + ": validation Recall@10 " +
              ", ".join(f"{name} {recall:.4f}" for recall, name, _ in fitted), flush=True)
        return best[2]
    return fitted[0][2]


def _attach_index(model: tf.keras.Model, items: catalog.Catalog, config: TrainingConfig) -> None:
    """Builds the approximate index `recommend` will ask (a model scored by user x item vectors), and reports its
    Recall@10 against brute force on a sample of users."""
    if not hasattr(model, "query_vectors"):
        print(f"ann: not used: {model.name} has no item vectors to index (ials and two_tower have)", flush=True)
        return
    import time

    from components.models import two_tower

    started = time.time()
    rows = np.flatnonzero(items.active)  # the index holds only the items that may be recommended
    vectors = model.retrieval_vectors(two_tower.candidates(items)).numpy()[rows]
    model.ann_index = ann.build(vectors, config.ann_leaves, config.ann_leaves_to_search, config.ann_reorder,
                                item_indices=rows)
    users = np.unique(items.train_pairs[:, 0])[:500]
    if len(users):
        users = tf.constant(users, tf.int64)
        history = model.stored_history(users)
        queries = model.query_vectors(history, users, tf.gather(tf.constant(items.user_content), users))
        exact = tf.gather(rows, tf.math.top_k(tf.matmul(queries, vectors, transpose_b=True),
                                              k=min(10, len(vectors))).indices)
        found, _ = ann.search(model.ann_index, queries, tf.constant(10))
        agree = tf.sets.size(tf.sets.intersection(tf.cast(exact, tf.int64), found))
        recall = float(tf.reduce_mean(tf.cast(agree, tf.float32)) / min(10, len(vectors)))
        print(f"ann: ScaNN index over {len(vectors)} items in {time.time() - started:.1f} s; Recall@10 against brute "
              f"force {recall:.3f} ({len(users)} users)", flush=True)


def _with_availability(items: catalog.Catalog, source: availability.CatalogueSource) -> catalog.Catalog:
    """The catalogue with the items the newest items file no longer offers (or marks inactive) never recommended."""
    path = source.path()  # once: on Kubeflow it lists the spans to find the newest
    active = availability.active_items(source, path)
    items = catalog.with_active(items, active)
    if active is not None:
        retired = int((~items.active).sum())
        print(f"catalogue: {len(items.item_ids) - retired} of {len(items.item_ids)} items may be recommended"
              + (f" ({retired} retired: not in {path}"
                 + (f" or {source.active_column} false" if source.active_column else "") + ")" if retired else ""),
              flush=True)
    return items


# TFX calls this by name (Trainer's `run_fn`).
def run_fn(fn_args: tfx.components.FnArgs) -> None:
    config = TrainingConfig.from_custom_config(fn_args.custom_config)
    if fn_args.hyperparameters:  # the Tuner's best values (`recsys run --tune`)
        config = config.with_hyperparameters(fn_args.hyperparameters)
    tf.keras.utils.set_random_seed(config.seed)
    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    contract = contract_lib.from_custom_config(fn_args.custom_config)
    layout = catalog.content_layout(contract, tft_output)
    num_users, num_items = catalog.vocabulary_sizes(tft_output)
    raw = catalog.raw_examples(fn_args.custom_config)
    global_mean, items = catalog.build(fn_args.train_files, tft_output, layout, raw)
    validation_pairs = catalog.read_pairs(fn_args.eval_files, tft_output, raw)
    eval_files = _other_split_files(fn_args.train_files, F.EVAL_SPLIT)
    eval_pairs = (catalog.read_pairs(eval_files, tft_output, raw) if eval_files
                  else validation_pairs[:0])
    # Serving excludes (and history models score from) everything the pipeline saw; fitting reads train only.
    items = catalog.with_seen(items, np.concatenate([validation_pairs, eval_pairs]))
    items = _with_availability(items, availability.CatalogueSource.from_custom_config(fn_args.custom_config))
    base = warm_start.load(fn_args.base_model)  # the latest blessed model; None on a first run or with --cold
    names = models.candidates(config.model, num_items - F.OOV_BUCKETS, config.ease_max_items)
    if models.is_ranking(names[0]):
        names = warm_start.candidates(names, base)
    model_name = names[0]
    logging.info("training %s (%s): %d users, %d items, content widths %d (items) %d (users), mean label %.3f",
                 model_name, config.model, num_users - F.OOV_BUCKETS, num_items - F.OOV_BUCKETS, layout.item_width,
                 layout.user_width, global_mean)
    print(f"training {' and '.join(names)}" + (f" (--model {config.model})" if names != (config.model,) else ""),
          flush=True)

    def dataset(files, shuffle):
        return input_fn(files, tft_output, layout, config.batch_size, shuffle, config.seed,
                        config.in_memory_input_max_mb, raw)

    steps_per_epoch = max(1, fn_args.train_steps // config.epochs) if fn_args.train_steps else None

    def training_data(files):  # a fixed step budget (train_steps) repeats the data; else one pass per epoch
        data = dataset(files, True)
        return data.repeat() if steps_per_epoch else data

    dims = ModelDims(num_users, num_items, layout.item_width, global_mean, layout.user_width,
                     weighted=contract.has_weight and not contract.has_rating)
    user_ids = tft_output.vocabulary_by_name(F.USER_VOCAB)
    if models.is_ranking(model_name):
        holdout = topk.Holdout(validation_pairs, items.rated_row_splits, items.rated_items, seed=config.seed)
        # EASE and iALS fit from items.train_pairs: building their dataset would read the split a second time.
        train = training_data(fn_args.train_files) if any(map(models.reads_examples, names)) else None
        model = _fit_ranking_models(names, dims, config, items, train, holdout,
                                    steps_per_epoch, fn_args.model_run_dir, base, user_ids)
    else:
        start_from = warm_start.weights_starter(model_name, base, user_ids, items.item_ids)
        if start_from is not None:
            print(f"warm start: {model_name} from {base.path}", flush=True)
        model = _train_rating_model(model_name, dims, config, items, validation_pairs, training_data,
                                    lambda files: dataset(files, False), list(fn_args.train_files),
                                    list(fn_args.eval_files), steps_per_epoch, fn_args.eval_steps,
                                    fn_args.model_run_dir, start_from)
    _forget_oov_rows(model)
    model.model_family = tf.Variable(model.name, dtype=tf.string, trainable=False, name=warm_start.FAMILY)
    if hasattr(model, "store_history"):
        # History is an input: the served model scores each known user from everything the pipeline saw of
        # them (train, validation and eval); the weights were learned on train (+ validation) alone, and the
        # ranking gate passes each user's train + validation history explicitly, so eval stays unseen there.
        model.store_history(items.seen_row_splits, items.seen_items)
    if config.ann != ann.NONE:
        _attach_index(model, items, config)
    serving = signatures.build(model, tft_output, items, layout)
    if hasattr(model, "finish_fitting"):  # a solve still running on a thread while the signatures were traced
        model.finish_fitting()
    # save_traces=False: Keras would also trace the model's call (and each layer's) for reloading it as Keras, which
    # nothing does (servers, the gate and warm start read the signatures and the checkpoint): 4 s of a 12.5 s warm
    # EASE Trainer on the replay's day-14 window.
    model.save(fn_args.serving_model_dir, save_format="tf", signatures=serving, save_traces=False,
               options=ann.save_options() if getattr(model, "ann_index", None) is not None else None)
    signatures.set_method_names(fn_args.serving_model_dir)
    warmup.write(fn_args.serving_model_dir, user_ids[0], items.item_ids[0],
                 signatures=serving)
