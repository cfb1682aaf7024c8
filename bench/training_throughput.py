"""Training throughput of the Trainer's real input path against the same model fed from memory.

Usage: .venv/bin/python bench/training_throughput.py --pipeline-output output/bench/out_100000
       [--models mf mlp] [--batch-size 1024] [--epochs 10] [--stream-epochs 1] [--repeats 3]
       [--contract DATA_ROOT/contract.json]
       [--out bench/results/training_throughput.json] [--profile-dir output/bench/tf_profile]

Reads the newest Transform output of a finished pipeline run (ML Metadata in <output>/metadata.sqlite,
or the pipeline root's directories) and the data contract that Transform ran with (its custom_config in
ML Metadata, or --contract), builds the DataAccessor the way TFX's Trainer does
(tfx/components/trainer/fn_args_utils.py), and for each model measures examples/second of
`model.fit` over
  - input_fn:          components.trainer.input_fn, as run_fn calls it (dataset construction included);
  - input_fn_streaming the same with in_memory_max_mb=0 (its path for splits too big to hold);
  - input_fn_original  input_fn as it was before this benchmark (copied below), for the before/after;
  - in_memory          the ceiling: the same parsed batches cached in memory first.
ratio = input path / in_memory, measured in the same run: each round fits in_memory and then each input
path, and the reported ratio is the median over rounds of that round's ratio (this 2-core VM's speed
drifts by tens of percent within a minute; pairing cancels most of it).
input_fn and in_memory are timed over the Trainer's epochs (TrainingConfig.epochs: input_fn reads the
split once when it builds the dataset, as in run_fn, and that cost is spread over those epochs); the two
streaming variants cost the same every epoch, so --stream-epochs of them give the same rate for less time.
The profile (each dataset alone, without the model) says where the input time goes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from typing import Callable, Dict, List

warnings.filterwarnings("ignore", category=FutureWarning)
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402
import tensorflow_transform as tft  # noqa: E402
from tfx import v1 as tfx  # noqa: E402
from tfx.components.util import tfxio_utils  # noqa: E402
from tfx.types import artifact_utils  # noqa: E402
from tfx.utils import io_utils  # noqa: E402
from tfx_bsl.public import tfxio  # noqa: E402

from bench import common  # noqa: E402
from components import catalog, models, trainer  # noqa: E402
from components import contract as contract_lib  # noqa: E402
from components import features as F  # noqa: E402
from components.models.base import ModelDims  # noqa: E402
from components.training_config import TrainingConfig  # noqa: E402

TARGET_RATIO = 0.7
CHANGES = [  # what components/trainer.input_fn does differently from original_input_fn below
    "Splits up to TrainingConfig.in_memory_input_max_mb (default 64 MiB of TFRecords: ~2.8M examples of this schema, "
    "~100 bytes each once parsed) are read once by components/example_files.py (files in order, "
    "tf.io.parse_example on 8192-example batches on parallel threads), converted to model inputs and kept in memory. Each epoch permutes the whole split in "
    "one gather and slices batch_size batches off it (Dataset.from_tensor_slices, no per-batch function): a "
    "global reshuffle every epoch (stateless_shuffle seeded by one Dataset.random(seed, "
    "rerandomize_each_iteration=True) draw per pass, so reproducible from the seed), where TFXIO shuffled "
    "within a 10,000-example buffer.",
    "Larger splits stream through the same reader, model inputs built by a parallel map, deterministic=False when training (tf.data.Options and the map), prefetch(AUTOTUNE).",
    "Same outputs as before: the (model inputs, rating) structure, batch sizes (the last one short), examples "
    "per epoch, and the eval split's order.",
]


def original_input_fn(file_pattern, data_accessor, tft_output, layout, batch_size, shuffle, seed):
    """components.trainer.input_fn before the tuning (git 762afe8), kept to measure the change against (model
    inputs built by today's catalog.model_inputs, so both paths yield the same structure)."""
    dataset = data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(
            batch_size=batch_size, label_key=F.LABEL_XF, num_epochs=1, shuffle=shuffle, shuffle_seed=seed
        ),
        tft_output.transformed_metadata.schema,
    )
    return dataset.map(
        lambda features, label: (catalog.model_inputs(features, layout), tf.reshape(label, [-1])),
        num_parallel_calls=tf.data.AUTOTUNE,
    ).prefetch(tf.data.AUTOTUNE)


def data_accessor(examples) -> tfx.components.DataAccessor:
    """As tfx.components.trainer.fn_args_utils.get_common_fn_args builds it for run_fn."""
    descriptors = ["Trainer"]
    return tfx.components.DataAccessor(
        tf_dataset_factory=tfxio_utils.get_tf_dataset_factory_from_artifact([examples], descriptors),
        record_batch_factory=tfxio_utils.get_record_batch_factory_from_artifact([examples], descriptors),
        data_view_decode_fn=tfxio_utils.get_data_view_decode_fn_from_artifact([examples], descriptors),
    )


def pipeline_contract(output_dir: str, path: str = "") -> contract_lib.DataContract:
    """The data contract the run's Transform used: `path` when given, else the custom_config of the newest
    completed Transform execution in ML Metadata (what the Trainer read too)."""
    if path:
        with tf.io.gfile.GFile(path, "r") as f:
            return contract_lib.DataContract.from_json(f.read())
    store_path = os.path.join(output_dir, "metadata.sqlite")
    if os.path.exists(store_path):
        from ml_metadata import metadata_store
        from ml_metadata.proto import metadata_store_pb2

        config = metadata_store_pb2.ConnectionConfig()
        config.sqlite.filename_uri = store_path
        config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
        store = metadata_store.MetadataStore(config)
        executions = [e for t in store.get_execution_types() if t.name.endswith(".Transform")
                      for e in store.get_executions_by_type(t.name)
                      if e.last_known_state == metadata_store_pb2.Execution.COMPLETE]
        for execution in sorted(executions, key=lambda e: e.id, reverse=True):
            raw = execution.custom_properties.get("custom_config")
            if raw is not None and raw.string_value:
                return contract_lib.from_custom_config(json.loads(raw.string_value))
    raise FileNotFoundError(f"{output_dir}: no Transform execution with a data contract in ML Metadata; "
                            f"pass --contract DATA_ROOT/contract.json")


def _count(dataset: tf.data.Dataset, epochs: int) -> int:
    examples = 0
    for _ in range(epochs):
        for _, label in dataset:
            examples += int(label.shape[0])
    return examples


def dataset_rate(make: Callable[[], tf.data.Dataset], epochs: int, repeats: int) -> float:
    """Examples/s of iterating the dataset alone (construction included), median of `repeats`."""
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        examples = _count(make(), epochs)
        rates.append(examples / (time.perf_counter() - started))
    return statistics.median(rates)


def compiled_model(name: str, dims: ModelDims, batch_size: int) -> tf.keras.Model:
    """The model and compile settings run_fn uses."""
    config = TrainingConfig(model=name, batch_size=batch_size)
    model = models.get(name).build(dims, config)
    model.compile(
        optimizer=tf.keras.optimizers.Adam(config.learning_rate),
        loss=tf.keras.losses.MeanSquaredError(),
        metrics=[tf.keras.metrics.RootMeanSquaredError(name="rmse"), tf.keras.metrics.MeanAbsoluteError(name="mae")],
    )
    return model


def fit_rate(model: tf.keras.Model, make: Callable[[], tf.data.Dataset], epochs: int, examples: int) -> float:
    started = time.perf_counter()
    model.fit(make(), epochs=epochs, verbose=0)
    return epochs * examples / (time.perf_counter() - started)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline-output", default=os.path.join("output", "bench", "out_100000"),
                        help="a pipeline output directory (holds metadata.sqlite and pipeline_root/)")
    parser.add_argument("--models", nargs="+", default=["mf", "mlp"])
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=TrainingConfig.epochs,
                        help="epochs per timed fit of input_fn and in_memory (the Trainer's default)")
    parser.add_argument("--stream-epochs", type=int, default=1, help="epochs per timed fit of the streaming variants")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per variant (median)")
    parser.add_argument("--contract", default="",
                        help="the run's data contract (default: the Transform's, from ML Metadata)")
    parser.add_argument("--profile-dir", default="",
                        help="also record a TF profiler trace of the original input path there (TensorBoard)")
    parser.add_argument("--out", default=os.path.join("bench", "results", "training_throughput.json"))
    args = parser.parse_args(argv)

    examples_artifact, graph_uri = common.transform_output(args.pipeline_output)
    accessor = data_accessor(examples_artifact)
    tft_output = tft.TFTransformOutput(graph_uri)
    layout = catalog.content_layout(pipeline_contract(args.pipeline_output, args.contract), tft_output)
    num_users, num_items = catalog.vocabulary_sizes(tft_output)
    train_files = [io_utils.all_files_pattern(uri) for uri in artifact_utils.get_split_uris([examples_artifact], "train")]
    seed, bs = TrainingConfig.seed, args.batch_size
    print(f"transformed examples {examples_artifact.uri}, transform graph {graph_uri}", flush=True)

    def real():
        return trainer.input_fn(train_files, tft_output, layout, bs, True, seed)

    def streaming():  # the path for splits over TrainingConfig.in_memory_input_max_mb
        return trainer.input_fn(train_files, tft_output, layout, bs, True, seed, in_memory_max_mb=0)

    def original():
        return original_input_fn(train_files, accessor, tft_output, layout, bs, True, seed)

    # The ceiling: the same parsed batches, cached in memory by one pass before any timing.
    ceiling = original_input_fn(train_files, accessor, tft_output, layout, bs, False, seed).cache()
    examples = _count(ceiling, 1)
    ceiling = ceiling.prefetch(tf.data.AUTOTUNE)

    def in_memory():
        return ceiling

    # in_memory next to input_fn in every round: each round's ratio pairs two fits seconds apart.
    variants = {"in_memory": in_memory, "input_fn": real, "input_fn_streaming": streaming,
                "input_fn_original": original}

    # --- profile: each stage of the input path alone, no model ----------------------------------------------
    schema = tft_output.transformed_metadata.schema
    files = [f for pattern in train_files for f in tf.io.gfile.glob(pattern)]
    spec = tft_output.transformed_feature_spec()

    def tfxio_dataset(**options):
        return accessor.tf_dataset_factory(train_files, tfxio.TensorFlowDatasetOptions(
            batch_size=bs, label_key=F.LABEL_XF, num_epochs=1, shuffle=True, shuffle_seed=seed, **options), schema)

    def read_only():
        return tf.data.TFRecordDataset(files, "GZIP").batch(bs).map(lambda s: ({}, s))

    def read_parse():
        return tf.data.TFRecordDataset(files, "GZIP").batch(bs).map(
            lambda s: (lambda p: (p, p.pop(F.LABEL_XF)))(tf.io.parse_example(s, spec)))

    stages = {
        "tfrecord_read_only": read_only,
        "tfrecord_read_and_parse": read_parse,
        "tfxio_default_options": lambda: tfxio_dataset(),
        "tfxio_sequential_reader": lambda: tfxio_dataset(reader_num_threads=None),
        **{name: make for name, make in variants.items()},
    }
    profile = {}
    for name, make in stages.items():  # two passes where construction is a one-off, one for the slow streams
        passes = 2 if name in ("input_fn", "in_memory", "tfrecord_read_only", "tfrecord_read_and_parse") else 1
        profile[name] = round(dataset_rate(make, passes, 1))
        print(f"profile {name}: {profile[name]} examples/s (dataset alone)", flush=True)

    trace = None
    if args.profile_dir:
        try:
            model = compiled_model(args.models[0], ModelDims(num_users, num_items, layout.item_width, 3.5, layout.user_width), bs)
            model.fit(original().take(3), verbose=0)
            tf.profiler.experimental.start(args.profile_dir)
            model.fit(original().take(30), verbose=0)
            tf.profiler.experimental.stop()
            trace = args.profile_dir
        except Exception as e:  # the trace is a convenience; the numbers above do not depend on it
            trace = f"not recorded: {type(e).__name__}: {e}"

    # --- training: model.fit on each variant, rounds interleaved ---------------------------------------------
    dims = ModelDims(num_users, num_items, layout.item_width, 3.5, layout.user_width)
    rates: Dict[str, Dict[str, List[float]]] = {}
    compiled = {}
    for name in args.models:  # one model per name: every variant yields the same element spec, one trace
        compiled[name] = compiled_model(name, dims, bs)
        compiled[name].fit(in_memory().take(5), verbose=0)  # tracing and one-time start-up, outside the timing
    for round_ in range(args.repeats):
        for name in args.models:
            for variant, make in variants.items():
                epochs = args.epochs if variant in ("input_fn", "in_memory") else args.stream_epochs
                rate = fit_rate(compiled[name], make, epochs, examples)
                rates.setdefault(name, {}).setdefault(variant, []).append(rate)
                print(f"round {round_ + 1}: {name} {variant}: {rate:.0f} examples/s", flush=True)

    rows = []
    for name in args.models:
        mine = rates[name]
        median = {variant: statistics.median(values) for variant, values in mine.items()}

        def paired(variant):  # the median over rounds of (variant / in_memory of the same round)
            return statistics.median(v / c for v, c in zip(mine[variant], mine["in_memory"]))

        def cell(variant):
            return {"eps": round(median[variant]), "ratio": round(paired(variant), 3),
                    "rounds_eps": [round(v) for v in mine[variant]]}

        ratio = paired("input_fn")
        row = {"model": name, "batch_size": bs, "reference": "in_memory (same batches cached in memory)",
               "in_memory_eps": round(median["in_memory"]), "input_path_eps": round(median["input_fn"]),
               "ratio": round(ratio, 3), "ratio_of_medians": round(median["input_fn"] / median["in_memory"], 3),
               "rounds_ratio": [round(v / c, 3) for v, c in zip(mine["input_fn"], mine["in_memory"])],
               "target": TARGET_RATIO, "met": ratio >= TARGET_RATIO,
               "before": cell("input_fn_original"), "streaming": cell("input_fn_streaming"),
               "input_path_rounds_eps": [round(v) for v in mine["input_fn"]],
               "in_memory_rounds_eps": [round(v) for v in mine["in_memory"]]}
        rows.append(row)
        print(f"{name}: input_fn {row['input_path_eps']} / in-memory {row['in_memory_eps']}: ratio {row['ratio']} "
              f"(rounds {row['rounds_ratio']}; before {row['before']['ratio']}, streaming {row['streaming']['ratio']})",
              flush=True)

    step_floor = min(r["in_memory_eps"] for r in rows)
    tfxio_rate, sequential = profile["tfxio_default_options"], profile["tfxio_sequential_reader"]
    before = ", ".join(f"{r['model']} {r['before']['ratio']}" for r in rows)
    findings = [
        f"Dataset alone (no model): TFXIO as the Trainer called it delivers {tfxio_rate:,} examples/s, the original "
        f"input_fn {profile['input_fn_original']:,}; the models alone train at {step_floor:,}-"
        f"{max(r['in_memory_eps'] for r in rows):,} examples/s from memory. The input path, not the step, was the "
        f"bottleneck (before the change: {before} of the in-memory rate).",
        f"Reading and gunzipping the same file alone: {profile['tfrecord_read_only']:,} examples/s; reading and "
        f"tf.io.parse_example of every feature: {profile['tfrecord_read_and_parse']:,} "
        f"({profile['tfrecord_read_and_parse'] / tfxio_rate:.1f}x TFXIO's rate): "
        + ("decoding is not the main cost, the way TFXIO's dataset is assembled is."
           if profile["tfrecord_read_and_parse"] >= 1.5 * tfxio_rate else "decoding is most of the cost."),
        f"TFXIO with reader_num_threads=None (a sequential interleave) instead of its AUTOTUNE default: "
        f"{sequential:,} vs {tfxio_rate:,} examples/s ({sequential / tfxio_rate:.1f}x). TFXIO's parallel interleave "
        f"hands every single record between threads before batching (tfx_bsl dataset_util.make_tf_record_dataset); "
        f"on 2 cores that per-record hand-off dominated. Its parse then runs on one thread (parse_example_dataset "
        f"without num_parallel_calls; TFExampleRecord ignores parser_num_threads and sloppy_ordering), so a tuned "
        f"stream still costs single-thread CPU per example, every epoch, on the same 2 cores the training step uses.",
        f"Hence the streaming path alone reaches {profile['input_fn_streaming']:,} examples/s but only "
        f"{', '.join(str(r['streaming']['ratio']) for r in rows)} of the in-memory rate under training: only not "
        f"re-reading the split every epoch gets near the ceiling.",
    ]
    result = {
        "benchmark": "training_throughput", "machine": common.machine(), "pipeline_output": args.pipeline_output,
        "transformed_examples": examples_artifact.uri, "transform_graph": graph_uri,
        "train_examples": examples, "epochs_per_fit": args.epochs, "stream_epochs_per_fit": args.stream_epochs,
        "repeats": args.repeats, "target_ratio": TARGET_RATIO,
        "profile_dataset_alone_eps": profile, "profile_findings": findings, "tf_profiler_trace": trace,
        "changes": CHANGES, "rows": rows,
    }
    common.write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
