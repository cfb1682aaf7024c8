"""A deterministic timeline of daily spans from the movie generator, for continuous training (`recsys sample --kind
timeline`).

DATA_ROOT/span-{N}/ holds day N's interactions.csv (user_id,item_id,rating,timestamp: that day's events only),
the catalogue as of that day (items.csv: every item released so far, with `active` false for those the shop has
delisted) and a `_SUCCESS` marker written last, so a reader never takes a half-written span. Over the days:
- new items are released every day; an item's pull decays with its age (popularity^a * freshness), so
  yesterday's releases are what many people pick today and old hits age out of the head;
- a few items are delisted every day: still listed (active=false), never picked again;
- new users arrive every day; returning users come back on some days (lognormal activity), and their
  taste drifts slowly (a small random walk of their latent factor, renormalised to its length);
- each active user picks a few distinct items they have not had before, by the same Gumbel-top-k choice
  model as data/synthetic.py (log popularity x freshness + taste x affinity), and rates them as it does.
The same spec writes the same bytes. The defaults make ~14,000 interactions a day (~100,000 a week).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict

import numpy as np

from components import features as F
from components.spans import SPAN_DIR, SUCCESS_MARKER, span_dir  # noqa: F401 (re-exported for callers)
from data import synthetic
from data.atomic_csv import atomic_csv


ACTIVE = "active"  # the items file's flag: false once the shop stops offering the item (components/availability.py)
ITEM_COLUMNS = (*synthetic.ITEM_COLUMNS, ACTIVE)


@dataclasses.dataclass(frozen=True)
class TimelineSpec:
    days: int = 14
    initial_items: int = 1500
    new_items_per_day: int = 40
    initial_users: int = 2500
    new_users_per_day: int = 60
    daily_active_share: float = 0.35  # of the users so far, on an average day (per-user propensity varies)
    picks_per_visit: float = 13.0  # mean distinct items a user picks on a day they are active
    freshness_days: float = 4.0  # an item's pull halves every this many days after release...
    freshness_floor: float = 0.15  # ...down to this share of its base popularity
    taste_drift: float = 0.05  # per day: sd of the random walk of a user's taste, relative to its length
    delisted_per_day: int = 3  # from day 2: items the shop stops offering (listed with active=false, never picked again)
    latent_dim: int = 8
    taste: float = 3.0
    noise_sd: float = 0.45
    seed: int = 11
    start_timestamp: int = 1_700_000_000


def generate(out_dir: str, spec: TimelineSpec = TimelineSpec()) -> Dict[str, int]:
    """Writes span-1 .. span-{days} under `out_dir`; returns counts written."""
    rng = np.random.default_rng(spec.seed)
    total_items = spec.initial_items + spec.new_items_per_day * spec.days
    total_users = spec.initial_users + spec.new_users_per_day * spec.days
    catalogue = synthetic.SampleSpec(num_items=total_items, latent_dim=spec.latent_dim)
    item_genres, item_factors, years, genre_vectors = synthetic._items(catalogue, rng)
    released = np.concatenate([np.zeros(spec.initial_items, np.int64),
                               np.repeat(np.arange(1, spec.days + 1), spec.new_items_per_day)])
    base_log_pop = -np.log1p(rng.permutation(total_items)).astype(np.float64)
    item_bias = rng.normal(0, 0.35, total_items)
    user_factors = np.stack([synthetic._user_factor(catalogue, genre_vectors, rng) for _ in range(total_users)])
    joined = np.concatenate([np.zeros(spec.initial_users, np.int64),
                             np.repeat(np.arange(1, spec.days + 1), spec.new_users_per_day)])
    propensity = rng.lognormal(0.0, 0.8, total_users)
    propensity *= spec.daily_active_share / propensity.mean()
    user_bias = rng.normal(0, 0.3, total_users)
    seen = [set() for _ in range(total_users)]
    delisted = np.zeros(total_items, bool)
    scale, rating_scale = spec.taste / np.sqrt(spec.latent_dim), 1.0 / np.sqrt(spec.latent_dim)
    counts = {"days": spec.days, "interactions": 0, "items": total_items, "users": 0}
    os.makedirs(out_dir, exist_ok=True)
    for day in range(1, spec.days + 1):
        day_rng = np.random.default_rng([spec.seed, day])
        # Taste drifts a little every day (a random walk kept at each user's own length).
        length = np.linalg.norm(user_factors, axis=1, keepdims=True)
        user_factors = user_factors + day_rng.normal(0, spec.taste_drift, user_factors.shape) * length
        user_factors *= length / np.maximum(np.linalg.norm(user_factors, axis=1, keepdims=True), 1e-9)
        offered = np.flatnonzero((released <= day) & ~delisted)
        if day > 1 and spec.delisted_per_day:  # its own stream: the day's other draws do not depend on it
            older = offered[released[offered] < day]
            gone = np.random.default_rng([spec.seed, day, 1]).choice(
                older, size=min(spec.delisted_per_day, len(older)), replace=False)
            delisted[gone] = True
        live = np.flatnonzero((released <= day) & ~delisted)
        age = day - released[live]
        freshness = np.maximum(0.5 ** (age / spec.freshness_days), spec.freshness_floor)
        log_weight = base_log_pop[live] + np.log(freshness)
        present = np.flatnonzero(joined <= day)
        # A new user's first day always counts; others come back with their propensity.
        active = present[(joined[present] == day) | (day_rng.random(len(present)) < np.minimum(propensity[present], 1))]
        rows = []
        for u in active:
            k = min(int(day_rng.poisson(spec.picks_per_visit)) + 1, len(live) - len(seen[u]))
            if k <= 0:
                continue
            logits = log_weight + scale * (item_factors[live] @ user_factors[u]) + day_rng.gumbel(size=len(live))
            if seen[u]:
                logits[np.isin(live, list(seen[u]))] = -np.inf
            picked = live[np.argpartition(-logits, k - 1)[:k]]
            seen[u].update(picked.tolist())
            dots = item_factors[picked] @ user_factors[u] * rating_scale
            raw = synthetic.RATING_MEAN + user_bias[u] + item_bias[picked] + dots - dots.mean() + \
                day_rng.normal(0, spec.noise_sd, k)
            ratings = np.clip(np.round(raw * 2) / 2, synthetic.RATING_MIN, synthetic.RATING_MAX)
            stamps = spec.start_timestamp + (day - 1) * synthetic.SECONDS_PER_DAY + np.sort(
                day_rng.integers(0, synthetic.SECONDS_PER_DAY, k))
            rows.extend((synthetic.user_key(u), synthetic.item_key(i), float(r), int(t))
                        for i, r, t in zip(picked, ratings, stamps))
        rows.sort(key=lambda row: (row[3], row[0], row[1]))
        directory = span_dir(out_dir, day)
        os.makedirs(directory, exist_ok=True)
        marker = os.path.join(directory, SUCCESS_MARKER)
        if os.path.exists(marker):
            os.remove(marker)  # rewriting a span: incomplete until its files are in place again
        with atomic_csv(os.path.join(directory, F.ITEMS_FILE), ITEM_COLUMNS) as w:
            for i in np.flatnonzero(released <= day):
                w.writerow((synthetic.item_key(i), f"Title {i + 1}",
                            synthetic.GENRE_SEPARATOR.join(synthetic.GENRES[g] for g in item_genres[i]),
                            int(years[i]), "false" if delisted[i] else "true"))
        with atomic_csv(os.path.join(directory, F.INTERACTIONS_FILE), synthetic.INTERACTION_COLUMNS) as w:
            w.writerows(rows)
        with open(marker, "w"):
            pass
        counts["interactions"] += len(rows)
        counts["users"] = len(present)
    return counts
