"""The joining ExampleGen transform, run on Beam's DirectRunner over small CSV files."""

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that

from components import features as F
from components.example_gen import InputError, _JoinedRatingsToExample, check_header

ITEMS = 'item_id,title,genres,year\ni1,"Heat, Part 1",Action|Crime,1995\ni2,Café,,\n'
INTERACTIONS = "user_id,item_id,rating,timestamp\nu1,i1,4.5,100\nu2,i2,3.0,200\nu3,i9,1.0,300\n"


def _write(root, interactions=INTERACTIONS, items=ITEMS):
    (root / F.INTERACTIONS_FILE).write_text(interactions, encoding="utf-8")
    (root / F.ITEMS_FILE).write_text(items, encoding="utf-8")


def _values(example, key):
    feature = example.features.feature[key]
    kind = feature.WhichOneof("kind")
    values = list(getattr(feature, kind).value)
    return [v.decode() if isinstance(v, bytes) else v for v in values]


def test_item_attributes_are_joined_into_each_rating(tmp_path):
    _write(tmp_path)

    def check(examples):
        by_user = {_values(e, F.USER_ID)[0]: e for e in examples}
        assert sorted(by_user) == ["u1", "u2", "u3"]
        e = by_user["u1"]
        assert _values(e, F.TITLE) == ["Heat, Part 1"] and _values(e, F.GENRES) == ["Action", "Crime"]
        assert _values(e, F.YEAR) == [1995] and _values(e, F.RATING) == [4.5] and _values(e, F.TIMESTAMP) == [100]
        assert _values(by_user["u2"], F.TITLE) == ["Café"] and _values(by_user["u2"], F.GENRES) == []
        assert _values(by_user["u2"], F.YEAR) == [0]
        # An item missing from items.csv still yields an example, with empty attributes.
        assert _values(by_user["u3"], F.TITLE) == [""] and _values(by_user["u3"], F.ITEM_ID) == ["i9"]

    with beam.Pipeline() as p:
        examples = p | _JoinedRatingsToExample({"input_base": str(tmp_path)}, F.INTERACTIONS_FILE)
        assert_that(examples, check)


def test_wrong_header_is_reported_with_the_file(tmp_path):
    _write(tmp_path, interactions="user,item,rating,timestamp\nu1,i1,4,1\n")
    with pytest.raises(InputError, match=r"interactions.csv: header must be user_id,item_id,rating,timestamp"):
        check_header(str(tmp_path / F.INTERACTIONS_FILE), F.INTERACTION_COLUMNS)


def test_malformed_row_fails_the_beam_job_naming_the_file(tmp_path):
    _write(tmp_path, interactions=INTERACTIONS + "u4,i1,not-a-number,5\n")
    with pytest.raises(Exception, match="bad rating or timestamp"):
        with beam.Pipeline() as p:
            _ = p | _JoinedRatingsToExample({"input_base": str(tmp_path)}, F.INTERACTIONS_FILE)

