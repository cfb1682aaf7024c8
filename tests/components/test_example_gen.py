"""The joining ExampleGen transform, run on Beam's DirectRunner over small CSV files, with the data contract
inferred from those files as `recsys run` infers it."""

import math

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that
from google.protobuf import json_format

from components import contract as contract_lib
from components import example_gen
from components import features as F
from components.example_gen import InputError, _JoinedRatingsToExample, check_files

# A description with a comma, a double quote and a newline inside one quoted field (RFC 4180).
DESCRIPTION = 'A heist, a "cop"\nand a long chase across the city'
ITEMS = ('item_id,title,genres,year,studio,description\n'
         'i1,"Heat, Part 1",Action|Crime,1995,north,"A heist, a ""cop""\nand a long chase across the city"\n'
         'i2,Café,,,south,a quiet film about coffee and its people\n'
         'i3,Toys,Animation|Children,1995,north,toys come alive when nobody is watching them\n')
USERS = "user_id,age,country\nu1,34,DE\nu2,,FR\n"
INTERACTIONS = "user_id,item_id,rating,timestamp\nu1,i1,4.5,100\nu2,i2,3.0,200\nu3,i9,1.0,300\nu1,i3,2.0,400\n"


def _write(root, interactions=INTERACTIONS, items=ITEMS, users=USERS):
    (root / F.INTERACTIONS_FILE).write_text(interactions, encoding="utf-8")
    if items is not None:
        (root / F.ITEMS_FILE).write_text(items, encoding="utf-8")
    if users is not None:
        (root / F.USERS_FILE).write_text(users, encoding="utf-8")


def _values(example, key):
    feature = example.features.feature[key]
    kind = feature.WhichOneof("kind")
    values = list(getattr(feature, kind).value) if kind else []
    return [v.decode() if isinstance(v, bytes) else v for v in values]


def _exec_properties(root, contract, kind="hash", eval_fraction=0.0, validation_fraction=0.0):
    config = example_gen.custom_config(contract, kind, eval_fraction, validation_fraction)
    return {"input_base": str(root), "custom_config": json_format.MessageToJson(config)}


def _examples(root, check, contract=None):
    """Runs the join on Beam over the files under root (contract inferred unless given) and checks the examples."""
    contract = contract or contract_lib.infer(str(root))
    with beam.Pipeline() as p:
        examples = p | _JoinedRatingsToExample(_exec_properties(root, contract), F.INTERACTIONS_FILE)
        assert_that(examples, check)


def test_the_contract_infers_each_column_kind_from_the_files(tmp_path):
    _write(tmp_path)
    contract = contract_lib.infer(str(tmp_path))
    kinds = {f.name: (f.kind, f.separator) for f in contract.item_features}
    assert kinds == {"title": ("categorical", ""), "genres": ("multi", "|"), "year": ("numeric", ""),
                     "studio": ("categorical", ""), "description": ("text", "")}
    assert {f.name: f.kind for f in contract.user_features} == {"age": "numeric", "country": "categorical"}
    assert contract.title == "title" and contract.has_rating and contract.has_timestamp
    assert contract.rating_range == (1.0, 4.5)  # from the data, not from a constant


def test_item_and_user_attributes_are_joined_into_each_interaction_by_kind(tmp_path):
    _write(tmp_path)

    def check(examples):
        by_pair = {(_values(e, F.USER_ID)[0], _values(e, F.ITEM_ID)[0]): e for e in examples}
        assert sorted(by_pair) == [("u1", "i1"), ("u1", "i3"), ("u2", "i2"), ("u3", "i9")]
        e = by_pair["u1", "i1"]
        assert _values(e, "title") == ["Heat, Part 1"] and _values(e, "genres") == ["Action", "Crime"]
        assert _values(e, "year") == [1995.0] and _values(e, "studio") == ["north"]
        assert _values(e, "description") == [DESCRIPTION]  # comma, quote and newline round-trip
        assert _values(e, F.RATING) == [4.5] and _values(e, F.TIMESTAMP) == [100]
        assert _values(e, "age") == [34.0] and _values(e, "country") == ["DE"]
        # Missing cells: a number is NaN (Transform imputes and flags it), a multi-valued cell an empty list.
        e = by_pair["u2", "i2"]
        assert _values(e, "title") == ["Café"] and _values(e, "genres") == []
        assert len(_values(e, "year")) == 1 and math.isnan(_values(e, "year")[0])
        assert math.isnan(_values(e, "age")[0]) and _values(e, "country") == ["FR"]
        # A user missing from users.csv and an item missing from items.csv: an example with missing attributes.
        e = by_pair["u3", "i9"]
        assert _values(e, "title") == [""] and _values(e, "studio") == [""] and _values(e, "genres") == []
        assert math.isnan(_values(e, "year")[0]) and math.isnan(_values(e, "age")[0])
        assert _values(e, "country") == [""]
        # Slices for the Evaluator: u1 rated two items, the rest one; all in the lowest bucket.
        assert {_values(e, F.USER_ACTIVITY)[0] for e in examples} == {"<10"}
        assert {_values(e, F.ITEM_POPULARITY)[0] for e in examples} == {"<10"}

    _examples(tmp_path, check)


def test_parquet_files_are_joined_like_csv_including_list_columns(tmp_path):
    """interactions.parquet / items.parquet / users.parquet: typed columns (integer ids, float prices with nulls,
    a list<string> column as a multi-valued attribute) give the same examples as their CSV would."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"user_id": [1, 2, 1], "item_id": [10, 20, 20], "timestamp": [100, 200, 300]}),
                   str(tmp_path / "interactions.parquet"))
    pq.write_table(pa.table({"item_id": [10, 20], "tags": [["red", "sale"], []], "price": [9.5, None],
                             "description": [DESCRIPTION, "plain"]}), str(tmp_path / "items.parquet"))
    pq.write_table(pa.table({"user_id": [1, 2], "segment": ["student", "family"]}), str(tmp_path / "users.parquet"))
    contract = contract_lib.infer(str(tmp_path))
    assert contract.interactions_file == "interactions.parquet" and contract.items_file == "items.parquet"
    kinds = {f.name: (f.kind, f.separator) for f in contract.item_features + contract.user_features}
    assert kinds["tags"] == ("multi", "") and kinds["price"] == ("numeric", "") and kinds["segment"][0] == "categorical"
    check_files(str(tmp_path), contract)

    def check(examples):
        by_pair = {(_values(e, F.USER_ID)[0], _values(e, F.ITEM_ID)[0]): e for e in examples}
        assert sorted(by_pair) == [("1", "10"), ("1", "20"), ("2", "20")]  # integer ids become their digits
        e = by_pair["1", "10"]
        assert _values(e, "tags") == ["red", "sale"] and _values(e, "price") == [9.5]
        assert _values(e, "segment") == ["student"] and _values(e, F.TIMESTAMP) == [100]
        e = by_pair["2", "20"]
        assert _values(e, "tags") == [] and math.isnan(_values(e, "price")[0]) and _values(e, "segment") == ["family"]

    with beam.Pipeline() as p:
        examples = p | _JoinedRatingsToExample(_exec_properties(tmp_path, contract), contract.interactions_file)
        assert_that(examples, check)


def test_implicit_feedback_without_a_rating_column_writes_no_rating(tmp_path):
    _write(tmp_path, interactions="user_id,item_id,timestamp\nu1,i1,100\nu2,i2,200\n", users=None)
    contract = contract_lib.infer(str(tmp_path))
    assert not contract.has_rating and contract.rating_range is None and not contract.users_file

    def check(examples):
        assert len(examples) == 2
        assert all(F.RATING not in e.features.feature for e in examples)
        assert sorted(_values(e, F.TIMESTAMP)[0] for e in examples) == [100, 200]

    _examples(tmp_path, check, contract)


def test_iso_8601_timestamps_become_epoch_seconds(tmp_path):
    _write(tmp_path, interactions="user_id,item_id,timestamp\nu1,i1,2024-01-02T03:04:05Z\n"
                                  "u2,i2,2024-01-02T03:04:05+02:00\nu1,i3,1970-01-01\n")

    def check(examples):
        assert sorted(_values(e, F.TIMESTAMP)[0] for e in examples) == [0, 1704164645 - 7200, 1704164645]

    _examples(tmp_path, check)
    with pytest.raises(InputError, match="timestamp 'yesterday' is neither a number nor an ISO 8601 date"):
        example_gen.timestamp_seconds("yesterday", "interactions.csv")


def test_a_duplicate_item_row_is_an_error_naming_the_id(tmp_path):
    _write(tmp_path, items=ITEMS + "i2,Café again,,1999,east,another film about coffee and its people\n")
    contract = contract_lib.infer(str(tmp_path))
    with pytest.raises(InputError, match=r"items.csv: item_id 'i2' appears in more than one row \(record 4\)") as error:
        check_files(str(tmp_path), contract)
    assert "\n" not in str(error.value)
    with pytest.raises(InputError, match="item_id 'i2' appears in more than one row"):  # the Beam job checks it too
        _examples(tmp_path, lambda examples: None, contract)


def test_a_duplicate_user_row_is_an_error_naming_the_id(tmp_path):
    _write(tmp_path, users=USERS + "u1,35,DE\n")
    with pytest.raises(InputError, match="users.csv: user_id 'u1' appears in more than one row"):
        check_files(str(tmp_path), contract_lib.infer(str(tmp_path)))


def test_an_interactions_column_not_in_the_contract_is_an_error_naming_it(tmp_path):
    _write(tmp_path)
    contract = contract_lib.infer(str(tmp_path))
    # A column added after the contract was reviewed: the run stops naming it, in one line.
    _write(tmp_path, interactions="user_id,item_id,rating,timestamp,channel\nu1,i1,4.5,100,web\n")
    with pytest.raises(InputError, match="interactions.csv: unknown column 'channel'") as error:
        check_files(str(tmp_path), contract)
    assert "\n" not in str(error.value)
    # Inferring a contract from such a file names it too (interactions carry only the roles).
    with pytest.raises(contract_lib.ContractError, match="unknown column 'channel'"):
        contract_lib.infer(str(tmp_path))


def test_an_items_column_missing_from_the_file_is_an_error_naming_it(tmp_path):
    _write(tmp_path)
    contract = contract_lib.infer(str(tmp_path))
    _write(tmp_path, items="item_id,title,genres,year,description\ni1,A,Drama,1990,a film\n")
    with pytest.raises(InputError, match="items.csv: no column 'studio'"):
        check_files(str(tmp_path), contract)


def test_malformed_row_fails_the_beam_job_naming_the_file(tmp_path):
    _write(tmp_path)
    contract = contract_lib.infer(str(tmp_path))
    _write(tmp_path, interactions=INTERACTIONS + "u4,i1,not-a-number,5\n")
    with pytest.raises(Exception, match=r"interactions.csv: interaction \('u4', 'i1'\): rating 'not-a-number' is not"):
        _examples(tmp_path, lambda examples: None, contract)


def test_a_non_number_in_a_numeric_item_column_names_the_item(tmp_path):
    _write(tmp_path)
    contract = contract_lib.infer(str(tmp_path))
    _write(tmp_path, items=ITEMS.replace("i3,Toys,Animation|Children,1995", "i3,Toys,Animation|Children,soon"))
    with pytest.raises(Exception, match=r"items.csv: item_id 'i3': year 'soon' is not a number"):
        _examples(tmp_path, lambda examples: None, contract)


def _check_splits(root, kind, check, eval_fraction=0.25, validation_fraction=0.25, span=None):
    """Runs the executor's split on Beam and hands `check` {split name: [(user, timestamp), ...]}."""
    from tfx.proto import example_gen_pb2

    from components.example_gen import Executor

    buckets = {F.TRAIN_SPLIT: 2, F.VALIDATION_SPLIT: 1, F.EVAL_SPLIT: 1}
    exec_properties = {
        **_exec_properties(root, contract_lib.infer(str(root)), kind, eval_fraction, validation_fraction),
        "input_config": json_format.MessageToJson(example_gen_pb2.Input(
            splits=[example_gen_pb2.Input.Split(name="single_split", pattern=F.INTERACTIONS_FILE)])),
        "output_config": json_format.MessageToJson(example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(
            splits=[example_gen_pb2.SplitConfig.Split(name=name, hash_buckets=buckets[name])
                    for name in F.SPLIT_NAMES]))),
    }
    if span is not None:
        exec_properties["span"] = span  # what TFX's driver sets for a `{SPAN}` pattern

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
    _write(tmp_path, interactions="\n".join(rows) + "\n", items=None, users=None)

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


def test_hash_split_depends_on_who_what_and_when_only():
    """Editing an item's attributes (or adding one) never moves an interaction to another split; the user, the
    item and the time do decide it."""
    import tensorflow as tf

    def example(user, item, ts, **attributes):
        e = tf.train.Example()
        e.features.feature[F.USER_ID].bytes_list.value.append(user.encode())
        e.features.feature[F.ITEM_ID].bytes_list.value.append(item.encode())
        e.features.feature[F.TIMESTAMP].int64_list.value.append(ts)
        for key, value in attributes.items():
            e.features.feature[key].bytes_list.value.append(value.encode())
        return e

    bounds = [8, 9, 10]
    pairs = [(f"u{u}", f"i{i}", 1000 + u * 7 + i) for u in range(40) for i in range(10)]
    plain = [example_gen._hash_partition(example(*p), bounds) for p in pairs]
    edited = [example_gen._hash_partition(example(*p, genres="Comedy", studio="renamed"), bounds) for p in pairs]
    assert plain == edited
    assert 0.7 < plain.count(0) / len(plain) < 0.9 and plain.count(1) > 15 and plain.count(2) > 15
    later = [example_gen._hash_partition(example(u, i, ts + 1), bounds) for u, i, ts in pairs]
    assert later != plain  # the time is part of the key: a repeat interaction is split on its own


def test_the_user_hash_split_holds_out_whole_users_and_varies_them_by_span(tmp_path):
    """A held-out user's whole span is in one split (nothing of it fitted); another span holds out other users."""
    _write(tmp_path, interactions=_history(users=80, per_user=5))

    def check(span):
        def inner(splits):  # runs inside Beam (a copy): it can only assert
            by_user = {}
            for name, pairs in splits.items():
                for user, _ in pairs:
                    by_user.setdefault(user, set()).add(name)
            assert all(len(names) == 1 for names in by_user.values()), by_user
            held = {name: {u for u, names in by_user.items() if name in names} for name in F.SPLIT_NAMES}
            assert sum(len(users) for users in held.values()) == 80
            # buckets 2:1:1 of 80 users
            assert 25 < len(held[F.TRAIN_SPLIT]) < 55 and 8 < len(held[F.EVAL_SPLIT]) < 32, held
            assert all(len(splits[name]) == 5 * len(held[name]) for name in F.SPLIT_NAMES)
        return inner

    _check_splits(tmp_path, "user-hash", check(3), span=3)
    import tensorflow as tf

    def held_out(span):
        out = set()
        for u in range(80):
            e = tf.train.Example()
            e.features.feature[F.USER_ID].bytes_list.value.append(f"u{u}".encode())
            if example_gen._user_partition(e, [8, 9, 10], span) == 2:
                out.add(u)
        return out

    assert held_out(3) and held_out(4) and held_out(3) != held_out(4)


def test_a_span_window_with_an_earlier_span_holds_users_out_by_default():
    from pipeline import config as C

    contract = _contract(user="user_id", item="item_id", timestamp="timestamp")
    assert C.resolve_split("auto", contract) == "user-time"
    assert C.resolve_split("auto", contract, window_history=True) == "user-hash"
    assert C.resolve_split("user-time", contract, window_history=True) == "user-time"
    assert C.PipelineConfig(contract=contract, span=3, window=7, earlier_spans=2).split == "user-hash"
    assert C.PipelineConfig(contract=contract, span=1, window=7, earlier_spans=0).split == "user-time"
    assert C.PipelineConfig(contract=contract, span=3, window=1, earlier_spans=2).split == "user-time"


def _contract(**columns):
    return contract_lib.DataContract(columns=contract_lib.Columns(**columns))


def test_split_fractions_that_leave_nothing_to_train_on_are_refused():
    with pytest.raises(ValueError, match="leave nothing to train on"):
        example_gen.custom_config(_contract(timestamp="timestamp"), "time", 0.5, 0.5)


def test_unknown_split_is_refused():
    with pytest.raises(ValueError, match="unknown split 'random'"):
        example_gen.custom_config(_contract(), "random", 0.1, 0.1)


def test_a_time_split_without_a_timestamp_column_is_refused_in_one_line():
    with pytest.raises(ValueError, match="split 'user-time' orders interactions by time, but interactions.csv has "
                                         "no timestamp column"):
        example_gen.custom_config(_contract(), "user-time", 0.1, 0.1)
    example_gen.custom_config(_contract(), "hash", 0.1, 0.1)  # hashing needs no clock


def test_the_executor_refuses_a_config_without_the_contract(tmp_path):
    with pytest.raises(ValueError, match="needs the data contract"):
        example_gen.contract_of({"input_base": str(tmp_path)})


def test_non_utf8_rows_are_reported_with_the_file(tmp_path):
    _write(tmp_path)
    contract = contract_lib.infer(str(tmp_path))
    (tmp_path / F.INTERACTIONS_FILE).write_bytes(INTERACTIONS.encode() + "u5,i1,4.0,9\nu6,Caf\xe9,3.0,9\n".encode("latin-1"))
    with pytest.raises(Exception, match="interactions.csv: not UTF-8 text"):
        _examples(tmp_path, lambda examples: None, contract)


@pytest.mark.parametrize("content, message", [
    (b"", "empty file"),
    (b"user_id,item_id,timestamp\nu1,i1,5\n", "interactions.csv: no column 'rating'"),
    ("user_id,item_id,rating,timestamp\n".encode("utf-16"), "not UTF-8 text"),
])
def test_empty_files_missing_columns_and_other_encodings_fail_fast(tmp_path, content, message):
    _write(tmp_path)
    contract = contract_lib.infer(str(tmp_path))
    (tmp_path / F.INTERACTIONS_FILE).write_bytes(content)
    with pytest.raises(InputError, match=message) as error:
        check_files(str(tmp_path), contract)
    assert "\n" not in str(error.value)


def test_count_buckets():
    assert [F.count_bucket(n, (10, 50)) for n in (1, 9, 10, 49, 50, 500)] == [
        "<10", "<10", "10-49", "10-49", ">=50", ">=50"]


def test_the_executor_writes_every_split_as_gzipped_tf_examples_with_tfx_artifact_properties(tmp_path):
    """Do is TFX's, less the global shuffle before the writer: the splits, files and artifact properties
    downstream components read are the ones TFX's ExampleGen writes."""
    import glob
    import json

    import tensorflow as tf
    from tfx.components.util import examples_utils
    from tfx.proto import example_gen_pb2
    from tfx.types import standard_artifacts

    from components.example_gen import Executor

    data = tmp_path / "data"
    data.mkdir()
    _write(data, interactions=_history(users=40, per_user=10))
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "examples")
    exec_properties = {
        **_exec_properties(data, contract_lib.infer(str(data)), "user-time", 0.1, 0.1),
        "input_config": json_format.MessageToJson(example_gen_pb2.Input(
            splits=[example_gen_pb2.Input.Split(name="single_split", pattern=F.INTERACTIONS_FILE)])),
        "output_config": json_format.MessageToJson(example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(
            splits=[example_gen_pb2.SplitConfig.Split(name=name, hash_buckets=1) for name in F.SPLIT_NAMES]))),
        "output_data_format": example_gen_pb2.FORMAT_TF_EXAMPLE,
        "output_file_format": example_gen_pb2.FORMAT_TFRECORDS_GZIP,
    }
    Executor().Do({}, {"examples": [examples]}, exec_properties)

    assert sorted(json.loads(examples.split_names)) == sorted(F.SPLIT_NAMES)
    assert examples_utils.get_payload_format(examples) == example_gen_pb2.FORMAT_TF_EXAMPLE
    assert examples_utils.get_file_format(examples) == "tfrecords_gzip"
    counts = {}
    for name in F.SPLIT_NAMES:
        files = glob.glob(str(tmp_path / "examples" / f"Split-{name}" / "data_tfrecord-*.gz"))
        records = [tf.train.Example.FromString(r.numpy())
                   for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
        assert all(_values(r, F.USER_ID) for r in records)
        counts[name] = len(records)
    assert sum(counts.values()) == 400 and counts[F.EVAL_SPLIT] == counts[F.VALIDATION_SPLIT] == 40, counts
