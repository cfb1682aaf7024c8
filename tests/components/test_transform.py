"""preprocessing_fn run by tft's Beam implementation on a handful of rows, for a contract with one attribute
of each kind: a number with a missing value, a category, a multi-valued list and free text."""

import math
import tempfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from components import contract as contract_lib
from components import features as F
from components.contract import Columns, DataContract, Feature
from components.transform import MIN_ID_FREQUENCY, NUMERIC_CLIP, preprocessing_fn

CONTRACT = DataContract(
    columns=Columns(rating=F.RATING, timestamp=F.TIMESTAMP), items_file=F.ITEMS_FILE, users_file=F.USERS_FILE,
    item_features=(Feature("year", contract_lib.NUMERIC), Feature("studio", contract_lib.CATEGORICAL),
                   Feature("genres", contract_lib.MULTI, separator="|"), Feature("description", contract_lib.TEXT)),
    user_features=(Feature("age", contract_lib.NUMERIC),), title="description", rating_range=(1.0, 5.0))
RAW_SPEC = {
    F.USER_ID: tf.io.FixedLenFeature([1], tf.string),
    F.ITEM_ID: tf.io.FixedLenFeature([1], tf.string),
    F.RATING: tf.io.FixedLenFeature([1], tf.float32),
    "year": tf.io.FixedLenFeature([1], tf.float32),
    "studio": tf.io.FixedLenFeature([1], tf.string),
    "genres": tf.io.VarLenFeature(tf.string),
    "description": tf.io.FixedLenFeature([1], tf.string),
    "age": tf.io.FixedLenFeature([1], tf.float32),
}
NAN = float("nan")
YEARS = [1990.0, 2000.0, NAN, 2010.0]  # the third item's year is missing (ExampleGen writes NaN)
ROWS = [
    {F.USER_ID: [b"u1"], F.ITEM_ID: [b"i1"], F.RATING: [4.0], "year": [YEARS[0]], "studio": [b"north"],
     "genres": [b"Drama"], "description": [b"A quiet drama, by the sea"], "age": [30.0]},
    {F.USER_ID: [b"u1"], F.ITEM_ID: [b"i2"], F.RATING: [3.0], "year": [YEARS[1]], "studio": [b"south"],
     "genres": [b"Drama", b"Comedy"], "description": [b"A loud comedy by the river"], "age": [30.0]},
    {F.USER_ID: [b"u2"], F.ITEM_ID: [b"i1"], F.RATING: [5.0], "year": [YEARS[2]], "studio": [b"north"],
     "genres": [b"Drama"], "description": [b"The sea, the sea!"], "age": [NAN]},
    {F.USER_ID: [b"u3"], F.ITEM_ID: [b"i3"], F.RATING: [2.0], "year": [YEARS[3]], "studio": [b"north"],
     "genres": [], "description": [b""], "age": [50.0]},
]


def _transform(tmp_dir, min_frequency=None, contract=CONTRACT, spec=RAW_SPEC, rows=ROWS):
    config = {contract_lib.CONFIG_KEY: contract.to_json()}
    if min_frequency is not None:
        config[MIN_ID_FREQUENCY] = min_frequency
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))
    with tft_beam.Context(temp_dir=tempfile.mkdtemp(dir=tmp_dir)):
        (out_rows, _), transform_fn = (rows, metadata) | (
            tft_beam.AnalyzeAndTransformDataset(lambda inputs: preprocessing_fn(inputs, config))
        )
    out = str(tmp_dir / "transform_output")
    _ = transform_fn | tft_beam.WriteTransformFn(out)
    return out_rows, tft.TFTransformOutput(out)


def _first(value) -> float:
    """A transformed scalar (flat outputs arrive as numbers, [1]-shaped ones as arrays)."""
    return float(np.reshape(value, -1)[0])


@pytest.fixture(scope="module")
def transformed(tmp_path_factory):
    return _transform(tmp_path_factory.mktemp("transform"))


def test_ids_become_frequency_ordered_indices_with_named_vocabularies(transformed):
    rows, output = transformed
    # Most frequent first: u1 (2 rows) and i1 (2 rows) get index 0.
    users, items = output.vocabulary_by_name(F.USER_VOCAB), output.vocabulary_by_name(F.ITEM_VOCAB)
    assert users[0] == b"u1" and items[0] == b"i1" and len(users) == len(items) == 3
    assert [users[int(_first(r[F.USER_INDEX]))] for r in rows] == [b"u1", b"u1", b"u2", b"u3"]
    assert [items[int(_first(r[F.ITEM_INDEX]))] for r in rows] == [b"i1", b"i2", b"i1", b"i3"]
    assert [_first(r[F.LABEL_XF]) for r in rows] == [4.0, 3.0, 5.0, 2.0]


def test_every_categorical_multi_valued_and_text_feature_has_its_vocabulary(transformed):
    rows, output = transformed
    assert output.vocabulary_by_name(F.vocab_name("studio")) == [b"north", b"south"]  # by frequency
    assert output.vocabulary_by_name(F.vocab_name("genres")) == [b"Drama", b"Comedy"]
    # Text: lower-cased words seen at least twice (TEXT_MIN_FREQUENCY), punctuation dropped.
    assert set(output.vocabulary_by_name(F.vocab_name("description"))) == {b"sea", b"the", b"by", b"a"}
    assert output.vocabulary_by_name(F.vocab_name("description"))[0] == b"the"  # 4 occurrences
    studio = [int(r[F.transformed_name("studio")]) for r in rows]
    assert studio == [0, 1, 0, 0]
    assert [sorted(r[F.transformed_name("genres")].tolist()) for r in rows] == [[0], [0, 1], [0], []]
    # The title column is carried raw for the catalogue.
    assert rows[0][F.ITEM_TITLE_XF] == b"A quiet drama, by the sea"


def test_text_becomes_bag_of_words_indices_with_rare_words_in_the_oov_bucket(transformed):
    rows, output = transformed
    vocab = [w.decode() for w in output.vocabulary_by_name(F.vocab_name("description"))]
    oov = len(vocab)
    words = [[vocab[i] if i < oov else "<oov>" for i in r[F.transformed_name("description")].tolist()] for r in rows]
    assert words[0] == ["a", "<oov>", "<oov>", "by", "the", "sea"]  # "quiet", "drama" seen once
    assert words[2] == ["the", "sea", "the", "sea"]
    assert words[3] == []  # an empty description: no words


def test_numbers_are_z_scores_with_the_missing_value_at_zero_and_flagged(transformed):
    rows, _ = transformed
    present = np.array([y for y in YEARS if not math.isnan(y)])
    expected = (present - present.mean()) / present.std()  # over the present values only
    year = np.array([r[F.transformed_name("year")] for r in rows])
    assert year.shape == (4, 2)
    np.testing.assert_allclose(year[[0, 1, 3], 0], expected, atol=1e-4)
    np.testing.assert_array_equal(year[:, 1], [0.0, 0.0, 1.0, 0.0])  # the missing flag
    assert year[2, 0] == 0.0  # imputed at the mean, not a huge negative z for a 0 placeholder
    assert np.all(np.abs(year[:, 0]) <= NUMERIC_CLIP) and np.all(np.isfinite(year))
    age = np.array([r[F.transformed_name("age")] for r in rows])  # a user attribute, same encoding
    np.testing.assert_array_equal(age[:, 1], [0.0, 0.0, 1.0, 0.0])
    assert age[2, 0] == 0.0 and age[3, 0] > 1.0 > 0.0 > age[0, 0]


def test_unseen_values_map_to_the_oov_bucket_in_the_exported_graph(transformed):
    _, output = transformed
    layer = output.transform_features_layer()
    out = layer({F.USER_ID: tf.constant([[b"u2"], [b"stranger"]]), F.ITEM_ID: tf.constant([[b"nope"], [b"i2"]])})
    # Vocab size 3, one OOV bucket: the unseen id gets index 3, known ids keep theirs.
    assert out[F.USER_INDEX].numpy().reshape(-1).tolist()[1] == 3
    assert out[F.ITEM_INDEX].numpy().reshape(-1).tolist() == [3, output.vocabulary_by_name(F.ITEM_VOCAB).index(b"i2")]
    # Only the fed inputs are needed: the label and item attributes are pruned away.
    assert F.LABEL_XF not in out
    raw = {"studio": tf.constant([[b"east"], [b"south"]]),
           "genres": tf.sparse.from_dense(tf.constant([[b"Western", b""], [b"Comedy", b""]])),
           "year": tf.constant([[2000.0], [NAN]])}
    attrs = layer({F.USER_ID: tf.constant([[b"u1"], [b"u1"]]), F.ITEM_ID: tf.constant([[b"i1"], [b"i1"]]), **raw})
    assert attrs[F.transformed_name("studio")].numpy().reshape(-1).tolist() == [2, 1]  # 2 = OOV (2 studios)
    genres = tf.sparse.to_dense(attrs[F.transformed_name("genres")], default_value=-1).numpy().tolist()
    assert genres == [[2, -1], [1, -1]] or genres == [[2], [1]]  # Western: OOV (2 genres); Comedy: 1
    year = attrs[F.transformed_name("year")].numpy()
    assert year[1].tolist() == [0.0, 1.0] and year[0, 1] == 0.0  # the serving graph imputes and flags too


def test_rare_ids_share_the_oov_bucket_under_a_frequency_threshold(tmp_path):
    rows, output = _transform(tmp_path, min_frequency=2)
    # Only u1 and i1 have two interactions; the others fall into the OOV bucket (index = vocabulary size = 1).
    assert output.vocabulary_by_name(F.USER_VOCAB) == [b"u1"]
    assert [int(_first(r[F.USER_INDEX])) for r in rows] == [0, 0, 1, 1]
    assert [int(_first(r[F.ITEM_INDEX])) for r in rows] == [0, 1, 0, 1]


IMPLICIT_SPEC = {key: RAW_SPEC[key] for key in (F.USER_ID, F.ITEM_ID)}
IMPLICIT_ROWS = [{F.USER_ID: [b"u1"], F.ITEM_ID: [b"i1"]}, {F.USER_ID: [b"u2"], F.ITEM_ID: [b"i1"]}]


def test_implicit_feedback_labels_every_interaction_one(tmp_path):
    rows, _ = _transform(tmp_path, contract=DataContract(), spec=IMPLICIT_SPEC, rows=IMPLICIT_ROWS)
    assert [_first(r[F.LABEL_XF]) for r in rows] == [1.0, 1.0]


def test_implicit_feedback_with_a_weight_column_labels_by_the_weight(tmp_path):
    spec = {**IMPLICIT_SPEC, F.WEIGHT: tf.io.FixedLenFeature([1], tf.float32)}
    rows = [{**row, F.WEIGHT: [w]} for row, w in zip(IMPLICIT_ROWS, (1.0, 3.0))]
    rows, _ = _transform(tmp_path, contract=DataContract(columns=Columns(weight=F.WEIGHT)), spec=spec, rows=rows)
    assert [_first(r[F.LABEL_XF]) for r in rows] == [1.0, 3.0]


def test_the_contract_is_required():
    with pytest.raises(ValueError, match="needs the data contract"):
        preprocessing_fn({F.USER_ID: tf.constant([[b"u"]]), F.ITEM_ID: tf.constant([[b"i"]])}, {})
