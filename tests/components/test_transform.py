"""preprocessing_fn run by tft's Beam implementation on a handful of rows."""

import tempfile

import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import schema_utils

from components import features as F
from components.transform import preprocessing_fn

RAW_SPEC = {
    F.USER_ID: tf.io.FixedLenFeature([1], tf.string),
    F.ITEM_ID: tf.io.FixedLenFeature([1], tf.string),
    F.RATING: tf.io.FixedLenFeature([1], tf.float32),
    F.TITLE: tf.io.FixedLenFeature([1], tf.string),
    F.YEAR: tf.io.FixedLenFeature([1], tf.int64),
    F.GENRES: tf.io.VarLenFeature(tf.string),
}
ROWS = [
    {F.USER_ID: [b"u1"], F.ITEM_ID: [b"i1"], F.RATING: [4.0], F.TITLE: [b"A"], F.YEAR: [1999], F.GENRES: [b"Drama"]},
    {F.USER_ID: [b"u1"], F.ITEM_ID: [b"i2"], F.RATING: [3.0], F.TITLE: [b"B"], F.YEAR: [2001],
     F.GENRES: [b"Drama", b"Comedy"]},
    {F.USER_ID: [b"u2"], F.ITEM_ID: [b"i1"], F.RATING: [5.0], F.TITLE: [b"A"], F.YEAR: [1999], F.GENRES: [b"Drama"]},
]


def _transform(tmp_dir, custom_config=None):
    metadata = schema_utils.schema_from_feature_spec(RAW_SPEC)
    from tensorflow_transform.tf_metadata import dataset_metadata

    with tft_beam.Context(temp_dir=tempfile.mkdtemp(dir=tmp_dir)):
        (rows, _), transform_fn = (ROWS, dataset_metadata.DatasetMetadata(metadata)) | (
            tft_beam.AnalyzeAndTransformDataset(lambda inputs: preprocessing_fn(inputs, custom_config))
        )
    out = str(tmp_dir / "transform_output")
    _ = transform_fn | tft_beam.WriteTransformFn(out)
    return rows, tft.TFTransformOutput(out)


def test_ids_become_frequency_ordered_indices_with_named_vocabularies(tmp_path):
    rows, output = _transform(tmp_path)
    # Most frequent first: u1 (2 rows) and i1 (2 rows) get index 0.
    assert [int(r[F.USER_INDEX][0]) for r in rows] == [0, 0, 1]
    assert [int(r[F.ITEM_INDEX][0]) for r in rows] == [0, 1, 0]
    assert output.vocabulary_by_name(F.USER_VOCAB) == [b"u1", b"u2"]
    assert output.vocabulary_by_name(F.ITEM_VOCAB) == [b"i1", b"i2"]
    assert output.vocabulary_by_name(F.GENRE_VOCAB) == [b"Drama", b"Comedy"]
    assert [float(r[F.LABEL_XF][0]) for r in rows] == [4.0, 3.0, 5.0]


def test_unseen_ids_map_to_the_oov_bucket_in_the_exported_graph(tmp_path):
    _, output = _transform(tmp_path)
    layer = output.transform_features_layer()
    out = layer({F.USER_ID: tf.constant([[b"u2"], [b"stranger"]]), F.ITEM_ID: tf.constant([[b"nope"], [b"i2"]])})
    # Vocab size 2, one OOV bucket: the unseen id gets index 2, known ids keep theirs.
    assert out[F.USER_INDEX].numpy().reshape(-1).tolist() == [1, 2]
    assert out[F.ITEM_INDEX].numpy().reshape(-1).tolist() == [2, 1]
    # Only the fed inputs are needed: the label and item attributes are pruned away.
    assert F.LABEL_XF not in out


def test_rare_ids_share_the_oov_bucket_under_a_frequency_threshold(tmp_path):
    from components.transform import MIN_ID_FREQUENCY

    rows, output = _transform(tmp_path, {MIN_ID_FREQUENCY: 2})
    # Only u1 and i1 have two ratings; u2 and i2 fall into the OOV bucket (index = vocabulary size = 1).
    assert output.vocabulary_by_name(F.USER_VOCAB) == [b"u1"]
    assert [int(r[F.USER_INDEX][0]) for r in rows] == [0, 0, 1]
    assert [int(r[F.ITEM_INDEX][0]) for r in rows] == [0, 1, 0]
