"""An SVD-style rating reference for `recsys benchmark`: biased matrix factorisation fitted by alternating least
squares, outside TensorFlow and the pipeline, on the same split as the rating models.

rating = mu + b_user + b_item + <p_user, q_item>, each side solved in closed form in turn with the L2 penalty
scaled by the row's rating count (ALS-WR, Zhou et al. 2008), so one lambda fits users and items of any
activity. Lambda is chosen on the validation split from a short grid, then the model is refitted on
train + validation, as the pipeline's rating models are; an id the fit never saw falls back to the mean
and the other side's bias. It is the same model family as Surprise's SVD (which fits it by SGD).
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np

Interaction = Tuple[str, str, float]
FACTORS = 32
ITERATIONS = 12
LAMBDAS = (0.03, 0.06, 0.12)  # per rating (ALS-WR); the grid's ends bracket ML-100K/1M-shaped data
SEED = 7
CHUNK = 8192  # ratings per batched outer-product sum (8192 x 33 x 33 doubles: 71 MB)


class _Fit:
    def __init__(self, users: Dict[str, int], items: Dict[str, int], mean: float, p: np.ndarray, q: np.ndarray):
        self.users, self.items, self.mean, self.p, self.q = users, items, mean, p, q

    def predict(self, pairs: Sequence[Tuple[str, str]]) -> np.ndarray:
        """p and q carry the biases as their last columns (p: [.., b_u, 1], q: [.., 1, b_i])."""
        out = np.full(len(pairs), self.mean)
        for n, (user, item) in enumerate(pairs):
            u, i = self.users.get(user), self.items.get(item)
            if u is not None and i is not None:
                out[n] += self.p[u] @ self.q[i]
            elif u is not None:
                out[n] += self.p[u, -2]
            elif i is not None:
                out[n] += self.q[i, -1]
        return out


def _solve_side(owner: np.ndarray, other_index: np.ndarray, target: np.ndarray, other: np.ndarray, fixed: int,
                lam: float, out: np.ndarray) -> None:
    """Least squares of every row's free columns (all but `fixed`, which stays 1) given the other side, in one
    batched solve; `owner` (sorted) says whose rating each entry is."""
    free = [c for c in range(other.shape[1]) if c != fixed]
    x = other[other_index]
    design = x[:, free]
    residual = target - x[:, fixed]  # the other side's bias column times our constant 1
    rows, width = out.shape[0], len(free)
    gram, rhs = np.zeros((rows, width, width)), np.zeros((rows, width))
    for start in range(0, len(owner), CHUNK):  # sums of outer products per owner, a chunk at a time
        part = slice(start, start + CHUNK)
        who = owner[part]
        firsts = np.flatnonzero(np.r_[True, who[1:] != who[:-1]])
        d = design[part]
        gram[who[firsts]] += np.add.reduceat(d[:, :, None] * d[:, None, :], firsts)
        rhs[who[firsts]] += np.add.reduceat(d * residual[part, None], firsts)
    counts = np.bincount(owner, minlength=rows)
    gram += (lam * np.maximum(counts, 1))[:, None, None] * np.eye(width)
    from threadpoolctl import threadpool_limits  # a dependency of implicit

    with threadpool_limits(1, "blas"):  # thousands of 33x33 systems: a BLAS thread pool per system is 300x slower
        solved = np.linalg.solve(gram, rhs[:, :, None])[:, :, 0]
    seen = counts > 0
    out[np.ix_(seen, free)] = solved[seen]


def _fit(ratings: Sequence[Interaction], lam: float) -> _Fit:
    users = {u: n for n, u in enumerate(sorted({u for u, _, _ in ratings}))}
    items = {i: n for n, i in enumerate(sorted({i for _, i, _ in ratings}))}
    u = np.array([users[x] for x, _, _ in ratings])
    i = np.array([items[x] for _, x, _ in ratings])
    r = np.array([x for _, _, x in ratings], np.float64)
    mean = float(r.mean())
    rng = np.random.default_rng(SEED)
    k = FACTORS
    # Columns 0..k-1: factors; user row [p, b_u, 1], item row [q, 1, b_i].
    p = np.concatenate([rng.normal(0, 0.1, (len(users), k)), np.zeros((len(users), 1)), np.ones((len(users), 1))], 1)
    q = np.concatenate([rng.normal(0, 0.1, (len(items), k)), np.ones((len(items), 1)), np.zeros((len(items), 1))], 1)
    by_user, by_item = np.argsort(u, kind="stable"), np.argsort(i, kind="stable")
    for _ in range(ITERATIONS):
        _solve_side(u[by_user], i[by_user], r[by_user] - mean, q, fixed=k + 1, lam=lam, out=p)  # q[k+1]: b_i
        _solve_side(i[by_item], u[by_item], r[by_item] - mean, p, fixed=k, lam=lam, out=q)  # p[k]: b_u
    return _Fit(users, items, mean, p, q)


def fit_predict(train: Sequence[Interaction], validation: Sequence[Interaction], held_out: Sequence[Interaction]
                ) -> Tuple[np.ndarray, float]:
    """Predictions for `held_out` and the lambda chosen on `validation` (the grid's middle without one)."""
    lam = LAMBDAS[len(LAMBDAS) // 2]
    if validation:
        pairs = [(u, i) for u, i, _ in validation]
        truth = np.array([r for _, _, r in validation])
        errors = {x: float(np.sqrt(np.mean((_fit(train, x).predict(pairs) - truth) ** 2))) for x in LAMBDAS}
        lam = min(errors, key=errors.get)
    fitted = _fit(list(train) + list(validation), lam)
    return fitted.predict([(u, i) for u, i, _ in held_out]), lam
