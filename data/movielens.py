"""Converts MovieLens downloads the user already has into the canonical layout the pipeline reads.

Supported: ml-100k (`u.data`, `u.item`, `u.user`, and the `u1..u5`/`ua`/`ub` `.base`/`.test` splits),
ml-1m (`ratings.dat`, `movies.dat`, `users.dat`; `::`-separated, latin-1) and ml-latest /
ml-latest-small (`ratings.csv`, `movies.csv`). Ratings are streamed line by line (constant memory),
and every file is written to a temporary name and renamed only when complete.

With `split="u1"` (ml-100k only) the output is `DEST/train/` and `DEST/test/`, each a complete
canonical directory (its own interactions.csv, plus the same items.csv and users.csv).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import tensorflow as tf

from components import features as F
from components.atomic_io import atomic_path
from data.atomic_csv import atomic_csv

ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                 "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
                 "War", "Western")
ML100K_SPLITS = tuple(f"u{i}" for i in range(1, 6)) + ("ua", "ub")
# The canonical layout this importer writes. The columns are MovieLens's own: the contract infers each
# feature's type from the data, so nothing here has to match a shared list.
INTERACTION_COLUMNS = (F.USER_ID, F.ITEM_ID, F.RATING, F.TIMESTAMP)
ITEM_COLUMNS = (F.ITEM_ID, "title", "genres", "year")
USER_COLUMNS = (F.USER_ID, "gender", "age", "occupation", "zip_code")  # ml-100k and ml-1m; ml-latest has none
GENRE_SEPARATOR = "|"
# ml-latest's spelling of "this movie has no genre": a marker for a missing value, not a genre, so it becomes
# an empty field (how the layout spells missing). ml-100k's `unknown` flag is a genre column of the source
# and is kept, as are all other names exactly as the files spell them (`Children's`, `Film-Noir`).
_NO_GENRE = {"", "(no genres listed)"}
_YEAR = re.compile(r"\s*\((\d{4})(?:[–-]\d{0,4})?\)\s*$")


class MovieLensImportError(ValueError):
    """One line naming the bad path, line or argument."""


@dataclasses.dataclass(frozen=True)
class ImportResult:
    format: str
    interactions: Dict[str, int]  # part ("all", or "train"/"test") -> rows written
    items: int
    users: int
    paths: List[str]


def split_title(raw: str) -> Tuple[str, Optional[int]]:
    """'Toy Story (1995) ' -> ('Toy Story', 1995); no trailing year -> (title, None)."""
    title = raw.strip()
    match = _YEAR.search(title)
    if not match:
        return title, None
    return title[: match.start()].strip(), int(match.group(1))


def join_genres(genres: Iterable[str]) -> str:
    """The source's genre names, unchanged and in source order, joined by GENRE_SEPARATOR; the missing-value
    marker and repeats dropped (no renaming: the data contract takes whatever names the files use)."""
    out: List[str] = []
    for genre in genres:
        genre = genre.strip()
        if genre not in _NO_GENRE and genre not in out:
            out.append(genre)
    return GENRE_SEPARATOR.join(out)


def _year(year: Optional[int]) -> str:
    """An unknown year is an empty field (missing), never 0: a 0 would be read as a real, very old year."""
    return "" if not year else str(year)


def _lines(path: str, encoding: str) -> Iterator[Tuple[int, str]]:
    with open(path, encoding=encoding, newline="") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if line:
                yield number, line


def _fields(path: str, number: int, line: str, sep: str, count: int) -> List[str]:
    parts = line.split(sep)
    if len(parts) < count:
        raise MovieLensImportError(f"{path}:{number}: expected {count} '{sep}'-separated fields, got {len(parts)}")
    return parts


def _write(path: str, header: Tuple[str, ...], rows: Iterable[Iterable]) -> int:
    count = 0
    with atomic_csv(path, header) as writer:
        for row in rows:
            writer.writerow(row)
            count += 1
    return count


def _rating_rows(path: str, encoding: str, sep: str, skip_header: bool) -> Iterator[Tuple]:
    for number, line in _lines(path, encoding):
        if skip_header and number == 1:
            continue
        if sep == ",":
            parts = next(csv.reader([line]))
            if len(parts) < 4:
                raise MovieLensImportError(f"{path}:{number}: expected 4 ','-separated fields, got {len(parts)}")
        else:
            parts = _fields(path, number, line, sep, 4)
        user, item, rating, stamp = (p.strip() for p in parts[:4])
        try:
            yield user, item, f"{float(rating):g}", int(stamp)
        except ValueError:
            raise MovieLensImportError(f"{path}:{number}: rating {rating!r} or timestamp {stamp!r} is not a number") from None


def _item_rows(fmt: str, src: str) -> Iterator[Tuple]:
    if fmt == "ml-100k":
        path = os.path.join(src, "u.item")
        for number, line in _lines(path, "latin-1"):
            parts = _fields(path, number, line, "|", 5 + len(ML100K_GENRES))
            flags = parts[5:5 + len(ML100K_GENRES)]
            title, year = split_title(parts[1])
            genres = join_genres(g for g, flag in zip(ML100K_GENRES, flags) if flag.strip() == "1")
            yield parts[0], title, genres, _year(year)
    elif fmt == "ml-1m":
        path = os.path.join(src, "movies.dat")
        for number, line in _lines(path, "latin-1"):
            item, raw_title, genres = _fields(path, number, line, "::", 3)[:3]
            title, year = split_title(raw_title)
            yield item, title, join_genres(genres.split("|")), _year(year)
    else:
        path = os.path.join(src, "movies.csv")
        for number, line in _lines(path, "utf-8"):
            if number == 1:
                continue
            parts = next(csv.reader([line]))
            if len(parts) < 3:
                raise MovieLensImportError(f"{path}:{number}: expected 3 ','-separated fields, got {len(parts)}")
            title, year = split_title(parts[1])
            yield parts[0], title, join_genres(parts[2].split("|")), _year(year)


def _user_rows(fmt: str, src: str) -> Optional[Iterator[Tuple]]:
    if fmt == "ml-100k" and os.path.exists(os.path.join(src, "u.user")):
        path = os.path.join(src, "u.user")
        return ((p[0], p[2], p[1], p[3], p[4]) for p in
                (_fields(path, n, line, "|", 5) for n, line in _lines(path, "latin-1")))
    if fmt == "ml-1m" and os.path.exists(os.path.join(src, "users.dat")):
        path = os.path.join(src, "users.dat")
        return (tuple(p[:5]) for p in (_fields(path, n, line, "::", 5) for n, line in _lines(path, "latin-1")))
    return None


_FORMATS: Dict[str, Tuple[str, str, str, bool]] = {
    # format: (ratings file, encoding, separator, has header)
    "ml-100k": ("u.data", "latin-1", "\t", False),
    "ml-1m": ("ratings.dat", "latin-1", "::", False),
    "ml-latest": ("ratings.csv", "utf-8", ",", True),
}
_ITEM_FILES = {"ml-100k": "u.item", "ml-1m": "movies.dat", "ml-latest": "movies.csv"}


def detect_format(src: str) -> str:
    if not os.path.isdir(src):
        raise MovieLensImportError(f"{src}: not a directory")
    for fmt, (ratings, *_rest) in _FORMATS.items():
        if os.path.exists(os.path.join(src, ratings)) and os.path.exists(os.path.join(src, _ITEM_FILES[fmt])):
            return fmt
    expected = "; ".join(f"{fmt}: {r} + {_ITEM_FILES[fmt]}" for fmt, (r, *_x) in _FORMATS.items())
    raise MovieLensImportError(f"{src}: no MovieLens layout recognised (expected {expected})")


def import_movielens(src: str, dest: str, split: Optional[str] = None) -> ImportResult:
    fmt = detect_format(src)
    ratings_file, encoding, sep, header = _FORMATS[fmt]
    if split is not None:
        if fmt != "ml-100k" or split not in ML100K_SPLITS:
            raise MovieLensImportError(
                f"split {split!r}: only ml-100k has predefined splits ({', '.join(ML100K_SPLITS)})")
        parts = {part: os.path.join(src, f"{split}.{suffix}") for part, suffix in (("train", "base"), ("test", "test"))}
        for path in parts.values():
            if not os.path.exists(path):
                raise MovieLensImportError(f"{path}: split file not found")
        targets = {part: os.path.join(dest, part) for part in parts}
    else:
        parts = {"all": os.path.join(src, ratings_file)}
        targets = {"all": dest}

    written, counts = [], {}
    first_target = next(iter(targets.values()))
    items_path = os.path.join(first_target, F.ITEMS_FILE)
    items = _write(items_path, ITEM_COLUMNS, _item_rows(fmt, src))
    written.append(items_path)
    users, user_rows = 0, _user_rows(fmt, src)
    if user_rows is not None:
        users_path = os.path.join(first_target, F.USERS_FILE)
        users = _write(users_path, USER_COLUMNS, user_rows)
        written.append(users_path)
    for part, source in parts.items():
        path = os.path.join(targets[part], F.INTERACTIONS_FILE)
        counts[part] = _write(path, INTERACTION_COLUMNS, _rating_rows(source, encoding, sep, header))
        written.append(path)
        if targets[part] != first_target:  # each split directory is complete on its own
            for name in (F.ITEMS_FILE, F.USERS_FILE):
                if os.path.exists(os.path.join(first_target, name)):
                    target = os.path.join(targets[part], name)
                    with atomic_path(target) as tmp:
                        tf.io.gfile.copy(os.path.join(first_target, name), tmp, overwrite=True)
                    written.append(target)
    return ImportResult(fmt, counts, items, users, written)


