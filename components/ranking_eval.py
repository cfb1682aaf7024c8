"""Top-k evaluation shared by the ranking gate, `recsys benchmark` and the tests.

The protocol: every held-out interaction is relevant; each user's list ranks the whole catalogue,
scored from the user's history before the held-out split (what the model was fitted on: train, plus
validation in the pipeline's gate) with only that history removed, never the held-out items; Recall@k divides the hits by min(k, relevant),
NDCG@k uses binary gains. The references (most popular, ItemKNN, EASE) are computed here from the
same training pairs, so a model is always shown next to them on the same split.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import math
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np
from scipy import sparse

Pair = Tuple[str, str]  # user id, item id
# users -> [len(users), num_items] scores over Interactions.items (higher is better)
Scorer = Callable[[np.ndarray], np.ndarray]

EASE_DEFAULT_LAMBDA = 500.0
ITEM_KNN_DEFAULT_NEIGHBOURS = 100


def ranking_metrics(ranked: Mapping[str, Sequence[str]], relevant: Mapping[str, Set[str]],
                    k: int) -> Dict[str, float]:
    """Mean Recall@k and NDCG@k over the users with at least one relevant item."""
    recalls, ndcgs = [], []
    for user, items in relevant.items():
        if not items:
            continue
        top = list(ranked.get(user, ()))[:k]
        gains = [1.0 / math.log2(rank + 2) for rank, item in enumerate(top) if item in items]
        ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(k, len(items))))
        recalls.append(len(gains) / min(k, len(items)))
        ndcgs.append(sum(gains) / ideal)
    if not recalls:
        return {"recall": 0.0, "ndcg": 0.0, "users": 0}
    return {"recall": float(np.mean(recalls)), "ndcg": float(np.mean(ndcgs)), "users": len(recalls)}


def recall_per_user(ranked: Mapping[str, Sequence[str]], relevant: Mapping[str, Set[str]], users: Sequence[str],
                    k: int) -> np.ndarray:
    """Each of `users`' Recall@k (the terms ranking_metrics averages), in that order: two models' lists over the
    same users pair up for a paired comparison."""
    return np.array([len(set(list(ranked.get(u, ()))[:k]) & relevant[u]) / min(k, len(relevant[u])) for u in users],
                    dtype=np.float64)


def paired_upper_bound(candidate: np.ndarray, baseline: np.ndarray, confidence: float) -> float:
    """One-sided upper confidence bound of the mean per-user difference candidate - baseline (normal approximation:
    a mean over users). At confidence 0.5 it is the difference itself."""
    from scipy import stats

    difference = np.asarray(candidate, np.float64) - np.asarray(baseline, np.float64)
    if len(difference) == 0:
        return 0.0
    spread = difference.std(ddof=1) / math.sqrt(len(difference)) if len(difference) > 1 else 0.0
    return float(difference.mean() + stats.norm.ppf(confidence) * spread)


def coverage(ranked: Mapping[str, Sequence[str]], num_items: int, k: int) -> float:
    """Share of the catalogue that appears in at least one top-k list."""
    shown = {item for items in ranked.values() for item in list(items)[:k]}
    return len(shown) / max(1, num_items)


def relevant_by_user(pairs: Iterable[Pair]) -> Dict[str, Set[str]]:
    out: Dict[str, Set[str]] = {}
    for user, item in pairs:
        out.setdefault(user, set()).add(item)
    return out


@dataclasses.dataclass
class Interactions:
    """Training pairs as a binary user x item CSR matrix with the id <-> row/column maps."""

    users: List[str]
    items: List[str]
    matrix: sparse.csr_matrix  # [len(users), len(items)] float32, 1.0 per interacted pair

    @classmethod
    def from_pairs(cls, pairs: Iterable[Pair], items: Optional[Sequence[str]] = None) -> "Interactions":
        pairs = list(pairs)
        users = sorted({u for u, _ in pairs})
        item_list = list(items) if items is not None else sorted({i for _, i in pairs})
        user_index = {u: n for n, u in enumerate(users)}
        item_index = {i: n for n, i in enumerate(item_list)}
        rows = np.fromiter((user_index[u] for u, i in pairs if i in item_index), dtype=np.int64)
        cols = np.fromiter((item_index[i] for _, i in pairs if i in item_index), dtype=np.int64)
        matrix = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(users), len(item_list)))
        matrix.data[:] = 1.0  # duplicates collapse to one interaction
        matrix.sum_duplicates()
        matrix.data[:] = 1.0
        return cls(users, item_list, matrix)

    @classmethod
    def from_codes(cls, user_codes: np.ndarray, item_codes: np.ndarray, user_names: Sequence[str],
                   item_names: Sequence[str]) -> "Interactions":
        """from_pairs for pairs given as int codes into `user_names` / `item_names` (no Python object per pair):
        the same rows and columns (the ids present, sorted), duplicates collapsed."""
        def remap(codes: np.ndarray, names: Sequence[str]) -> Tuple[List[str], np.ndarray]:
            present = np.unique(codes)
            ids = [names[c] for c in present.tolist()]
            order = sorted(range(len(ids)), key=ids.__getitem__)
            position = np.full(len(names), -1, np.int64)
            position[present[order]] = np.arange(len(order))
            return [ids[n] for n in order], position

        users, user_row = remap(np.asarray(user_codes), user_names)
        items, item_column = remap(np.asarray(item_codes), item_names)
        rows, cols = user_row[np.asarray(user_codes)], item_column[np.asarray(item_codes)]
        matrix = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(users), len(items)))
        matrix.sum_duplicates()
        matrix.data[:] = 1.0
        return cls(users, items, matrix)

    def history(self) -> Mapping[str, List[str]]:
        """user -> the user's items, read from the matrix on demand (no set per user is built)."""
        return _RowView(self)

    @property
    def user_index(self) -> Dict[str, int]:
        return {u: n for n, u in enumerate(self.users)}

    def item_counts(self) -> np.ndarray:
        return np.asarray(self.matrix.sum(axis=0)).ravel()


class _RowView(collections.abc.Mapping):
    """Interactions.history(): a read-only Mapping over the CSR rows."""

    def __init__(self, interactions: Interactions):
        self._interactions, self._index = interactions, interactions.user_index

    def __getitem__(self, user: str) -> List[str]:
        row = self._index[user]
        matrix, items = self._interactions.matrix, self._interactions.items
        return [items[c] for c in matrix.indices[matrix.indptr[row]:matrix.indptr[row + 1]].tolist()]

    def __iter__(self):
        return iter(self._interactions.users)

    def __len__(self) -> int:
        return len(self._interactions.users)


def top_k(train: Interactions, scorer: Scorer, users: Sequence[str], k: int,
          batch: int = 512) -> Dict[str, List[str]]:
    """Top-k items per user from `scorer`, the user's training items removed (unknown users: no exclusions)."""
    index = train.user_index
    known = np.array([index.get(u, -1) for u in users])
    ranked: Dict[str, List[str]] = {}
    items = np.asarray(train.items, dtype=object)
    matrix = train.matrix
    order = getattr(scorer, "global_order", None)
    if order is not None:  # one ranking for everyone: each list is its head without the user's items
        for user, row in zip(users, known.tolist()):
            seen = matrix.indices[matrix.indptr[row]:matrix.indptr[row + 1]] if row >= 0 else ()
            head = order[:k + len(seen)]
            ranked[user] = list(items[head[~np.isin(head, seen)][:k]])
        return ranked
    for start in range(0, len(users), batch):
        rows = known[start:start + batch]
        seen = [matrix.indices[matrix.indptr[r]:matrix.indptr[r + 1]] if r >= 0 else () for r in rows]
        order = top_k_indices(scorer(rows), seen, k)
        for n, user in enumerate(users[start:start + batch]):
            ranked[user] = list(items[order[n]])
    return ranked


def top_k_indices(scores: np.ndarray, excluded: Sequence[Sequence[int]], k: int, ordered: bool = True) -> np.ndarray:
    """[rows, k] column indices of each row's highest scores, the row's `excluded` columns left out
    (best first when `ordered`; recall needs only the set)."""
    scores = np.array(scores, dtype=np.float64, copy=True)
    for n, columns in enumerate(excluded):
        scores[n, np.asarray(columns, dtype=np.int64)] = -np.inf
    kk = min(k, scores.shape[1])
    part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
    if not ordered:
        return part
    return np.take_along_axis(part, np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable"), 1)


def _history(train: Interactions, rows: np.ndarray) -> sparse.csr_matrix:
    """The users' training rows (an all-zero row for an unknown user)."""
    safe = np.where(rows >= 0, rows, 0)
    history = train.matrix[safe].astype(np.float32)
    return sparse.diags((rows >= 0).astype(np.float32)) @ history


def most_popular(train: Interactions) -> Scorer:
    """Every user's scores are the items' training counts; `top_k` walks its `global_order` instead (most
    counted first, ties by catalogue order) rather than sorting a users x catalogue matrix."""
    counts = train.item_counts().astype(np.float64)

    def score(rows: np.ndarray) -> np.ndarray:
        return np.tile(counts, (len(rows), 1))
    score.global_order = np.argsort(-counts, kind="stable")
    return score


def spd_inverse(matrix: np.ndarray) -> np.ndarray:
    """The inverse of a symmetric positive definite float64 matrix, by Cholesky (LAPACK potrf, potri): half the
    flops of np.linalg.inv's LU (8,000 x 8,000: 13.3 s against 22.8 s on 2 cores). Overwrites `matrix`."""
    from scipy.linalg import lapack

    # Symmetric, so its transpose (Fortran order: no copy) is the same matrix, factored in place.
    factor, info = lapack.dpotrf(matrix.T, lower=False, clean=False, overwrite_a=True)
    if info == 0:
        factor, info = lapack.dpotri(factor, lower=False, overwrite_c=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"the matrix is not positive definite (LAPACK info {info})")
    inverse = np.triu(factor)  # potri fills the upper triangle only
    inverse += np.triu(inverse, 1).T
    return inverse


def ease_weights(matrix: sparse.spmatrix, lam: float = EASE_DEFAULT_LAMBDA) -> np.ndarray:
    """EASE (Steck 2019): B = I - P / diag(P), P = (X^T X + lam I)^-1; zero diagonal. O(items^2) memory."""
    if lam <= 0:
        raise ValueError(f"ease: lambda must be positive, not {lam}")
    gram = np.asarray((matrix.T @ matrix).todense(), dtype=np.float64)
    gram[np.diag_indices_from(gram)] += lam
    precision = spd_inverse(gram)  # X^T X is positive semi-definite: with lam > 0, definite
    del gram
    weights = precision / (-np.diag(precision))
    weights[np.diag_indices_from(weights)] = 0.0
    return weights.astype(np.float32)


def ease(train: Interactions, lam: float = EASE_DEFAULT_LAMBDA) -> Scorer:
    weights = ease_weights(train.matrix, lam)
    return lambda rows: np.asarray(_history(train, rows) @ weights)


def item_knn(train: Interactions, neighbours: int = ITEM_KNN_DEFAULT_NEIGHBOURS) -> Scorer:
    """Cosine item-item similarities, each item keeping its `neighbours` most similar others."""
    norms = np.sqrt(train.item_counts()).astype(np.float64)
    norms[norms == 0] = 1.0
    co = np.asarray((train.matrix.T @ train.matrix).todense(), dtype=np.float64)
    sim = co / norms[:, None] / norms[None, :]
    np.fill_diagonal(sim, 0.0)
    if neighbours < sim.shape[1]:
        cut = np.argpartition(-sim, neighbours - 1, axis=1)[:, neighbours:]
        np.put_along_axis(sim, cut, 0.0, axis=1)
    sim = sim.astype(np.float32)
    return lambda rows: np.asarray(_history(train, rows) @ sim.T)


# saved_model_top_k's calls: users per call, and users x catalogue scores a call may hold (128 MB of float32).
MAX_USERS_PER_CALL, MAX_SCORED_CELLS = 256, 1 << 25
IALS_DEFAULT_FACTORS, IALS_DEFAULT_ITERATIONS = 64, 15  # the `implicit` library's usual settings, untuned


def ials_available() -> bool:
    """Whether the optional `implicit` library (iALS) is importable."""
    try:
        import implicit.cpu.als  # noqa: F401
        return True
    except ImportError:
        return False


def ials(train: Interactions, factors: int = IALS_DEFAULT_FACTORS,
         iterations: int = IALS_DEFAULT_ITERATIONS) -> Scorer:
    """iALS (Hu et al. 2008) from the `implicit` library, untuned; ImportError when it is not installed."""
    from implicit.cpu.als import AlternatingLeastSquares  # optional dependency
    from threadpoolctl import threadpool_limits  # a dependency of implicit

    with threadpool_limits(1, "blas"):  # implicit parallelises itself; a BLAS pool on top slows it down
        model = AlternatingLeastSquares(factors=factors, iterations=iterations, random_state=0)
        model.fit(train.matrix.tocsr().astype(np.float32), show_progress=False)
    users, items = np.asarray(model.user_factors), np.asarray(model.item_factors)

    def score(rows: np.ndarray) -> np.ndarray:
        vectors = np.where((rows >= 0)[:, None], users[np.maximum(rows, 0)], 0.0)  # unknown users: zeros
        return vectors @ items.T
    return score


def saved_model_top_k(saved_model, users: Sequence[str], history: Mapping[str, Set[str]], k: int) -> Dict[str, List[str]]:
    """Each user's top-k over the model's whole catalogue, scored from `history` and with it excluded.

    `recommend_by_history` is asked with each user's id (their attributes) and exactly that history
    (use_stored_history False: the served model's stored history also holds the eval split, which must
    stay unseen here). A model exported before that signature existed is asked by `recommend_filtered`
    with the history as its exclusion list (it scores from its own stored history), or by `recommend`
    for k + len(history) items, the history dropped here: the same lists.
    """
    import tensorflow as tf

    from components import features as F

    ranked: Dict[str, List[str]] = {}
    k_tensor, no = tf.constant(k, tf.int32), tf.constant(False)
    everything = tf.constant([], tf.string)
    if F.RECOMMEND_BY_HISTORY in saved_model.signatures:
        recommend = saved_model.signatures[F.RECOMMEND_BY_HISTORY]
        catalogue = getattr(saved_model, "catalog_item_ids", None)
        num_items = int(catalogue.shape[0]) if catalogue is not None else 0
        # Users of similar history length share a call ("" pads a row); the scores a call holds stay bounded.
        batch = max(1, min(MAX_USERS_PER_CALL, MAX_SCORED_CELLS // max(1, num_items)))
        order = sorted(users, key=lambda u: len(history.get(u, ())))
        for start in range(0, len(order), batch):
            chunk = order[start:start + batch]
            seen = [sorted(history.get(u, ())) for u in chunk]
            width = max(len(h) for h in seen)
            padded = tf.constant([h + [""] * (width - len(h)) for h in seen], tf.string) if width else \
                tf.zeros([len(chunk), 0], tf.string)
            out = recommend(**{F.USER_ID: tf.constant(chunk), F.HISTORY_ITEMS_INPUT: padded,
                               F.HISTORY_WEIGHTS_INPUT: tf.zeros([len(chunk), 0], tf.float32),
                               F.USE_STORED_HISTORY_INPUT: no, F.K_INPUT: k_tensor,
                               F.EXCLUDE_ITEMS_INPUT: everything, F.ALLOW_ITEMS_INPUT: everything})
            for user, row in zip(chunk, out[F.ITEMS_OUTPUT].numpy()):
                ranked[user] = [i.decode("utf-8") for i in row if i]
        return ranked
    if F.RECOMMEND_FILTERED in saved_model.signatures:
        recommend = saved_model.signatures[F.RECOMMEND_FILTERED]
        for user in users:
            seen = sorted(history.get(user, ()))
            out = recommend(**{F.USER_ID: tf.constant([user]), F.K_INPUT: k_tensor, F.EXCLUDE_RATED_INPUT: no,
                               F.EXCLUDE_ITEMS_INPUT: tf.constant(seen, tf.string), F.ALLOW_ITEMS_INPUT: everything})
            # an empty id marks a slot with no candidate left (the user excluded nearly everything)
            ranked[user] = [i.decode("utf-8") for i in out[F.ITEMS_OUTPUT].numpy()[0] if i]
        return ranked
    if F.RECOMMEND not in saved_model.signatures:
        raise ValueError(f"the model has neither a {F.RECOMMEND_FILTERED!r} nor a {F.RECOMMEND!r} signature")
    recommend = saved_model.signatures[F.RECOMMEND]
    for user in users:
        seen = history.get(user, set())
        out = recommend(**{F.USER_ID: tf.constant([user]), F.K_INPUT: tf.constant(k + len(seen), tf.int32),
                           F.EXCLUDE_RATED_INPUT: no})
        items = (i.decode("utf-8") for i in out[F.ITEMS_OUTPUT].numpy()[0])
        ranked[user] = [i for i in items if i and i not in seen][:k]
    return ranked
