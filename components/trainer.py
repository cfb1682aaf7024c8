"""Trainer's entry point: read transformed examples, fit the chosen model, export it with signatures."""

from __future__ import annotations

import logging
from typing import List, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from components import features as F
from components import models, signatures
from components.training_config import TrainingConfig


def input_fn(
    file_pattern: List[str],
    data_accessor: tfx.components.DataAccessor,
    tft_output: tft.TFTransformOutput,
    feature_keys: Sequence[str],
    batch_size: int,
    shuffle: bool,
    seed: int,
) -> tf.data.Dataset:
    """(features, label) batches with only the features the model reads; one pass per epoch."""
    dataset = data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(
            batch_size=batch_size, label_key=F.LABEL_XF, num_epochs=1, shuffle=shuffle, shuffle_seed=seed
        ),
        tft_output.transformed_metadata.schema,
    )
    return dataset.map(
        lambda features, label: ({k: features[k] for k in feature_keys}, tf.reshape(label, [-1])),
        num_parallel_calls=tf.data.AUTOTUNE,
    ).prefetch(tf.data.AUTOTUNE)


def catalog_stats(
    file_pattern: List[str],
    data_accessor: tfx.components.DataAccessor,
    tft_output: tft.TFTransformOutput,
    num_items: int,
) -> Tuple[float, List[bytes]]:
    """One pass over the training split: the global mean rating and each vocabulary item's title."""
    dataset = data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(batch_size=8192, num_epochs=1, shuffle=False),
        tft_output.transformed_metadata.schema,
    )
    titles: List[bytes] = [b""] * num_items
    total, count = 0.0, 0
    for batch in dataset.as_numpy_iterator():
        labels = batch[F.LABEL_XF].reshape(-1)
        total += float(labels.sum())
        count += labels.size
        for index, title in zip(batch[F.ITEM_INDEX].reshape(-1), batch[F.TITLE_XF].reshape(-1)):
            if index < num_items:
                titles[index] = title
    if count == 0:
        raise ValueError("the training split is empty")
    return total / count, titles


# TFX calls this by name (Trainer's `run_fn`).
def run_fn(fn_args: tfx.components.FnArgs) -> None:
    config = TrainingConfig.from_custom_config(fn_args.custom_config)
    model_module = models.get(config.model)
    tf.keras.utils.set_random_seed(config.seed)
    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    num_users = tft_output.vocabulary_size_by_name(F.USER_VOCAB) + F.OOV_BUCKETS
    num_catalog_items = tft_output.vocabulary_size_by_name(F.ITEM_VOCAB)
    global_mean, titles = catalog_stats(fn_args.train_files, fn_args.data_accessor, tft_output, num_catalog_items)
    logging.info("training %s: %d users, %d items, global mean %.3f", config.model, num_users - F.OOV_BUCKETS,
                 num_catalog_items, global_mean)

    def dataset(files, shuffle):
        return input_fn(files, fn_args.data_accessor, tft_output, model_module.FEATURE_KEYS,
                        config.batch_size, shuffle, config.seed)

    train, evaluation = dataset(fn_args.train_files, True), dataset(fn_args.eval_files, False)
    steps_per_epoch = None
    if fn_args.train_steps:
        steps_per_epoch = max(1, fn_args.train_steps // config.epochs)
        train = train.repeat()

    model = model_module.build(num_users, num_catalog_items + F.OOV_BUCKETS, global_mean, config)
    model.compile(
        optimizer=tf.keras.optimizers.Adam(config.learning_rate),
        loss=tf.keras.losses.MeanSquaredError(),
        metrics=[tf.keras.metrics.RootMeanSquaredError(name="rmse"), tf.keras.metrics.MeanAbsoluteError(name="mae")],
    )
    model.fit(
        train,
        validation_data=evaluation,
        epochs=config.epochs,
        steps_per_epoch=steps_per_epoch,
        validation_steps=fn_args.eval_steps,
        verbose=2,
        callbacks=[
            tf.keras.callbacks.EarlyStopping(
                monitor="val_rmse", patience=config.early_stopping_patience, restore_best_weights=True
            ),
            tf.keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir),
        ],
    )
    serving = signatures.build(model, tft_output, titles)
    model.save(fn_args.serving_model_dir, save_format="tf", signatures=serving)
