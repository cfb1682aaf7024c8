"""Held-out data the generated samples write beside themselves, under DATA/heldout/, for evaluation only.

The pipeline never reads it: the data contract looks for `interactions.*`, `items.*` and `users.*` at the top of
the data root and ExampleGen's input pattern is the contract's interactions file name, so nothing under
`heldout/` reaches a split, a statistic or a model. Three files, drawn from the sample's own taste model:

- `next.csv` (user_id,item_id): each user's NEXT interaction, after everything in interactions.csv (an item not
  already in the user's history): next-item evaluation of known users with their whole history as input;
- `sessions.csv` (session_id,item_id,timestamp): anonymous sessions, histories of users the pipeline never saw
  (session ids are not user ids of interactions.csv or users.csv), with the real users' activity distribution,
  timed after the log ends; rows in time order within a session;
- `sessions_next.csv` (session_id,item_id): each session's next item (not in the session).

The generators draw all of it from random streams of their own (`stream`), after and apart from the ones that
write interactions.csv, items.csv and users.csv, so those files are byte-identical with or without it.
"""

from __future__ import annotations

import collections
import csv
import os
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from components import features as F
from data.atomic_csv import atomic_csv

HELDOUT_DIR = "heldout"
NEXT_FILE = "next.csv"
SESSIONS_FILE = "sessions.csv"
SESSIONS_NEXT_FILE = "sessions_next.csv"
FILES = (NEXT_FILE, SESSIONS_FILE, SESSIONS_NEXT_FILE)
SESSION_ID = "session_id"
NEXT_COLUMNS = (F.USER_ID, F.ITEM_ID)
SESSIONS_COLUMNS = (SESSION_ID, F.ITEM_ID, F.TIMESTAMP)
SESSIONS_NEXT_COLUMNS = (SESSION_ID, F.ITEM_ID)

# Random streams: numpy seed sequences [seed, _TAG, part, ...]. The samples' own streams are [seed] and
# [seed, k] with small k, so these never coincide with them (and SeedSequence pads short keys with zeros:
# every key here has at least three words, none ending where another one continues with a zero).
_TAG = 0x48454C44  # "HELD"
SESSIONS_STREAM, NEXT_STREAM = 1, 2
SESSION_WINDOW_DAYS = 30  # sessions start within this many days after the log's last possible timestamp


def stream(seed: int, *parts: int) -> np.random.Generator:
    """The held-out data's own random stream `parts` for a sample's seed."""
    return np.random.default_rng([seed, _TAG, *parts])


def path(root: str, name: str) -> str:
    return os.path.join(root, HELDOUT_DIR, name)


def session_key(index: int) -> str:
    """Session ids: `s00001`, never a sample user id (`u00001`)."""
    return f"s{index + 1:05d}"


def best_unseen(noisy_logits: np.ndarray, seen: np.ndarray) -> int:
    """Index of the largest noisy log-weight outside `seen` (the next pick of a Gumbel-top-k draw given the items
    already picked), or -1 when every index is seen."""
    row = np.array(noisy_logits, dtype=np.float64, copy=True)
    row[np.asarray(seen, dtype=np.int64)] = -np.inf
    best = int(np.argmax(row))
    return best if np.isfinite(row[best]) else -1


def session_count(num_sessions: int, num_users: int, num_interactions: int) -> Tuple[int, int]:
    """(sessions, their interactions in total): the real users' mean activity, so activity_counts draws the same
    distribution for them."""
    if num_sessions <= 0 or num_users <= 0:
        return 0, 0
    return num_sessions, int(round(num_sessions * num_interactions / num_users))


def session_stamps(rng: np.random.Generator, log_end: int, k: int) -> np.ndarray:
    """k sorted timestamps of one session: it starts within SESSION_WINDOW_DAYS after the log ends and lasts
    from an hour to two weeks."""
    day = 86_400
    begin = log_end + rng.uniform(0, SESSION_WINDOW_DAYS * day)
    length = rng.uniform(1 / 24, 14) * day
    return (begin + np.sort(rng.uniform(0, length, k))).astype(np.int64)


def write_sessions(root: str, sessions: Iterable[Tuple[str, Sequence[str], Sequence[int], Optional[str]]]) -> int:
    """Writes sessions.csv and sessions_next.csv from (session id, items in time order, their timestamps, next item
    or None); returns the number of sessions written."""
    count = 0
    with atomic_csv(path(root, SESSIONS_FILE), SESSIONS_COLUMNS) as w, \
            atomic_csv(path(root, SESSIONS_NEXT_FILE), SESSIONS_NEXT_COLUMNS) as w_next:
        for session, items, stamps, next_item in sessions:
            w.writerows((session, item, int(t)) for item, t in zip(items, stamps))
            if next_item is not None:
                w_next.writerow((session, next_item))
            count += 1
    return count


def _rows(root: str, name: str) -> List[Dict[str, str]]:
    with open(path(root, name), newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_next(root: str) -> List[Tuple[str, str]]:
    """(user id, next item id) for the users of DATA_ROOT's interactions, in file order."""
    return [(r[F.USER_ID], r[F.ITEM_ID]) for r in _rows(root, NEXT_FILE)]


def read_sessions(root: str) -> Dict[str, List[str]]:
    """{session id: its item ids in time order} (ties keep file order), sessions in file order."""
    events: Dict[str, List[Tuple[int, int, str]]] = collections.OrderedDict()
    for n, r in enumerate(_rows(root, SESSIONS_FILE)):
        events.setdefault(r[SESSION_ID], []).append((int(r[F.TIMESTAMP]), n, r[F.ITEM_ID]))
    return {session: [item for _, _, item in sorted(rows)] for session, rows in events.items()}


def read_sessions_next(root: str) -> Dict[str, str]:
    """{session id: the item the session picks next}."""
    return {r[SESSION_ID]: r[F.ITEM_ID] for r in _rows(root, SESSIONS_NEXT_FILE)}
