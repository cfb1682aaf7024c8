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



def _check_splits(root, kind, check, eval_fraction=0.25, validation_fraction=0.25):
    """Runs the executor's split on Beam and hands `check` {split name: [(user, timestamp), ...]}."""
    from google.protobuf import json_format
    from tfx.proto import example_gen_pb2

    from components.example_gen import Executor, split_custom_config

    buckets = {F.TRAIN_SPLIT: 2, F.VALIDATION_SPLIT: 1, F.EVAL_SPLIT: 1}
    exec_properties = {
        "input_base": str(root),
        "input_config": json_format.MessageToJson(example_gen_pb2.Input(
            splits=[example_gen_pb2.Input.Split(name="single_split", pattern=F.INTERACTIONS_FILE)])),
        "output_config": json_format.MessageToJson(example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(
            splits=[example_gen_pb2.SplitConfig.Split(name=name, hash_buckets=buckets[name])
                    for name in F.SPLIT_NAMES]))),
        "custom_config": json_format.MessageToJson(split_custom_config(kind, eval_fraction, validation_fraction)),
    }

    def matcher(rows):
        grouped = {name: [] for name in F.SPLIT_NAMES}
        for name, user, ts in rows:
            grouped[name].append((user, ts))
        check(grouped)

    with beam.Pipeline() as p:
        splits = Executor().GenerateExamplesByBeam(p, exec_properties)
        assert sorted(splits) == sorted(F.SPLIT_NAMES)
        tagged = [examples | f"Tag{name}" >> beam.Map(
            lambda e, n=name: (n, _values(e, F.USER_ID)[0], _values(e, F.TIMESTAMP)[0]))
            for name, examples in splits.items()]
        assert_that(tagged | beam.Flatten(), matcher)


def _history(users=6, per_user=8, short_users=0):
    rows = ["user_id,item_id,rating,timestamp"]
    for u in range(users):
        for k in range(per_user):  # interleaved clocks: users' histories overlap in time
            rows.append(f"u{u},i{(u + k) % 2 + 1},3.0,{1000 + 37 * k + 11 * u}")
    for u in range(short_users):  # two interactions each: too few to split
        rows += [f"s{u},i1,3.0,{5000 + u}", f"s{u},i2,3.0,{5001 + u}"]
    return "\n".join(rows) + "\n"


def _times(split, user=None):
    return [t for u, t in split if user is None or u == user]


@pytest.mark.parametrize("kind", ["user-time", "time", "leave-last-one-out"])
def test_time_splits_put_validation_after_train_and_eval_after_validation(tmp_path, kind):
    _write(tmp_path, interactions=_history())

    def check(splits):
        train, validation, evaluation = (splits[n] for n in F.SPLIT_NAMES)
        assert sum(len(v) for v in splits.values()) == 48 and evaluation and validation
        for user in {u for u, _ in train}:
            before, middle, after = _times(train, user), _times(validation, user), _times(evaluation, user)
            assert all(m > b for m in middle for b in before), (user, before, middle)
            assert all(a > m for a in after for m in middle), (user, middle, after)
            assert all(a > b for a in after for b in before)
        if kind != "time":  # 25 % of each user's 8 interactions, or the newest one (and the one before)
            expected = {"user-time": 2, "leave-last-one-out": 1}[kind]
            for part in (validation, evaluation):
                assert {sum(1 for u, _ in part if u == user) for user in {u for u, _ in train}} == {expected}
        else:  # global cut-offs
            assert max(_times(train)) < min(_times(validation)) <= max(_times(validation)) < min(_times(evaluation))
            assert 0.1 < len(evaluation) / 48 < 0.4 and 0.1 < len(validation) / 48 < 0.4

    _check_splits(tmp_path, kind, check)


@pytest.mark.parametrize("kind", ["user-time", "leave-last-one-out"])
def test_users_with_too_few_interactions_stay_in_train(tmp_path, kind):
    _write(tmp_path, interactions=_history(users=2, short_users=3))

    def check(splits):
        short = [u for name in (F.VALIDATION_SPLIT, F.EVAL_SPLIT) for u, _ in splits[name] if u.startswith("s")]
        assert short == [] and sum(1 for u, _ in splits[F.TRAIN_SPLIT] if u.startswith("s")) == 6
        assert splits[F.EVAL_SPLIT] and splits[F.VALIDATION_SPLIT]

    _check_splits(tmp_path, kind, check)


@pytest.mark.parametrize("kind", ["user-time", "leave-last-one-out", "time"])
def test_interactions_that_share_a_timestamp_are_never_split_apart(tmp_path, kind):
    rows = ["user_id,item_id,rating,timestamp"]
    for u in range(4):  # per user: 4 distinct older times, then 3 interactions at the same newest time
        rows += [f"u{u},i{k},3.0,{100 + k}" for k in range(4)] + [f"u{u},i{k},3.0,500" for k in range(4, 7)]
    _write(tmp_path, interactions="\n".join(rows) + "\n")

    def check(splits):
        where = {}
        for name, pairs in splits.items():
            for user, ts in pairs:
                where.setdefault((user, ts), set()).add(name)
        assert all(len(names) == 1 for names in where.values()), where
        assert {ts for _, ts in splits[F.EVAL_SPLIT]} == {500}
        # Per user, validation takes the newest time before the tie; a global cut-off may land inside it.
        assert splits[F.TRAIN_SPLIT] and (splits[F.VALIDATION_SPLIT] or kind == "time")

    _check_splits(tmp_path, kind, check, eval_fraction=0.15, validation_fraction=0.15)


def test_hash_split_writes_the_three_splits_in_bucket_proportion(tmp_path):
    _write(tmp_path, interactions=_history(users=40, per_user=10))

    def check(splits):
        sizes = {name: len(pairs) for name, pairs in splits.items()}
        assert sum(sizes.values()) == 400
        # buckets 2:1:1 -> 200/100/100, hashing gives or takes a few
        assert 150 < sizes[F.TRAIN_SPLIT] < 250 and 60 < sizes[F.VALIDATION_SPLIT] < 140, sizes
        assert 60 < sizes[F.EVAL_SPLIT] < 140, sizes

    _check_splits(tmp_path, "hash", check)


def test_split_fractions_that_leave_nothing_to_train_on_are_refused():
    from components.example_gen import split_custom_config

    with pytest.raises(ValueError, match="leave nothing to train on"):
        split_custom_config("time", 0.5, 0.5)


def test_unknown_split_is_refused():
    from components.example_gen import split_custom_config

    with pytest.raises(ValueError, match="unknown split 'random'"):
        split_custom_config("random", 0.1, 0.1)


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
