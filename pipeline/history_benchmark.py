"""`recsys benchmark`'s history section (issue 17): ranking models scored from the history in the request.

Every measure is next-item HitRate@k (one target item per user or session: a hit when it is in the top k),
asked of the exported SavedModel's `recommend_by_history`, for each ranking model the run trained:

(a) known users: each user's next interaction (DATA/heldout/next.csv), the user scored from the stored history
    (use_stored_history=True: every split the pipeline saw) against from their train + validation items alone
    (use_stored_history=False); the eval items are left out of both lists, so the two differ only in what the
    user is scored from;
(b) unseen sessions (heldout/sessions.csv, sessions_next.csv): user_id "", the session's items as the history,
    beside most popular (counted on train + validation, the session's items left out) and beside the same
    model's known-user figure of (a);
(c) fresh interactions: users whose eval split holds at least j + 1 interactions; history = train + validation,
    plus (with) or without the user's first j eval interactions in time order, target = the (j+1)-th. Without
    them the model knows nothing of the j items and may recommend them back (what a model that never sees
    fresh interactions serves); a third list leaves them out client-side, so the lift splits into what
    excluding them gives and what scoring from them adds. With them, the history weighs 1 and the fresh items
    the model's `fresh_weight` (chosen on validation, components/models/freshness.py), as serving weighs a
    known user's stored history against a request's items.
A missing held-out file or eval timestamps skip a measure with a note. The main table is pipeline/quality.py.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from components import features as F
from data import heldout

Event = Tuple[str, str, Optional[int]]  # user, item, timestamp (None when the data has none)
FRESH_STEPS = (1, 2, 3, 4, 5)
MAX_SCORES_PER_CALL = 1 << 24  # rows x catalogue floats one recommend_by_history call may score
PROTOCOL = {
    "known_users": "known users' next interaction (heldout/next.csv): scored from the stored history "
                   "(use_stored_history=true, every split) vs from train + validation only; eval items left out "
                   "of both lists",
    "sessions": "unseen sessions (heldout/sessions.csv): user_id \"\" and the session's items as the history, "
                "target its next item (sessions_next.csv); most popular counted on train + validation; the "
                "session's items left out of both",
    "fresh": "users with >= j+1 eval interactions: history = train + validation, with or without their first j "
             "eval interactions in time order, target = the (j+1)-th; 'without, excluded' also leaves the j items "
             "out of the list (client-side), so with / that isolates what scoring from them adds",
}


@dataclasses.dataclass
class Splits:
    """The pipeline's splits as (user, item, timestamp) events."""

    train: List[Event]
    validation: List[Event]
    eval: List[Event]

    def before_eval(self) -> Dict[str, Set[str]]:
        """Each user's train + validation items: what the model's weights were fitted on."""
        out: Dict[str, Set[str]] = {}
        for user, item, _ in self.train + self.validation:
            out.setdefault(user, set()).add(item)
        return out

    def eval_items(self) -> Dict[str, Set[str]]:
        out: Dict[str, Set[str]] = {}
        for user, item, _ in self.eval:
            out.setdefault(user, set()).add(item)
        return out


def recommend(model, users: Sequence[str], histories: Sequence[Sequence[str]], stored: bool, k: int,
              exclude: Optional[Sequence[Set[str]]] = None, num_items: int = 0,
              weights: Optional[Sequence[Sequence[float]]] = None) -> List[List[str]]:
    """Top-k item ids per row of `recommend_by_history`, rows batched; `exclude` leaves items out per row (the
    signature's exclude list is per request: k + the row's exclusions are asked for and those dropped here,
    the same list the signature would give, since each row is scored alone)."""
    import tensorflow as tf

    from serving import limits

    function = model.signatures[F.RECOMMEND_BY_HISTORY]
    rows = int(max(1, min(limits.MAX_RECOMMEND_USERS, MAX_SCORES_PER_CALL // max(1, num_items))))
    nothing = tf.constant([], tf.string)
    out: List[List[str]] = []
    for start in range(0, len(users), rows):
        chunk = [list(h)[-limits.MAX_HISTORY_ITEMS:] for h in histories[start:start + rows]]
        given = None if weights is None else [list(w)[-limits.MAX_HISTORY_ITEMS:] for w in weights[start:start + rows]]
        drop = [set(e) for e in exclude[start:start + rows]] if exclude is not None else [set()] * len(chunk)
        width = max(len(h) for h in chunk)
        items = (tf.constant([h + [""] * (width - len(h)) for h in chunk], tf.string) if width
                 else tf.zeros([len(chunk), 0], tf.string))
        answer = function(**{F.USER_ID: tf.constant(list(users[start:start + rows]), tf.string),
                             F.HISTORY_ITEMS_INPUT: items,
                             F.HISTORY_WEIGHTS_INPUT: tf.zeros([len(chunk), 0], tf.float32) if given is None else
                             tf.constant([w + [0.0] * (width - len(w)) for w in given], tf.float32),
                             F.USE_STORED_HISTORY_INPUT: tf.constant(stored),
                             F.K_INPUT: tf.constant(k + max(len(d) for d in drop), tf.int32),
                             F.EXCLUDE_ITEMS_INPUT: nothing, F.ALLOW_ITEMS_INPUT: nothing})[F.ITEMS_OUTPUT].numpy()
        for row, dropped in zip(answer, drop):
            out.append([i for i in (v.decode("utf-8") for v in row) if i and i not in dropped][:k])
    return out


def fresh_weight(model) -> float:
    """The weight the exported model gives a request's fresh interactions (1 for a model without one)."""
    variable = getattr(model, "fresh_weight", None)
    return float(variable.numpy()) if variable is not None else 1.0


def hit_rate(lists: Sequence[Sequence[str]], targets: Sequence[str], k: int) -> Optional[float]:
    if not targets:
        return None
    return float(np.mean([t in list(top)[:k] for top, t in zip(lists, targets)]))


def popular_lists(pairs: Sequence[Tuple[str, str]], histories: Sequence[Sequence[str]], k: int) -> List[List[str]]:
    """Most popular (users per item, ties by id), each row's history left out."""
    counts: Dict[str, int] = {}
    for item in {(u, i) for u, i in pairs}:
        counts[item[1]] = counts.get(item[1], 0) + 1
    order = sorted(counts, key=lambda i: (-counts[i], i))
    out = []
    for history in histories:
        seen = set(history)
        top = []
        for item in order:
            if item not in seen:
                top.append(item)
                if len(top) == k:
                    break
        out.append(top)
    return out


def fresh_cases(splits: Splits, j: int) -> List[Tuple[str, List[str], List[str], str]]:
    """(user, train + validation items, the first j eval items in time order, the (j+1)-th) for every user with
    at least j + 1 eval interactions whose target is in neither history (a repeated item is no next item)."""
    before = splits.before_eval()
    timeline: Dict[str, List[Tuple[int, str]]] = {}
    for user, item, when in splits.eval:
        timeline.setdefault(user, []).append((int(when), item))
    cases = []
    for user in sorted(timeline):
        events = [item for _, item in sorted(timeline[user])]
        if len(events) < j + 1:
            continue
        fresh, target = events[:j], events[j]
        if target in fresh or target in before.get(user, ()):
            continue
        cases.append((user, sorted(before.get(user, ())), fresh, target))
    return cases


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or not b else a / b


class HistoryBenchmark:
    """The history measures of every ranking model of one `recsys benchmark` run (same data, same splits)."""

    def __init__(self, data_root: str, splits: Splits, k: int, num_items: int, split: str):
        self.k, self.num_items, self.splits, self.split = k, num_items, splits, split
        self.notes: List[str] = []
        self.models: List[Dict] = []
        self.before = splits.before_eval()
        self.eval_items = splits.eval_items()
        known = set(self.before) | set(self.eval_items)
        self.next: List[Tuple[str, str]] = []
        if os.path.exists(heldout.path(data_root, heldout.NEXT_FILE)):
            self.next = [(u, i) for u, i in heldout.read_next(data_root) if u in known]
        else:
            self.notes.append(f"(a) skipped: {heldout.path(data_root, heldout.NEXT_FILE)} not found")
        self.sessions: List[Tuple[str, List[str], str]] = []
        self.popular_hit: Optional[float] = None
        if all(os.path.exists(heldout.path(data_root, name))
               for name in (heldout.SESSIONS_FILE, heldout.SESSIONS_NEXT_FILE)):
            histories, targets = heldout.read_sessions(data_root), heldout.read_sessions_next(data_root)
            self.sessions = [(s, items, targets[s]) for s, items in histories.items() if s in targets]
            pairs = [(u, i) for u, i, _ in splits.train + splits.validation]
            self.popular_hit = hit_rate(popular_lists(pairs, [h for _, h, _ in self.sessions], k),
                                        [t for _, _, t in self.sessions], k)
        else:
            self.notes.append(f"(b) skipped: no {heldout.SESSIONS_FILE} and {heldout.SESSIONS_NEXT_FILE} under "
                              f"{os.path.join(data_root, heldout.HELDOUT_DIR)}")
        self.timed = bool(splits.eval) and all(when is not None for _, _, when in splits.eval)
        if not self.timed:
            self.notes.append("(c) skipped: the eval split has no timestamps")

    def measure(self, name: str, model) -> Dict:
        k = self.k
        row: Dict = {"name": name}
        if F.RECOMMEND_BY_HISTORY not in model.signatures:
            row["note"] = f"no {F.RECOMMEND_BY_HISTORY} signature"
            self.models.append(row)
            return row
        ask = lambda *a, **kw: recommend(model, *a, k=k, num_items=self.num_items, **kw)  # noqa: E731
        if self.next:
            users, targets = [u for u, _ in self.next], [i for _, i in self.next]
            stored = ask(users, [[] for _ in users], True)
            before = ask(users, [sorted(self.before.get(u, ())) for u in users], False,
                         exclude=[self.eval_items.get(u, set()) for u in users])
            row["known_users"] = {"users": len(users), "stored": hit_rate(stored, targets, k),
                                  "train_validation": hit_rate(before, targets, k)}
            row["known_users"]["ratio"] = _ratio(row["known_users"]["stored"], row["known_users"]["train_validation"])
        if self.sessions:
            lists = ask([""] * len(self.sessions), [h for _, h, _ in self.sessions], False)
            hit = hit_rate(lists, [t for _, _, t in self.sessions], k)
            known = row.get("known_users", {}).get("stored")
            row["sessions"] = {"sessions": len(self.sessions), "hit_rate": hit, "most_popular": self.popular_hit,
                               "vs_most_popular": _ratio(hit, self.popular_hit), "known_users": known,
                               "vs_known_users": _ratio(hit, known)}
        if self.timed:
            row["fresh"] = []
            for j in FRESH_STEPS:
                cases = fresh_cases(self.splits, j)
                entry = {"j": j, "users": len(cases), "without": None, "without_excluded": None, "with": None,
                         "lift": None, "lift_scoring": None}
                if cases:
                    users, targets = [c[0] for c in cases], [c[3] for c in cases]
                    before = [c[1] for c in cases]
                    entry["without"] = hit_rate(ask(users, before, False), targets, k)
                    entry["without_excluded"] = hit_rate(ask(users, before, False, exclude=[set(c[2]) for c in cases]),
                                                         targets, k)
                    # As serving weighs them: the stored history 1, the request's fresh items the model's
                    # fresh_weight (sent here as 1 / fresh_weight for the history, since every item sent is scaled by it).
                    fresh = fresh_weight(model)
                    entry["fresh_weight"] = fresh
                    entry["with"] = hit_rate(ask(users, [c[1] + c[2] for c in cases], False,
                                                 weights=[[1.0 / fresh] * len(c[1]) + [1.0] * len(c[2]) for c in cases]),
                                             targets, k)
                    entry["lift"] = _ratio(entry["with"], entry["without"])
                    entry["lift_scoring"] = _ratio(entry["with"], entry["without_excluded"])
                row["fresh"].append(entry)
        self.models.append(row)
        return row

    def result(self) -> Dict:
        return {"k": self.k, "split": self.split, "protocol": PROTOCOL, "notes": self.notes,
                "next_users": len(self.next), "sessions": len(self.sessions),
                "sessions_most_popular": self.popular_hit, "models": self.models}


# --- markdown ------------------------------------------------------------------------------------------------

def _f(value, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _x(value) -> str:
    return "—" if value is None else f"{value:.2f}x"


def to_markdown(history: Dict) -> str:
    k = history["k"]
    lines = [f"## History as the model's input (`{F.RECOMMEND_BY_HISTORY}`, next-item HitRate@{k})", ""]
    lines += [f"- (a) {history['protocol']['known_users']}.",
              f"- (b) {history['protocol']['sessions']}.",
              f"- (c) {history['protocol']['fresh']}; split {history['split']}."]
    lines += [f"- {note}" for note in history.get("notes", [])]
    lines.append("")
    models = history.get("models", [])
    known = [m for m in models if "known_users" in m]
    if known:
        lines += ["(a) known users", "",
                  "| model | users | stored history (every split) | train + validation only | ratio |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| {m['name']} | {m['known_users']['users']} | {_f(m['known_users']['stored'])} | "
                  f"{_f(m['known_users']['train_validation'])} | {_x(m['known_users']['ratio'])} |" for m in known]
        lines.append("")
    sessions = [m for m in models if "sessions" in m]
    if sessions:
        lines += ["(b) unseen sessions", "",
                  "| model | sessions | model | most popular | x most popular | known users (a, stored) | "
                  "x known users |", "|---|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {m['name']} | {s['sessions']} | {_f(s['hit_rate'])} | {_f(s['most_popular'])} | "
                  f"{_x(s['vs_most_popular'])} | {_f(s['known_users'])} | {_x(s['vs_known_users'])} |"
                  for m in sessions for s in [m["sessions"]]]
        lines.append("")
    fresh = [m for m in models if m.get("fresh")]
    if fresh:
        lines += ["(c) fresh interactions in the request", "",
                  "| model | j | users | without the j items | without, excluded | with them | lift | "
                  "lift from scoring |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {m['name']} | {f['j']} | {f['users']} | {_f(f['without'])} | {_f(f['without_excluded'])} | "
                  f"{_f(f['with'])} | {_x(f['lift'])} | {_x(f['lift_scoring'])} |" for m in fresh for f in m["fresh"]]
        lines.append("")
    lines += [f"- {m['name']}: {m['note']}" for m in models if m.get("note")]
    return "\n".join(lines).rstrip() + "\n"


def summary(row: Dict) -> str:
    """One line of a model's history figures, for the benchmark's progress output."""
    parts = []
    if "known_users" in row:
        a = row["known_users"]
        parts.append(f"known users {_f(a['stored'])} stored vs {_f(a['train_validation'])} train + validation")
    if "sessions" in row:
        b = row["sessions"]
        parts.append(f"sessions {_f(b['hit_rate'])} ({_x(b['vs_most_popular'])} most popular)")
    for f in row.get("fresh", []):
        if f["j"] == 3:
            parts.append(f"3 fresh items {_f(f['with'])} vs {_f(f['without'])} ({_x(f['lift'])}; "
                         f"{_x(f['lift_scoring'])} from scoring)")
    return "; ".join(parts) or row.get("note", "nothing measured")
