"""How much a request's fresh interactions weigh against a user's stored history, chosen on validation.

`recommend_by_history` adds the items of a request (what the user did since the run) to the history the
model stored for them. Whether the newest interactions say more about the next one than the rest of the
history is a property of the data (interests drift in real logs; a log in random order has no such
signal), so the weight is measured, not assumed: with the default split on timestamped data, validation
holds each user's interactions after their training ones. Half of a user's validation items play the
fresh interactions (weighted w, the training history 1), the other half are relevant; the w of a grid
with the best Recall@10 wins, and 1 unless it beats 1 by a margin. The exported model multiplies a request
item's weight by it only beside a stored history (stored items weigh 1); sessions and the ranking gate's
explicit histories keep their own weights (components/signatures.py).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from components.ranking_eval import top_k_indices

GRID = (1.0, 2.0, 4.0, 8.0)
MIN_GAIN = 0.01  # relative Recall@10 a weight above 1 must add to be chosen
K = 10


def tune(score_history: Callable[[tf.SparseTensor, np.ndarray], np.ndarray], row_splits: np.ndarray,
         items: np.ndarray, validation_pairs: np.ndarray, num_items: int, seed: int = 0,
         max_users: int = 1000, batch: int = 256) -> float:
    """The weight of fresh interactions; `score_history(history [B, num_items] SparseTensor, users) -> [B, N]`."""
    rng = np.random.default_rng(seed)
    by_user = {}
    for user, item in np.asarray(validation_pairs, np.int64).reshape(-1, 2).tolist():
        by_user.setdefault(user, set()).add(item)
    users = sorted(u for u, got in by_user.items() if len(got) >= 2 and u + 1 < len(row_splits))
    if not users:
        return 1.0
    if len(users) > max_users:
        users = sorted(rng.choice(users, max_users, replace=False).tolist())
    fresh, relevant = {}, {}
    for user in users:
        order = rng.permutation(sorted(by_user[user]))
        half = len(order) // 2
        fresh[user], relevant[user] = order[:half], set(order[half:].tolist())

    def recall(weight: float) -> float:
        values = []
        for start in range(0, len(users), batch):
            chunk = users[start:start + batch]
            rows, cols, vals, lengths = [], [], [], []
            for n, user in enumerate(chunk):
                stored = items[row_splits[user]:row_splits[user + 1]]
                new = np.setdiff1d(fresh[user], stored)
                lengths.append(len(stored) + len(new))
                rows += [n] * lengths[-1]
                cols += stored.tolist() + new.tolist()
                vals += [1.0] * len(stored) + [weight] * len(new)
            rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
            order = np.lexsort((cols, rows))
            history = tf.SparseTensor(np.stack([rows[order], cols[order]], 1), np.asarray(vals, np.float32)[order],
                                      [len(chunk), num_items])
            scores = score_history(history, np.asarray(chunk, np.int64))
            seen = np.split(cols, np.cumsum(lengths)[:-1])  # each row's items (rows are appended in order)
            top = top_k_indices(scores, seen, K, ordered=False)
            for n, user in enumerate(chunk):
                values.append(len(relevant[user].intersection(top[n].tolist())) / min(K, len(relevant[user])))
        return float(np.mean(values))

    results = {weight: recall(weight) for weight in GRID}
    best = max(GRID, key=lambda w: (results[w], -w))
    chosen = best if results[best] > results[1.0] * (1 + MIN_GAIN) else 1.0
    print("fresh interactions: validation Recall@10 by weight " +
          ", ".join(f"{w:g}: {r:.4f}" for w, r in results.items()) + f"; weight {chosen:g}", flush=True)
    return chosen
