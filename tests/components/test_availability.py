"""Which items may be recommended (issue 19): the newest items file of record, less the items it marks inactive."""

import pytest

from components import availability
from components import contract as contract_lib
from components import features as F
from components import spans


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_an_active_column_is_inferred_as_a_flag_not_an_attribute(tmp_path):
    _write(tmp_path / F.INTERACTIONS_FILE, "user_id,item_id\nu1,i1\n")
    _write(tmp_path / F.ITEMS_FILE, "item_id,title,Active\ni1,One,true\ni2,Two,false\n")
    contract = contract_lib.infer(str(tmp_path))
    assert contract.active == "Active"
    (flag,) = [f for f in contract.item_features if f.column == "Active"]
    assert flag.kind == contract_lib.IGNORE and flag not in contract.used(contract.item_features)
    assert contract_lib.DataContract.from_json(contract.to_json()) == contract  # the reviewed copy reads back
    assert "column Active says which items may be recommended" in contract_lib.describe(contract)
    with pytest.raises(contract_lib.ContractError, match="active: 'live' is not a column of the items file"):
        contract_lib.DataContract.from_dict({**contract.to_dict(), "active": "live"})


def test_active_items_are_those_listed_and_not_marked_inactive(tmp_path):
    _write(tmp_path / F.ITEMS_FILE, "item_id,active\ni1,true\ni2,FALSE\ni3,\ni4,0\ni5,yes\n")
    source = availability.CatalogueSource(root=str(tmp_path), pattern=F.INTERACTIONS_FILE, items_file=F.ITEMS_FILE,
                                          item_column=F.ITEM_ID, active_column="active")
    # An empty cell: nothing says the item is retired.
    assert availability.active_items(source, source.path()) == {"i1", "i3", "i5"}
    assert availability.active_items(availability.CatalogueSource(), "") is None  # no items file: every item may be
    _write(tmp_path / F.ITEMS_FILE, "item_id,active\ni1,true\ni2,maybe\n")
    with pytest.raises(availability.AvailabilityError,
                       match=r"items.csv: record 2 \(item_id 'i2'\), column active: 'maybe' is neither true nor false"):
        availability.active_items(source, source.path())


def test_the_items_of_record_are_the_spans_own_else_the_roots_and_on_kubeflow_the_newest_spans(tmp_path):
    contract = contract_lib.DataContract(items_file=F.ITEMS_FILE)
    _write(tmp_path / F.ITEMS_FILE, "item_id\nroot\n")
    for n, items in ((1, "item_id\none\n"), (2, None), (3, "item_id\nthree\n")):
        _write(tmp_path / f"span-{n}" / F.INTERACTIONS_FILE, "user_id,item_id\nu,i\n")
        if items:
            _write(tmp_path / f"span-{n}" / F.ITEMS_FILE, items)
        (tmp_path / f"span-{n}" / spans.SUCCESS_MARKER).write_text("")

    def active(pattern):
        source = availability.CatalogueSource.of(str(tmp_path), pattern, contract)
        return availability.active_items(source, source.path())

    assert active("span-1/interactions.csv") == {"one"}
    assert active("span-2/interactions.csv") == {"root"}  # no catalogue of its own: the root's
    assert active(F.INTERACTIONS_FILE) == {"root"}
    assert active(spans.pattern(F.INTERACTIONS_FILE)) == {"three"}  # `{SPAN}`: the newest complete span, as ExampleGen
    (tmp_path / "span-3" / spans.SUCCESS_MARKER).unlink()
    with pytest.raises(spans.SpanError, match="span-3: not complete"):
        active(spans.pattern(F.INTERACTIONS_FILE))
    assert availability.CatalogueSource.of(str(tmp_path), F.INTERACTIONS_FILE,
                                           contract_lib.DataContract()).path() == ""  # no items file in the contract
