"""The Trainer's example reader gives the tensors TFX's own reader (TFXIO) gives, faster."""
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_transform.tf_metadata import schema_utils
from tfx_bsl.public import tfxio

from components import example_files

SPEC = {"user_id": tf.io.FixedLenFeature([1], tf.string), "rating": tf.io.FixedLenFeature([1], tf.float32),
        "genres": tf.io.VarLenFeature(tf.string)}


def _example(n: int) -> bytes:
    feature = {"user_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[f"u{n}".encode()])),
               "rating": tf.train.Feature(float_list=tf.train.FloatList(value=[n / 10])),
               "genres": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"g"] * (n % 3)))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


@pytest.fixture()
def split(tmp_path):
    directory = tmp_path / "Split-train"
    directory.mkdir()
    for part, numbers in enumerate((range(0, 25), range(25, 60))):  # two files, read in name order
        with tf.io.TFRecordWriter(str(directory / f"data_tfrecord-0000{part}-of-00002.gz"), "GZIP") as writer:
            for n in numbers:
                writer.write(_example(n))
    return [os.path.join(str(directory), "*")], schema_utils.schema_from_feature_spec(SPEC)


def _columns(dataset):
    out = {"user_id": [], "rating": [], "genres": []}
    for batch in dataset:
        features = batch[0] if isinstance(batch, tuple) else batch
        out["user_id"] += features["user_id"].numpy().reshape(-1).tolist()
        out["genres"] += [len(row) for row in tf.RaggedTensor.from_sparse(features["genres"]).to_list()]
        out["rating"] += (batch[1] if isinstance(batch, tuple) else features["rating"]).numpy().reshape(-1).tolist()
    return out


def _rows(columns):
    return sorted(zip(columns["user_id"], columns["rating"], columns["genres"]))


def test_only_the_columns_asked_for_are_parsed(split):
    pattern, schema = split
    options = tfxio.TensorFlowDatasetOptions(batch_size=64, num_epochs=1, shuffle=False)
    batch = next(iter(example_files.parsed_examples(pattern, schema, options, columns=["user_id"])))
    assert set(batch) == {"user_id"}
    assert batch["user_id"].numpy().reshape(-1).tolist() == [f"u{n}".encode() for n in range(60)]


def test_the_same_tensors_as_tfxio_in_file_order(split):
    pattern, schema = split
    options = tfxio.TensorFlowDatasetOptions(batch_size=8, num_epochs=1, shuffle=False, reader_num_threads=None)
    ours = example_files.parsed_examples(pattern, schema, options)
    theirs = tfxio.TFExampleRecord(pattern, schema=schema).TensorFlowDataset(options)
    got, expected = _columns(ours), _columns(theirs)
    assert _rows(got) == _rows(expected)
    # One file after the other, whatever the machine's cores (TFXIO interleaves as many files as there are cores)
    assert got["user_id"] == [f"u{n}".encode() for n in range(60)]
    assert got["genres"] == [n % 3 for n in range(60)]
    first = next(iter(ours))
    assert isinstance(first["genres"], tf.SparseTensor) and first["user_id"].shape == (8, 1)


def test_label_key_batches_and_shuffle(split):
    pattern, schema = split
    labelled = example_files.parsed_examples(pattern, schema, tfxio.TensorFlowDatasetOptions(
        batch_size=16, num_epochs=1, shuffle=False, label_key="rating", drop_final_batch=True))
    batches = list(labelled)
    assert len(batches) == 3 and all("rating" not in features for features, _ in batches)  # 60 // 16, last dropped
    assert np.allclose(batches[0][1].numpy().reshape(-1), np.arange(16) / 10)

    def shuffled(seed):
        return _columns(example_files.parsed_examples(pattern, schema, tfxio.TensorFlowDatasetOptions(
            batch_size=7, num_epochs=1, shuffle=True, shuffle_seed=seed)))["user_id"]

    assert shuffled(1) == shuffled(1) != shuffled(2)
    assert sorted(shuffled(1)) == sorted(f"u{n}".encode() for n in range(60)) != shuffled(1)


def test_no_matching_file_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no examples match"):
        example_files.parsed_examples([str(tmp_path / "Split-eval" / "*")],
                                      schema_utils.schema_from_feature_spec(SPEC),
                                      tfxio.TensorFlowDatasetOptions(batch_size=4))


def test_compression_follows_the_file_names():
    assert example_files.compression(["a/part-0.gz", "a/part-1.gz"]) == "GZIP"
    assert example_files.compression(["a/part-0.gz", "a/part-1"]) == ""  # a mixed set is not read as gzip
    assert example_files.compression([]) == ""
