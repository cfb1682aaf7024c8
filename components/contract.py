"""The data contract: which columns of the user's files are ids, labels and features, and of what kind.

Zero configuration: `interactions` needs a user and an item column (`rating`, `timestamp` and `weight` are
optional), `items` needs an item column and every other column is an item feature, `users` (optional) is
a user column plus user features. Files are CSV (RFC 4180 quoting: commas, quotes and newlines inside a
field) or Parquet. The first run infers each feature's kind from the data (numeric, categorical,
multi-valued with a separator, free text) and writes the contract as JSON beside the data, where the user
reviews, edits (a kind, a separator, `ignore`) and commits it; later runs read it back unchanged. No
dataset's domain (its genres, its categories) is written in code: vocabularies come from Transform.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import posixpath
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from components import features as F

NUMERIC, CATEGORICAL, MULTI, TEXT, IGNORE = "numeric", "categorical", "multi", "text", "ignore"
KINDS = (NUMERIC, CATEGORICAL, MULTI, TEXT, IGNORE)
CSV, PARQUET = "csv", "parquet"
FORMATS = (CSV, PARQUET)
CONTRACT_FILE = "contract.json"
CONFIG_KEY = "contract"  # the contract's key in the Transform's and the Trainer's custom_config
# Separators a multi-valued string column may use (a comma is not one: free text has commas).
MULTI_SEPARATORS = ("|", ";")
INFER_ROWS = 20_000  # rows per file the kinds are inferred from
# Interaction columns the contract reads, by role; any other column of the interactions file is an error.
ROLES = ("user", "item", "rating", "timestamp", "weight")
_ROLE_KEYS = {"user": F.USER_ID, "item": F.ITEM_ID, "rating": F.RATING, "timestamp": F.TIMESTAMP,
              "weight": F.WEIGHT}
# Keys the pipeline writes itself: a feature column with one of these names is renamed (prefixed).
_RESERVED = {F.USER_ID, F.ITEM_ID, F.RATING, F.TIMESTAMP, F.WEIGHT, F.USER_ACTIVITY, F.ITEM_POPULARITY}
# Columns shown as an item's title in `recommend` answers, by preference.
_TITLE_COLUMNS = ("title", "name", "product_name", "item_name")
# Items-file columns saying whether an item may still be recommended (components/availability.py reads them).
_ACTIVE_COLUMNS = ("active", "is_active", "available")


def _gfile():
    """tf.io.gfile (local paths, gs://, s3://), imported on first use: `recsys` imports this module at start-up,
    before it quiets TensorFlow's logging, so a module-level import printed TF's start-up noise on stderr."""
    import tensorflow as tf

    return tf.io.gfile


class ContractError(ValueError):
    """The files do not fit the contract; the message names the file and the column."""


@dataclasses.dataclass(frozen=True)
class Feature:
    name: str  # key in the tf.Examples (the column name, prefixed when it collides with a reserved key)
    kind: str  # one of KINDS
    source: str = ""  # column in the file ('' = name)
    separator: str = ""  # MULTI: what splits a cell into values ('' for Parquet list columns)

    @property
    def column(self) -> str:
        return self.source or self.name


@dataclasses.dataclass(frozen=True)
class Columns:
    """Source column names of the interaction roles; '' = the file has no such column."""

    user: str = F.USER_ID
    item: str = F.ITEM_ID
    rating: str = ""
    timestamp: str = ""
    weight: str = ""


@dataclasses.dataclass(frozen=True)
class DataContract:
    columns: Columns = Columns()
    interactions_file: str = F.INTERACTIONS_FILE
    items_file: str = ""  # '' = no item attributes
    users_file: str = ""  # '' = no user attributes
    item_features: Tuple[Feature, ...] = ()
    user_features: Tuple[Feature, ...] = ()
    title: str = ""  # the item feature shown as an item's title ('' = none)
    # The items file's column saying whether an item may still be recommended (true/false; a feature of kind
    # `ignore`: a flag, not an attribute to learn from). '' = none: every item the items file lists may be.
    active: str = ""
    rating_range: Optional[Tuple[float, float]] = None  # from the data; None without a rating column

    @property
    def has_rating(self) -> bool:
        return bool(self.columns.rating)

    @property
    def has_timestamp(self) -> bool:
        return bool(self.columns.timestamp)

    @property
    def has_weight(self) -> bool:
        return bool(self.columns.weight)

    def used(self, features: Sequence[Feature]) -> Tuple[Feature, ...]:
        """The features models read (those not marked `ignore`)."""
        return tuple(f for f in features if f.kind != IGNORE)

    @property
    def not_in_serving(self) -> Tuple[str, ...]:
        """Keys a serving request does not carry: labels, times, weights and the evaluation slices."""
        return (F.RATING, F.TIMESTAMP, F.WEIGHT, F.USER_ACTIVITY, F.ITEM_POPULARITY)

    @property
    def drift_features(self) -> Tuple[str, ...]:
        """What the data gate compares with the previous run: the label and the categorical, multi-valued and
        numeric attributes. Not the ids (new users and items are the point of a new span) nor free text."""
        label = (F.RATING,) if self.has_rating else ()
        return label + tuple(f.name for f in self.used(self.item_features + self.user_features)
                             if f.kind in (CATEGORICAL, MULTI, NUMERIC))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, values: Mapping) -> "DataContract":
        values = dict(values)
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ContractError(f"unknown contract field(s): {', '.join(sorted(unknown))}")
        values["columns"] = Columns(**values.get("columns", {}))
        for key in ("item_features", "user_features"):
            values[key] = tuple(_feature(f) for f in values.get(key, ()))
        if values.get("rating_range") is not None:
            values["rating_range"] = tuple(float(v) for v in values["rating_range"])
        active = values.get("active") or ""
        if active and active not in {f.column for f in values.get("item_features", ())}:
            raise ContractError(f"active: {active!r} is not a column of the items file (declare it among item_features, "
                                f"kind {IGNORE})")
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> "DataContract":
        return cls.from_dict(json.loads(text))


def _feature(values: Mapping) -> Feature:
    feature = Feature(**values)
    if feature.kind not in KINDS:
        raise ContractError(f"feature {feature.name!r}: unknown kind {feature.kind!r}; choose one of {', '.join(KINDS)}")
    return feature


# ----------------------------------------------------------------------------------------------- reading files


def find_file(data_root: str, stem: str) -> str:
    """`stem.csv` or `stem.parquet` under data_root (file name only), or '' when neither exists."""
    for fmt in FORMATS:
        name = f"{stem}.{fmt}"
        if _gfile().exists(posixpath.join(data_root, name)):
            return name
    return ""


def file_format(path: str) -> str:
    return PARQUET if path.endswith(".parquet") else CSV


def header(path: str) -> List[str]:
    """The column names of a CSV or Parquet file."""
    if file_format(path) == PARQUET:
        with _parquet(path) as parquet:
            return list(parquet.schema_arrow.names)
    try:
        with _gfile().GFile(path, "r") as f:
            row = next(csv.reader(_lines(f)), None)
    except UnicodeDecodeError:
        raise ContractError(f"{path}: not UTF-8 text") from None
    if not row:
        raise ContractError(f"{path}: empty file (a header row is needed)")
    return [c.strip() for c in row]


class _GFileStream(io.RawIOBase):
    """A tf.io.gfile.GFile (local, gs://, s3://) as the binary stream pyarrow reads: a bare GFile has no
    `closed` attribute, and pyarrow then takes it for a closed file."""

    def __init__(self, gfile):
        super().__init__()
        self._gfile = gfile

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._gfile.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._gfile.seek(offset, whence)
        return self._gfile.tell()

    def tell(self) -> int:
        return self._gfile.tell()


@contextlib.contextmanager
def _parquet(path: str):
    """pyarrow's ParquetFile of `path`; a file that is not Parquet is a one-line ContractError."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with _gfile().GFile(path, "rb") as f:
        try:
            parquet = pq.ParquetFile(_GFileStream(f))
        except pa.ArrowException as e:
            raise ContractError(f"{path}: not a Parquet file ({str(e).splitlines()[0] if str(e) else e})") from None
        yield parquet


def _lines(f) -> Iterator[str]:
    first = True
    for line in f:
        if first:
            line, first = line.lstrip("\ufeff"), False
        yield line


def read_rows(path: str, limit: int = 0) -> Iterator[Dict[str, object]]:
    """Rows as {column: value}; CSV values are strings ('' = missing), Parquet values as stored (None)."""
    if file_format(path) == PARQUET:
        with _parquet(path) as parquet:
            done = 0
            for batch in parquet.iter_batches(batch_size=8192):
                for row in batch.to_pylist():
                    yield row
                    done += 1
                    if limit and done >= limit:
                        return
        return
    with _gfile().GFile(path, "r") as f:
        reader = csv.reader(_lines(f))
        names = [c.strip() for c in next(reader, [])]
        for number, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(names):
                raise ContractError(f"{path}: record {number - 1} has {len(row)} fields, the header {len(names)}")
            yield dict(zip(names, row))
            if limit and number - 1 >= limit:
                return


def is_missing(value) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and not value.strip()


def cell_text(value) -> str:
    """A cell as a string ('' when missing); Parquet integers (and integral floats) become their decimal digits."""
    if is_missing(value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value.strip() if isinstance(value, str) else str(value)


def as_float(value) -> Optional[float]:
    if is_missing(value):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# ----------------------------------------------------------------------------------------------- inference


def infer_kind(values: Sequence[object]) -> Tuple[str, str]:
    """(kind, separator) of one column from its values: numbers are numeric; strings with a list separator in
    a good share of cells are multi-valued; long or mostly-unique multi-word strings are text; else categorical."""
    present = [v for v in values if not is_missing(v)]
    if not present:
        return IGNORE, ""
    if any(isinstance(v, (list, tuple)) for v in present):
        return MULTI, ""
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present) or \
            all(as_float(v) is not None for v in present):
        return NUMERIC, ""
    strings = [str(v) for v in present]
    for separator in MULTI_SEPARATORS:
        with_separator = [s for s in strings if separator in s]
        if len(with_separator) >= 0.05 * len(strings):
            parts = [p.strip() for s in strings for p in s.split(separator) if p.strip()]
            if parts and sum(len(p.split()) for p in parts) / len(parts) <= 3:
                return MULTI, separator
    words = sum(len(s.split()) for s in strings) / len(strings)
    unique = len(set(strings)) / len(strings)
    if words >= 5 or (words >= 2 and unique >= 0.5):
        return TEXT, ""
    return CATEGORICAL, ""


def _infer_features(path: str, id_column: str, taken: set, prefix: str) -> Tuple[Feature, ...]:
    columns = header(path)
    if id_column not in columns:
        raise ContractError(f"{path}: no {id_column!r} column (columns: {', '.join(columns)})")
    if len(set(columns)) != len(columns):
        duplicated = sorted({c for c in columns if columns.count(c) > 1})
        raise ContractError(f"{path}: column {duplicated[0]!r} appears twice in the header")
    sample: Dict[str, list] = {c: [] for c in columns}
    for row in read_rows(path, INFER_ROWS):
        for c in columns:
            sample[c].append(row.get(c))
    features = []
    for column in columns:
        if column == id_column:
            continue
        name = column if column not in taken else f"{prefix}{column}"
        if name in taken:
            raise ContractError(f"{path}: column {column!r} collides with another feature; rename it")
        taken.add(name)
        kind, separator = infer_kind(sample[column])
        features.append(Feature(name=name, kind=kind, source="" if name == column else column, separator=separator))
    return tuple(features)


def _interaction_columns(path: str, mapping: Mapping[str, str]) -> Columns:
    names = header(path)
    chosen = {}
    for role in ROLES:
        given = mapping.get(role) or ""
        default = _ROLE_KEYS[role]
        if given and given not in names:
            raise ContractError(f"{path}: no column {given!r} for the {role} (columns: {', '.join(names)})")
        chosen[role] = given or (default if default in names else "")
    for role in ("user", "item"):
        if not chosen[role]:
            raise ContractError(f"{path}: no {_ROLE_KEYS[role]!r} column (columns: {', '.join(names)}); "
                                f"name yours with --{role}-col")
    unknown = [c for c in names if c not in chosen.values()]
    if unknown:
        raise ContractError(f"{path}: unknown column {unknown[0]!r}; interactions carry {', '.join(_ROLE_KEYS.values())} "
                            f"(map yours with --user-col/--item-col/--rating-col/--timestamp-col/--weight-col)")
    return Columns(**chosen)


def _rating_range(path: str, column: str) -> Tuple[float, float]:
    low, high = math.inf, -math.inf
    for number, row in enumerate(read_rows(path), start=1):
        value = as_float(row.get(column))
        if value is None:
            raise ContractError(f"{path}: record {number}: rating {row.get(column)!r} is not a number")
        low, high = min(low, value), max(high, value)
    if low > high:
        raise ContractError(f"{path}: no interactions")
    return low, high


def infer(data_root: str, mapping: Optional[Mapping[str, str]] = None) -> DataContract:
    """The contract of the files under data_root; `mapping` names the role columns (user, item, rating,
    timestamp, weight) where they are not called user_id, item_id, rating, timestamp, weight."""
    mapping = dict(mapping or {})
    interactions = find_file(data_root, F.INTERACTIONS_FILE.rsplit(".", 1)[0])
    if not interactions:
        raise ContractError(f"{data_root}: no interactions.csv or interactions.parquet")
    path = posixpath.join(data_root, interactions)
    columns = _interaction_columns(path, mapping)
    items_file = find_file(data_root, F.ITEMS_FILE.rsplit(".", 1)[0])
    users_file = find_file(data_root, F.USERS_FILE.rsplit(".", 1)[0])
    taken = set(_RESERVED)
    item_features = (_infer_features(posixpath.join(data_root, items_file), mapping.get("item") or F.ITEM_ID,
                                     taken, "item_") if items_file else ())
    user_features = (_infer_features(posixpath.join(data_root, users_file), mapping.get("user") or F.USER_ID,
                                     taken, "user_") if users_file else ())
    title = next((f.name for column in _TITLE_COLUMNS for f in item_features
                  if f.column.lower() == column and f.kind != IGNORE), "")
    active = next((f.column for column in _ACTIVE_COLUMNS for f in item_features if f.column.lower() == column), "")
    item_features = tuple(dataclasses.replace(f, kind=IGNORE) if active and f.column == active else f
                          for f in item_features)
    return DataContract(
        columns=columns, interactions_file=interactions, items_file=items_file, users_file=users_file,
        item_features=item_features, user_features=user_features, title=title, active=active,
        rating_range=_rating_range(path, columns.rating) if columns.rating else None)


# ----------------------------------------------------------------------------------- data against a reviewed contract


class ContractMismatch(ContractError):
    """The files changed since the contract was reviewed: a column it does not describe, one it names that is gone,
    or values its declared kind cannot read. The caller adds what to do (edit the contract, or infer it again)."""


def check_columns(path: str, id_column: str, columns: Sequence[str], contract_file: str = CONTRACT_FILE) -> None:
    """The header of `path` holds exactly id_column + columns, as the contract says."""
    found = header(path)
    expected = [id_column, *columns]
    missing = [c for c in expected if c not in found]
    if missing:
        raise ContractMismatch(f"{path}: no column {missing[0]!r}, which the contract {contract_file} names "
                               f"(columns: {', '.join(found)})")
    extra = [c for c in found if c not in expected]
    if extra:
        raise ContractMismatch(f"{path}: unknown column {extra[0]!r}, not in the contract {contract_file}")


def _unreadable(feature: Feature, values: Sequence[object]) -> str:
    """'' when the declared kind reads these values, else what the column holds now. Only changes the encoding
    cannot follow count: a kind the user chose over the inferred one (a numeric code read as a category, a
    separated list read as text, `ignore`) stays valid."""
    kind, separator = infer_kind(values)
    present = [(number, v) for number, v in enumerate(values, start=1) if not is_missing(v)]
    if feature.kind == NUMERIC:
        bad = next(((n, v) for n, v in present if isinstance(v, (list, tuple)) or as_float(v) is None), None)
        if bad:
            return f"{kind} values (e.g. {bad[1]!r} in record {bad[0]})"
    elif feature.kind in (CATEGORICAL, TEXT):
        bad = next(((n, v) for n, v in present if isinstance(v, (list, tuple))), None)
        if bad:
            return f"lists (e.g. {bad[1]!r} in record {bad[0]})"
    elif feature.kind == MULTI and feature.separator and kind == MULTI and separator and separator != feature.separator:
        if not any(feature.separator in str(v) for _, v in present):
            return f"lists separated by {separator!r}, not {feature.separator!r}"
    return ""


def check_data(data_root: str, contract: DataContract, contract_file: str = CONTRACT_FILE) -> None:
    """Fails before any component runs when the files under data_root no longer fit the reviewed contract: a
    file or column gone, a column it does not describe, or a column whose values its kind cannot read (checked on
    the first INFER_ROWS rows, what inference reads). One ContractMismatch line naming the file and the column."""
    columns = contract.columns
    roles = [getattr(columns, role) for role in ROLES if getattr(columns, role)]
    interactions = sorted(_gfile().glob(posixpath.join(data_root, contract.interactions_file))) or [
        posixpath.join(data_root, contract.interactions_file)]
    numeric_roles = tuple(Feature(name=role, kind=NUMERIC, source=getattr(columns, role))
                          for role in ("rating", "weight") if getattr(columns, role))
    files = [(path, roles[0], roles[1:], numeric_roles) for path in interactions]
    if contract.items_file:
        files.append((posixpath.join(data_root, contract.items_file), columns.item,
                      [f.column for f in contract.item_features], contract.used(contract.item_features)))
    if contract.users_file:
        files.append((posixpath.join(data_root, contract.users_file), columns.user,
                      [f.column for f in contract.user_features], contract.used(contract.user_features)))
    for path, id_column, names, declared in files:
        if not _gfile().exists(path):
            raise ContractMismatch(f"{path}: file not found (the contract {contract_file} names it)")
        check_columns(path, id_column, names, contract_file)
        rows = list(read_rows(path, INFER_ROWS))
        for feature in declared:
            holds = _unreadable(feature, [row.get(feature.column) for row in rows])
            if holds:
                raise ContractMismatch(f"{path}: column {feature.column!r} holds {holds}, but the contract "
                                       f"{contract_file} declares it {feature.kind}")


def from_custom_config(custom_config) -> DataContract:
    """The contract a component received in its custom_config (as JSON text or as a dict)."""
    raw = (custom_config or {}).get(CONFIG_KEY)
    if raw is None:
        raise ValueError("the component needs the data contract in its custom_config (key 'contract')")
    return DataContract.from_json(raw) if isinstance(raw, str) else DataContract.from_dict(raw)


def contract_path(data_root: str) -> str:
    return posixpath.join(data_root, CONTRACT_FILE)


def load_or_infer(data_root: str, mapping: Optional[Mapping[str, str]] = None,
                  path: str = "", files_root: str = "") -> Tuple[DataContract, bool]:
    """(contract, inferred now): the reviewed copy at `path` (default data_root/contract.json) when there is
    one, else the contract inferred from the files (under `files_root`, default data_root: one span's
    directory when the data root holds spans), written there for review."""
    path = path or contract_path(data_root)
    import tensorflow as tf

    try:
        if _gfile().exists(path):
            with _gfile().GFile(path, "r") as f:
                text = f.read()
            try:
                return DataContract.from_json(text), False
            except (ValueError, TypeError) as e:
                raise ContractError(f"{path}: {e}") from None
    except tf.errors.OpError as e:  # storage this machine cannot reach (no network, no credentials)
        reason = e.message.strip().splitlines()[0].split("error details: ")[-1]
        raise ContractError(f"cannot read the data contract {path} ({reason}): give the reviewed copy with "
                            f"--contract FILE (or --schema-dir DIR)") from None
    contract = infer(files_root or data_root, mapping)
    from components.atomic_io import atomic_write

    atomic_write(path, contract.to_json().encode("utf-8"))
    return contract, True


def describe(contract: DataContract) -> str:
    """One line per file for the CLI: what the run will read."""
    def listing(features):
        return ", ".join(f"{f.name} ({f.kind}{' ' + f.separator if f.separator else ''})" for f in features) or "none"

    roles = ", ".join(f"{role}={getattr(contract.columns, role)}" for role in ROLES if getattr(contract.columns, role))
    lines = [f"interactions: {roles}" + ("" if contract.has_rating else " (implicit feedback: no rating)")]
    if contract.items_file:
        lines.append(f"item features: {listing(contract.item_features)}" +
                     (f"; column {contract.active} says which items may be recommended" if contract.active else ""))
    if contract.users_file:
        lines.append(f"user features: {listing(contract.user_features)}")
    return "\n".join(lines)
