"""What the generated samples share: how many interactions each user gets (a long-tailed activity)."""

from __future__ import annotations

import numpy as np


def activity_counts(num_users: int, num_items: int, total: int, minimum: int, max_user_share: float, sigma: float,
                    rng: np.random.Generator, noun: str = "interactions") -> np.ndarray:
    """Interactions per user: lognormal(0, sigma), at least `minimum`, at most max_user_share of the catalogue
    (more only when the total needs it), summing to `total`; each user meets an item at most once."""
    n = num_users
    if n <= 0 or num_items <= 0 or total < 0:
        raise ValueError(f"a sample needs users, items and {noun} >= 0, got {n}, {num_items}, {total}")
    if total > n * num_items:
        raise ValueError(f"num_{noun} {total} exceeds num_users * num_items = {n * num_items} "
                         f"(each user meets an item at most once)")
    cap = min(num_items, max(int(max_user_share * num_items), 2 * -(-total // n)))
    floor = min(minimum, total // n, cap)
    counts = np.full(n, floor, dtype=np.int64)
    weights = rng.lognormal(0.0, sigma, n)
    left = total - counts.sum()
    while left > 0:  # share out the rest by weight; users at the cap drop out of the share
        open_ = counts < cap
        if not open_.any():
            cap = num_items
            continue
        share = np.where(open_, weights, 0.0)
        want = share / share.sum() * left
        add = np.minimum(np.floor(want).astype(np.int64), cap - counts)
        if add.sum() == 0:  # fewer than one each: largest remainders first
            order = np.argsort(-(want - np.floor(want)), kind="stable")
            add = np.zeros(n, np.int64)
            add[[u for u in order if open_[u]][:left]] = 1
        counts += add
        left = total - counts.sum()
    return counts
