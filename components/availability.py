"""Which catalogue items may be recommended: those the newest items file lists, less those it marks inactive.

A model's vocabulary holds every item the training window saw, including items a shop has since delisted. The
newest items file (the trained span's own, else the data root's) is the catalogue of record: an item absent from
it, or whose `active` column (DataContract.active) says false, is never recommended by any signature of the
exported model, so the real TF Serving honours it too. With no items file every item may be recommended.

The Trainer receives where to look in its custom_config (CONFIG_KEY): the data root, the interactions pattern
(`span-{SPAN}/...` on Kubeflow, where ExampleGen's driver picks the newest span when the run starts: this module
then takes the newest complete span too), and the items file's name.
"""

from __future__ import annotations

import dataclasses
import posixpath
from typing import Any, Dict, Mapping, Optional, Set

from components import contract as contract_lib
from components import spans

CONFIG_KEY = "catalogue"  # in the Trainer's custom_config
# How an `active` cell reads (case-insensitive); an empty cell means active (nothing says otherwise).
ACTIVE_VALUES = ("true", "1", "yes", "y", "t", "active", "")
INACTIVE_VALUES = ("false", "0", "no", "n", "f", "inactive")


class AvailabilityError(ValueError):
    """An `active` cell that is neither true nor false: one line naming the file, the item and the value."""


@dataclasses.dataclass(frozen=True)
class CatalogueSource:
    """Where the items of record are: `root` and the interactions `pattern` locate the items file (spans.side_file)."""

    root: str = ""
    pattern: str = ""
    items_file: str = ""  # '' = no items file: every item may be recommended
    item_column: str = ""
    active_column: str = ""

    def to_custom_config(self) -> Dict[str, Any]:
        return {CONFIG_KEY: dataclasses.asdict(self)}

    @classmethod
    def from_custom_config(cls, custom_config: Optional[Mapping[str, Any]]) -> "CatalogueSource":
        return cls(**dict((custom_config or {}).get(CONFIG_KEY) or {}))

    @classmethod
    def of(cls, root: str, pattern: str, contract: contract_lib.DataContract) -> "CatalogueSource":
        if not root or not contract.items_file:
            return cls()
        return cls(root=root, pattern=pattern, items_file=contract.items_file, item_column=contract.columns.item,
                   active_column=contract.active)

    def path(self) -> str:
        """The items file of record ('' without one); a `{SPAN}` pattern is the newest complete span's."""
        if not self.items_file:
            return ""
        pattern = self.pattern
        if spans.SPAN_PLACEHOLDER in pattern:
            pattern = pattern.replace(spans.SPAN_PLACEHOLDER, str(spans.choose(self.root, spans.LATEST)))
        return spans.side_file(self.root, pattern, self.items_file)


def is_active(value: object, where: str) -> bool:
    text = contract_lib.cell_text(value).lower()
    if text in ACTIVE_VALUES:
        return True
    if text in INACTIVE_VALUES:
        return False
    raise AvailabilityError(f"{where}: {value!r} is neither true nor false (use one of "
                            f"{', '.join(v for v in ACTIVE_VALUES if v)} / {', '.join(INACTIVE_VALUES)})")


def active_items(source: CatalogueSource, path: str) -> Optional[Set[str]]:
    """The ids that may be recommended per the items file at `path` (source.path(), resolved once by the caller), or
    None when every item may (no items file)."""
    if not path:
        return None
    found = set()
    for number, row in enumerate(contract_lib.read_rows(path), start=1):
        item = contract_lib.cell_text(row.get(source.item_column))
        if item and (not source.active_column or is_active(
                row.get(source.active_column), f"{path}: record {number} ({source.item_column} {item!r}), column "
                                               f"{source.active_column}")):
            found.add(item)
    return found
