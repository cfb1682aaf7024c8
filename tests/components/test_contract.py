"""The zero-configuration data contract (components/contract.py): kinds and roles inferred from tiny files a
user could have written, one-line errors naming the bad column, and a reviewed contract.json read back as is."""

import csv
import json

import pytest

from components import contract as C
from components import features as F


def _write_csv(path, header, rows):
    """RFC 4180 CSV as users' tools write it: fields with commas, quotes or newlines quoted."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


BRANDS = ("Acme", "Globex", "Initech", "Umbrella")
CATEGORIES = ("Home & Garden", "Toys", "Books", "Sports")
DESCRIPTIONS = (
    'A sturdy, "heavy duty" tool, for the garden and\nthe workshop, with a two-year warranty',
    "Soft, washable plush toy; safe for ages 3 and up, in four colours",
    'The "classic" novel, newly translated, with notes,\nan index and a foreword',
)


def _item_rows(n=40):
    rows = []
    for i in range(n):
        rows.append((
            f"i{i}",
            f"Product number {i} deluxe",  # title: unique multi-word strings
            BRANDS[i % len(BRANDS)],
            CATEGORIES[i % len(CATEGORIES)],
            f"{9.5 + i:.2f}" if i % 5 else "",  # numeric with missing cells
            str(i % 7),  # integers
            "|".join(["red", "green", "blue"][: 1 + i % 3]),
            ";".join(["x", "y", "z"][: 1 + i % 2]),
            DESCRIPTIONS[i % len(DESCRIPTIONS)] + f" (model {i})",
            "",  # an all-empty column
        ))
    return rows


ITEM_HEADER = ("item_id", "title", "brand", "category", "price", "stock", "colours", "tags", "description", "notes")


def _interactions(root, header=("user_id", "item_id", "rating", "timestamp"), n=60, rating=lambda k: str(1 + k % 5)):
    rows = []
    for k in range(n):
        values = {"user_id": f"u{k % 9}", "item_id": f"i{k % 40}", "rating": rating(k),
                  "timestamp": str(1_600_000_000 + k), "weight": str(1 + k % 2)}
        values.update(customer=values["user_id"], sku=values["item_id"], stars=values["rating"],
                      when=values["timestamp"])
        rows.append([values.get(c, f"v{k}") for c in header])
    _write_csv(root / F.INTERACTIONS_FILE, header, rows)


@pytest.fixture
def shop(tmp_path):
    _interactions(tmp_path)
    _write_csv(tmp_path / F.ITEMS_FILE, ITEM_HEADER, _item_rows())
    return tmp_path


def _kinds(features):
    return {f.name: (f.kind, f.separator) for f in features}


def test_item_kinds_are_inferred_from_the_data(shop):
    contract = C.infer(str(shop))
    assert _kinds(contract.item_features) == {
        "title": (C.TEXT, ""),
        "brand": (C.CATEGORICAL, ""),
        "category": (C.CATEGORICAL, ""),
        "price": (C.NUMERIC, ""),
        "stock": (C.NUMERIC, ""),
        "colours": (C.MULTI, "|"),
        "tags": (C.MULTI, ";"),
        "description": (C.TEXT, ""),
        "notes": (C.IGNORE, ""),
    }
    assert contract.title == "title"
    assert contract.items_file == F.ITEMS_FILE and contract.users_file == ""
    # `ignore` features are declared (the user sees them) but models never read them.
    assert "notes" not in {f.name for f in contract.used(contract.item_features)}
    assert "notes" not in contract.drift_features and "description" not in contract.drift_features
    assert {"rating", "brand", "category", "price", "colours"} <= set(contract.drift_features)


def test_quoted_fields_with_commas_quotes_and_newlines_read_back_exactly(shop):
    rows = list(C.read_rows(str(shop / F.ITEMS_FILE)))
    assert len(rows) == 40
    assert rows[0]["description"] == DESCRIPTIONS[0] + " (model 0)"
    assert "\n" in rows[0]["description"] and '"heavy duty"' in rows[0]["description"]
    assert rows[0]["price"] == "" and rows[1]["price"] == "10.50"
    assert len(list(C.read_rows(str(shop / F.ITEMS_FILE), limit=7))) == 7


def test_a_record_with_a_wrong_field_count_is_a_one_line_error(tmp_path):
    (tmp_path / F.ITEMS_FILE).write_text('item_id,title\ni1,"A, quoted" title\ni2,x,y\n')
    with pytest.raises(C.ContractError, match="record 2 has 3 fields, the header 2") as e:
        list(C.read_rows(str(tmp_path / F.ITEMS_FILE)))
    assert "\n" not in str(e.value)


def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    (tmp_path / F.INTERACTIONS_FILE).write_bytes("\ufeffuser_id,item_id\nu1,i1\n".encode("utf-8"))
    contract = C.infer(str(tmp_path))
    assert contract.columns.user == "user_id" and contract.items_file == ""


def test_optional_roles_are_detected_by_name(tmp_path):
    _interactions(tmp_path, header=("user_id", "item_id", "weight", "timestamp"))
    columns = C.infer(str(tmp_path)).columns
    assert columns == C.Columns(user="user_id", item="item_id", rating="", timestamp="timestamp", weight="weight")
    _interactions(tmp_path, header=("item_id", "user_id"))  # any order, nothing optional
    contract = C.infer(str(tmp_path))
    assert contract.columns == C.Columns(user="user_id", item="item_id")
    assert not (contract.has_rating or contract.has_timestamp or contract.has_weight)


def test_role_columns_can_be_mapped(tmp_path):
    _interactions(tmp_path, header=("customer", "sku", "stars", "when"))
    contract = C.infer(str(tmp_path), {"user": "customer", "item": "sku", "rating": "stars", "timestamp": "when"})
    assert contract.columns == C.Columns(user="customer", item="sku", rating="stars", timestamp="when")
    assert contract.rating_range == (1.0, 5.0)


@pytest.mark.parametrize("header, mapping, named", [
    (("customer", "item_id"), {}, "'user_id'"),  # no user column and no mapping
    (("user_id", "sku"), {}, "'item_id'"),
    (("user_id", "item_id", "clicks"), {}, "'clicks'"),  # a column the contract cannot place
    (("customer", "item_id"), {"user": "client"}, "'client'"),  # a mapping to a column the file lacks
])
def test_missing_or_unknown_interaction_columns_are_one_line_errors(tmp_path, header, mapping, named):
    _interactions(tmp_path, header=header)
    with pytest.raises(C.ContractError) as e:
        C.infer(str(tmp_path), mapping)
    message = str(e.value)
    assert named in message and F.INTERACTIONS_FILE in message and "\n" not in message, message


def test_no_interactions_file_is_an_error(tmp_path):
    with pytest.raises(C.ContractError, match="no interactions.csv or interactions.parquet"):
        C.infer(str(tmp_path))


def test_items_without_their_id_column_is_an_error(tmp_path):
    _interactions(tmp_path)
    _write_csv(tmp_path / F.ITEMS_FILE, ("sku", "brand"), [("i1", "Acme")])
    with pytest.raises(C.ContractError, match="no 'item_id' column"):
        C.infer(str(tmp_path))


def test_users_file_is_optional_and_its_features_are_inferred(shop):
    _write_csv(shop / F.USERS_FILE, ("user_id", "age", "country", "segment", "category"),
               [(f"u{k}", str(20 + k) if k % 4 else "", ("NL", "FR", "DE")[k % 3], ("new", "loyal")[k % 2],
                 CATEGORIES[k % 4]) for k in range(30)])
    contract = C.infer(str(shop))
    assert contract.users_file == F.USERS_FILE
    assert _kinds(contract.user_features) == {
        "age": (C.NUMERIC, ""), "country": (C.CATEGORICAL, ""), "segment": (C.CATEGORICAL, ""),
        # the same column name as an item feature: prefixed, so the joined example has both
        "user_category": (C.CATEGORICAL, ""),
    }
    (feature,) = [f for f in contract.user_features if f.name == "user_category"]
    assert feature.column == "category"


def test_users_file_follows_the_mapped_user_column(tmp_path):
    _interactions(tmp_path, header=("customer", "item_id"))
    _write_csv(tmp_path / F.USERS_FILE, ("customer", "age"), [("u1", "30"), ("u2", "41")])
    contract = C.infer(str(tmp_path), {"user": "customer"})
    assert _kinds(contract.user_features) == {"age": (C.NUMERIC, "")}


def test_a_feature_named_like_a_reserved_key_is_prefixed(tmp_path):
    _interactions(tmp_path, header=("user_id", "item_id"))
    _write_csv(tmp_path / F.ITEMS_FILE, ("item_id", "rating", "timestamp", "brand"),
               [(f"i{k}", f"{3 + k % 3 * 0.5}", str(1_500_000_000 + k), BRANDS[k % 4]) for k in range(20)])
    _write_csv(tmp_path / F.USERS_FILE, ("user_id", "weight"), [(f"u{k}", str(60 + k)) for k in range(9)])
    contract = C.infer(str(tmp_path))
    items = {f.name: f for f in contract.item_features}
    assert set(items) == {"item_rating", "item_timestamp", "brand"}
    assert items["item_rating"].column == "rating" and items["item_rating"].kind == C.NUMERIC
    assert items["brand"].source == ""  # not renamed: no source needed
    assert [(f.name, f.column) for f in contract.user_features] == [("user_weight", "weight")]
    assert not contract.has_rating and contract.rating_range is None  # an item attribute is not the label


def test_rating_range_comes_from_the_data(tmp_path):
    _interactions(tmp_path, rating=lambda k: str(1 + k % 10))
    assert C.infer(str(tmp_path)).rating_range == (1.0, 10.0)
    _interactions(tmp_path, rating=lambda k: f"{0.5 + (k % 4) * 0.5}")
    assert C.infer(str(tmp_path)).rating_range == (0.5, 2.0)
    _interactions(tmp_path, header=("user_id", "item_id", "timestamp"))
    assert C.infer(str(tmp_path)).rating_range is None


def test_a_rating_that_is_not_a_number_is_a_one_line_error(tmp_path):
    _interactions(tmp_path, rating=lambda k: "good" if k == 7 else "4")
    with pytest.raises(C.ContractError, match=r"record 8: rating 'good' is not a number"):
        C.infer(str(tmp_path))


def test_json_round_trip(shop):
    contract = C.infer(str(shop))
    text = contract.to_json()
    assert C.DataContract.from_json(text) == contract
    assert C.DataContract.from_json(C.DataContract.from_json(text).to_json()).to_json() == text
    implicit = C.DataContract(columns=C.Columns(), item_features=(C.Feature("genres", C.MULTI, separator="|"),))
    assert C.DataContract.from_json(implicit.to_json()) == implicit


def test_json_with_an_unknown_field_or_kind_is_a_one_line_error(shop):
    values = json.loads(C.infer(str(shop)).to_json())
    with pytest.raises(C.ContractError) as e:
        C.DataContract.from_dict({**values, "lables": []})
    assert "unknown contract field(s): lables" == str(e.value)
    values["item_features"][0]["kind"] = "date"
    with pytest.raises(C.ContractError) as e:
        C.DataContract.from_dict(values)
    message = str(e.value)
    assert "'date'" in message and f"'{values['item_features'][0]['name']}'" in message and "\n" not in message


def test_load_or_infer_writes_once_then_reads_the_reviewed_file_unchanged(shop):
    path = shop / C.CONTRACT_FILE
    contract, inferred = C.load_or_infer(str(shop))
    assert inferred and path.exists()
    assert C.DataContract.from_json(path.read_text()) == contract
    # The user reviews it: the description becomes `ignore`.
    values = json.loads(path.read_text())
    for feature in values["item_features"]:
        if feature["name"] == "description":
            feature["kind"] = C.IGNORE
    edited = json.dumps(values, indent=4)
    path.write_text(edited)
    # New data with an extra column does not re-infer: the reviewed contract stands (check_files flags it).
    _write_csv(shop / F.ITEMS_FILE, ITEM_HEADER + ("colour",), [r + ("red",) for r in _item_rows()])
    again, inferred = C.load_or_infer(str(shop))
    assert not inferred
    assert {f.name: f.kind for f in again.item_features}["description"] == C.IGNORE
    assert "colour" not in {f.name for f in again.item_features}
    assert path.read_text() == edited  # read, never rewritten


def test_load_or_infer_names_the_file_of_a_bad_contract(shop, tmp_path):
    path = tmp_path / "reviewed.json"
    path.write_text('{"columns": {"user": "user_id", "item": "item_id"}, "item_features": '
                    '[{"name": "brand", "kind": "categorial"}]}')
    with pytest.raises(C.ContractError) as e:
        C.load_or_infer(str(shop), path=str(path))
    message = str(e.value)
    assert message.startswith(str(path)) and "'categorial'" in message and "\n" not in message
    assert not (shop / C.CONTRACT_FILE).exists()  # an explicit path: nothing written beside the data


def test_parquet_files_are_inferred_and_read(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({
        "user_id": [f"u{k % 5}" for k in range(30)],
        "item_id": [f"i{k % 10}" for k in range(30)],
        "rating": pa.array([float(1 + k % 10) for k in range(30)], pa.float64()),
        "timestamp": pa.array([1_600_000_000 + k for k in range(30)], pa.int64()),
    }), str(tmp_path / "interactions.parquet"))
    pq.write_table(pa.table({
        "item_id": [f"i{k}" for k in range(10)],
        "genres": pa.array([["Drama", "Comedy"][: 1 + k % 2] if k != 3 else [] for k in range(10)],
                           pa.list_(pa.string())),
        "price": pa.array([None if k == 4 else 1.5 * k for k in range(10)], pa.float64()),
        "stock": pa.array([k for k in range(10)], pa.int64()),
        "brand": [BRANDS[k % 4] for k in range(10)],
    }), str(tmp_path / "items.parquet"))
    contract = C.infer(str(tmp_path))
    assert contract.interactions_file == "interactions.parquet" and contract.items_file == "items.parquet"
    assert contract.columns == C.Columns(rating="rating", timestamp="timestamp")
    assert contract.rating_range == (1.0, 10.0)
    assert _kinds(contract.item_features) == {"genres": (C.MULTI, ""), "price": (C.NUMERIC, ""),
                                              "stock": (C.NUMERIC, ""), "brand": (C.CATEGORICAL, "")}
    assert C.header(str(tmp_path / "items.parquet")) == ["item_id", "genres", "price", "stock", "brand"]
    rows = list(C.read_rows(str(tmp_path / "items.parquet")))
    assert rows[1]["genres"] == ["Drama", "Comedy"] and rows[3]["genres"] == []
    assert rows[4]["price"] is None and C.is_missing(rows[4]["price"]) and rows[2]["stock"] == 2
    assert len(list(C.read_rows(str(tmp_path / "interactions.parquet"), limit=4))) == 4


def test_csv_is_preferred_when_both_formats_exist(tmp_path):
    _interactions(tmp_path)
    (tmp_path / "interactions.parquet").write_bytes(b"not read")
    assert C.infer(str(tmp_path)).interactions_file == F.INTERACTIONS_FILE


def test_describe_says_what_the_run_will_read(shop):
    explicit = C.describe(C.infer(str(shop)))
    assert "rating=rating" in explicit and "implicit" not in explicit
    assert "colours (multi |)" in explicit and "price (numeric)" in explicit
    _interactions(shop, header=("user_id", "item_id", "timestamp"))
    implicit = C.describe(C.infer(str(shop)))
    assert "implicit feedback" in implicit.splitlines()[0]
    assert "user features" not in implicit  # no users file, no line


def test_a_file_that_is_not_parquet_is_a_one_line_error(tmp_path):
    (tmp_path / "interactions.parquet").write_bytes(b"user_id,item_id\nu1,i1\n")
    with pytest.raises(C.ContractError) as e:
        C.infer(str(tmp_path))
    message = str(e.value)
    assert "interactions.parquet: not a Parquet file" in message and "\n" not in message, message
