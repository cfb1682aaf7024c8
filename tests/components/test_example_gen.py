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
        # Slices for the Evaluator: one rating each here, so every user and item is in the lowest bucket.
        assert {_values(e, F.USER_ACTIVITY)[0] for e in examples} == {"<10"}
        assert {_values(e, F.ITEM_POPULARITY)[0] for e in examples} == {"<10"}

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



def _check_splits(root, kind, check, eval_fraction=0.25):
    """Runs the executor's split on Beam and hands `check` {split name: [(user, timestamp), ...]}."""
    from google.protobuf import json_format
    from tfx.proto import example_gen_pb2

    from components.example_gen import Executor, split_custom_config

    exec_properties = {
        "input_base": str(root),
        "input_config": json_format.MessageToJson(example_gen_pb2.Input(
            splits=[example_gen_pb2.Input.Split(name="single_split", pattern=F.INTERACTIONS_FILE)])),
        "output_config": json_format.MessageToJson(example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(
            splits=[example_gen_pb2.SplitConfig.Split(name="train", hash_buckets=3),
                    example_gen_pb2.SplitConfig.Split(name="eval", hash_buckets=1)]))),
        "custom_config": json_format.MessageToJson(split_custom_config(kind, eval_fraction)),
    }

    def matcher(rows):
        grouped = {}
        for name, user, ts in rows:
            grouped.setdefault(name, []).append((user, ts))
        check(grouped)

    with beam.Pipeline() as p:
        splits = Executor().GenerateExamplesByBeam(p, exec_properties)
        tagged = [examples | f"Tag{name}" >> beam.Map(
            lambda e, n=name: (n, _values(e, F.USER_ID)[0], _values(e, F.TIMESTAMP)[0]))
            for name, examples in splits.items()]
        assert_that(tagged | beam.Flatten(), matcher)


def _history(users=6, per_user=8):
    rows = ["user_id,item_id,rating,timestamp"]
    for u in range(users):
        for k in range(per_user):  # interleaved clocks: users' histories overlap in time
            rows.append(f"u{u},i{(u + k) % 2 + 1},3.0,{1000 + 37 * k + 11 * u}")
    return "\n".join(rows) + "\n"


@pytest.mark.parametrize("kind", ["user-time", "time", "leave-last-one-out"])
def test_time_splits_put_every_eval_interaction_after_the_users_train_interactions(tmp_path, kind):
    _write(tmp_path, interactions=_history())

    def check(splits):
        assert sum(len(v) for v in splits.values()) == 48 and len(splits["eval"]) > 0
        users = {u for u, _ in splits["train"]}
        for user in users:
            train_times = [t for u, t in splits["train"] if u == user]
            eval_times = [t for u, t in splits["eval"] if u == user]
            assert all(e > t for e in eval_times for t in train_times), (user, train_times, eval_times)
        if kind != "time":  # 25 % of each user's 8 ratings, or the newest one
            expected = {"user-time": 2, "leave-last-one-out": 1}[kind]
            assert {sum(1 for u, _ in splits["eval"] if u == user) for user in users} == {expected}
        else:  # one global cut-off
            assert max(t for _, t in splits["train"]) < min(t for _, t in splits["eval"])

    _check_splits(tmp_path, kind, check)


def test_unknown_split_is_refused():
    from components.example_gen import split_custom_config

    with pytest.raises(ValueError, match="unknown split 'random'"):
        split_custom_config("random", 0.1)


def test_non_utf8_rows_are_reported_with_the_file(tmp_path):
    (tmp_path / F.ITEMS_FILE).write_text(ITEMS, encoding="utf-8")
    (tmp_path / F.INTERACTIONS_FILE).write_bytes(INTERACTIONS.encode() + "u5,i1,4.0,9\nu6,Caf\xe9,3.0,9\n".encode("latin-1"))
    with pytest.raises(Exception, match="interactions.csv: row .* is not UTF-8"):
        with beam.Pipeline() as p:
            _ = p | _JoinedRatingsToExample({"input_base": str(tmp_path)}, F.INTERACTIONS_FILE)


@pytest.mark.parametrize("content, message", [
    (b"", "header must be"),
    (b"user_id,item_id,timestamp\nu1,i1,5\n", "header must be user_id,item_id,rating,timestamp"),
    ("user_id,item_id,rating,timestamp\n".encode("utf-16"), "not UTF-8 text"),
])
def test_empty_files_missing_columns_and_other_encodings_fail_fast(tmp_path, content, message):
    path = tmp_path / F.INTERACTIONS_FILE
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        check_header(str(path), F.INTERACTION_COLUMNS)


def test_count_buckets():
    assert [F.count_bucket(n, (10, 50)) for n in (1, 9, 10, 49, 50, 500)] == [
        "<10", "<10", "10-49", "10-49", ">=50", ">=50"]
