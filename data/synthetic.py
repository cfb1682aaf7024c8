"""Deterministic synthetic interactions with planted taste, so tests can assert real learning.

Taste is planted in WHICH items a user picks, not only in the rating values, as in public rating logs:
- item popularity is Zipf-like and user activity lognormal (long tails; every user has a few ratings);
- each user picks distinct items with probability proportional to popularity^a * exp(beta * affinity),
  where affinity is the dot product of latent user and item factors tied to genres (Gumbel-top-k: add
  Gumbel noise to the log-weights and keep the k best; exact over catalogues up to POOL_ITEMS, and over
  the popular head plus a uniform sample of the tail, importance-corrected, for larger ones);
- ratings are mu + user bias + item bias + affinity + noise, rounded to halves and clipped;
- each user's interactions are spread over an active period in random order, so a time split holds
  out items drawn from the same taste as the user's past.
So most-popular beats random, a taste-aware recommender (EASE, ItemKNN, a trained model) beats
most-popular, and a rating model must beat the global mean. Users are generated in fixed blocks, each
from its own random stream, and rows are streamed to disk (temp file, then rename): the file is the
same for any chunk_size and 10M ratings take bounded memory.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from components import features as F
from data import heldout
from data.atomic_csv import atomic_csv
from data.sampling import activity_counts

GENRES = (
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)
_ADJECTIVES = (
    "Silent", "Crimson", "Lost", "Broken", "Golden", "Hidden", "Last", "Distant", "Wild",
    "Frozen", "Electric", "Midnight", "Secret", "Burning", "Hollow", "Northern",
)
_NOUNS = (
    "Harbor", "Empire", "Garden", "River", "Signal", "Kingdom", "Witness", "Orchard",
    "Horizon", "Stranger", "Voyage", "Machine", "Summer", "Letter", "Mountain", "Circus",
)

USER_BLOCK = 256  # users per random stream: the unit of determinism, independent of chunk_size
POOL_ITEMS = 4096  # catalogues up to this size are ranked whole for every user (exact sampling)
POOL_HEAD = 1024  # larger ones: these most popular items + a uniform sample of the rest
SECONDS_PER_DAY = 86_400
RATING_MEAN = 3.5
RATING_MIN, RATING_MAX = 0.5, 5.0  # half-star ratings, as in MovieLens
# This dataset's own layout (the data contract infers features from the files, so none of it is shared code).
INTERACTION_COLUMNS = (F.USER_ID, F.ITEM_ID, F.RATING, F.TIMESTAMP)
TITLE, GENRES_COLUMN, YEAR = "title", "genres", "year"
ITEM_COLUMNS = (F.ITEM_ID, TITLE, GENRES_COLUMN, YEAR)
GENRE_SEPARATOR = "|"


@dataclasses.dataclass(frozen=True)
class SampleSpec:
    """Size and shape of a generated dataset; the defaults are the bundled sample."""

    num_users: int = 2000
    num_items: int = 2000
    num_ratings: int = 100_000
    latent_dim: int = 8
    noise_sd: float = 0.45
    seed: int = 42
    start_timestamp: int = 1_600_000_000
    chunk_size: int = 200_000  # rows buffered per write; does not change the output
    # Choice model: log-weight of item i for user u = popularity_exponent * log(pop_i) + taste * affinity(u, i).
    zipf_exponent: float = 1.0  # pop_i = rank_i ** -zipf_exponent
    popularity_exponent: float = 1.0
    taste: float = 3.0
    min_user_ratings: int = 5
    activity_sigma: float = 1.0  # lognormal spread of the number of ratings per user
    max_user_share: float = 0.4  # the most active users rate at most this share of the catalogue
    span_days: int = 3 * 365  # the log covers this period; each user is active in part of it
    # Held-out data (data/heldout.py, under heldout/; never read by the pipeline): anonymous sessions of this many
    # new users, and each user's next interaction for at most max_next_users users (the first ones; all by default
    # up to that size: 10M ratings have 200,000 users, and scoring each one's next item again costs time).
    num_sessions: int = 300
    max_next_users: int = 100_000
    # Drift of taste within each user's log (0: none, the default: consumption order is random, so a user's newest
    # interactions are like any others). Above 0, each user's items are ordered along a direction of taste of their
    # own (ordering key = taste_drift * z-scored projection + standard normal noise): the newest interactions lean
    # the same way, as a user's current interest does in real logs. Only timestamps move: the same (user, item,
    # rating) rows, drawn from a stream of their own, so taste_drift 0 writes the same bytes as before it existed.
    taste_drift: float = 0.0


def user_key(index: int) -> str:
    return f"u{index + 1:05d}"


def item_key(index: int) -> str:
    return f"i{index + 1:05d}"


def _items(spec: SampleSpec, rng: np.random.Generator):
    genre_vectors = rng.normal(0.0, 1.0, size=(len(GENRES), spec.latent_dim))
    item_genres, item_factors = [], np.empty((spec.num_items, spec.latent_dim))
    for i in range(spec.num_items):
        picked = rng.choice(len(GENRES), size=rng.integers(1, 4), replace=False)
        item_genres.append(sorted(int(g) for g in picked))
        item_factors[i] = genre_vectors[picked].mean(axis=0) + rng.normal(0, 0.3, spec.latent_dim)
    years = rng.integers(1950, 2024, size=spec.num_items)
    return item_genres, item_factors, years, genre_vectors


def _user_factor(spec: SampleSpec, genre_vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A user likes a few genres: their factor leans towards those genres' directions."""
    liked = rng.choice(len(GENRES), size=2, replace=False)
    return genre_vectors[liked].mean(axis=0) + rng.normal(0, 0.3, spec.latent_dim)


def _pool(spec: SampleSpec, rng, k: int, tail: np.ndarray):
    """A large catalogue's candidates for one user: (tail sample, log-weight correction of a tail item)."""
    size = min(len(tail), max(POOL_ITEMS - POOL_HEAD, 2 * int(k)))
    return tail[rng.choice(len(tail), size=size, replace=False)], np.log(len(tail) / size)


def _head_and_tail(spec: SampleSpec, log_pop: np.ndarray):
    head = np.argsort(-log_pop, kind="stable")[:POOL_HEAD]
    is_head = np.zeros(spec.num_items, bool)
    is_head[head] = True
    return head, np.flatnonzero(~is_head)


def _pick(spec: SampleSpec, rng, counts, user_factors, item_factors, log_pop) -> list:
    """Each user's distinct items, sampled without replacement by Gumbel-top-k on the log-weights."""
    scale = spec.taste / np.sqrt(spec.latent_dim)
    n_items = spec.num_items
    picks = []
    if n_items <= POOL_ITEMS:
        logits = spec.popularity_exponent * log_pop + scale * (user_factors @ item_factors.T)
        logits += rng.gumbel(size=logits.shape)
        for row, k in zip(logits, counts):
            picks.append(np.argpartition(-row, k - 1)[:k] if 0 < k < n_items else np.arange(k))
        return picks
    head, tail = _head_and_tail(spec, log_pop)
    for u, k in enumerate(counts):
        sampled, correction = _pool(spec, rng, k, tail)
        pool = np.concatenate([head, sampled])
        # A tail item is in the pool with probability size/len(tail): add log(len(tail)/size) to its weight.
        logits = spec.popularity_exponent * log_pop[pool] + scale * (item_factors[pool] @ user_factors[u])
        logits[POOL_HEAD:] += correction
        logits += rng.gumbel(size=len(pool))
        picks.append(pool[np.argpartition(-logits, k - 1)[:k]] if k > 0 else pool[:0])
    return picks


def _next_items(spec: SampleSpec, rng, histories, user_factors, item_factors, log_pop) -> np.ndarray:
    """Each user's next item given the distinct items they already picked (-1 when none is left): the next draw of
    the same Gumbel-top-k, i.e. the choice model restricted to the items outside the history."""
    scale = spec.taste / np.sqrt(spec.latent_dim)
    nexts = np.full(len(histories), -1, np.int64)
    if spec.num_items <= POOL_ITEMS:
        logits = spec.popularity_exponent * log_pop + scale * (user_factors @ item_factors.T)
        logits += rng.gumbel(size=logits.shape)
        for u, (row, seen) in enumerate(zip(logits, histories)):
            nexts[u] = heldout.best_unseen(row, seen)
        return nexts
    head, tail = _head_and_tail(spec, log_pop)
    for u, seen in enumerate(histories):
        sampled, correction = _pool(spec, rng, len(seen), tail)
        pool = np.concatenate([head, sampled])
        logits = spec.popularity_exponent * log_pop[pool] + scale * (item_factors[pool] @ user_factors[u])
        logits[POOL_HEAD:] += correction
        logits += rng.gumbel(size=len(pool))
        best = heldout.best_unseen(logits, np.flatnonzero(np.isin(pool, seen)))
        nexts[u] = pool[best] if best >= 0 else -1
    return nexts


DRIFT_STREAM = 0x44524654  # "DRFT": the taste-drift ordering's own random stream


def _drift_order(spec: SampleSpec, rng, items: np.ndarray, ratings: np.ndarray, item_factors: np.ndarray):
    """A user's items (and their ratings) in consumption order along a drift of taste (SampleSpec.taste_drift)."""
    projection = item_factors[items] @ rng.normal(size=item_factors.shape[1])
    spread = projection.std() or 1.0
    key = spec.taste_drift * (projection - projection.mean()) / spread + rng.normal(size=len(items))
    order = np.argsort(key, kind="stable")
    return items[order], ratings[order]


def _sessions(spec: SampleSpec, genre_vectors, item_factors, log_pop):
    """Anonymous sessions of new users: (session id, items in time order, timestamps, next item or None)."""
    n, total = heldout.session_count(spec.num_sessions, spec.num_users, spec.num_ratings)
    if n == 0:
        return []
    rng = heldout.stream(spec.seed, heldout.SESSIONS_STREAM)
    factors = np.stack([_user_factor(spec, genre_vectors, rng) for _ in range(n)])
    counts = activity_counts(n, spec.num_items, total, spec.min_user_ratings, spec.max_user_share,
                             spec.activity_sigma, rng, noun="ratings")
    counts = np.minimum(counts, spec.num_items - 1)  # leave an item to pick next
    picks = [rng.permutation(items) for items in _pick(spec, rng, counts, factors, item_factors, log_pop)]
    nexts = _next_items(spec, rng, picks, factors, item_factors, log_pop)
    log_end = spec.start_timestamp + spec.span_days * SECONDS_PER_DAY
    return [(heldout.session_key(s), [item_key(i) for i in items], heldout.session_stamps(rng, log_end, len(items)),
             item_key(nexts[s]) if nexts[s] >= 0 else None)
            for s, items in enumerate(picks) if len(items)]


def generate(out_dir: str, spec: SampleSpec = SampleSpec()) -> dict:
    """Write `items.csv` and `interactions.csv` under `out_dir`, and the held-out data under `heldout/`
    (data/heldout.py); returns counts written."""
    rng = np.random.default_rng(spec.seed)
    item_genres, item_factors, years, genre_vectors = _items(spec, rng)
    user_factors = np.empty((spec.num_users, spec.latent_dim))
    for u in range(spec.num_users):
        user_factors[u] = _user_factor(spec, genre_vectors, rng)
    log_pop = -spec.zipf_exponent * np.log1p(rng.permutation(spec.num_items)).astype(np.float64)
    user_bias = rng.normal(0, 0.3, spec.num_users)
    # Popular items are rated a little higher, as in real logs.
    item_bias = rng.normal(0, 0.35, spec.num_items) + 0.1 * (log_pop - log_pop.mean()) / (log_pop.std() or 1.0)
    counts = activity_counts(spec.num_users, spec.num_items, spec.num_ratings, spec.min_user_ratings,
                             spec.max_user_share, spec.activity_sigma, rng, noun="ratings")
    span = spec.span_days * SECONDS_PER_DAY
    rating_scale = 1.0 / np.sqrt(spec.latent_dim)

    os.makedirs(out_dir, exist_ok=True)
    items_path = os.path.join(out_dir, F.ITEMS_FILE)
    with atomic_csv(items_path, ITEM_COLUMNS) as w:
        for i in range(spec.num_items):
            title = f"The {_ADJECTIVES[i % len(_ADJECTIVES)]} {_NOUNS[(i // len(_ADJECTIVES)) % len(_NOUNS)]}"
            if i >= len(_ADJECTIVES) * len(_NOUNS):
                title += f" {i // (len(_ADJECTIVES) * len(_NOUNS)) + 1}"
            genres = GENRE_SEPARATOR.join(GENRES[g] for g in item_genres[i])
            w.writerow((item_key(i), title, genres, int(years[i])))

    interactions_path = os.path.join(out_dir, F.INTERACTIONS_FILE)
    written, buffer, next_written = 0, [], 0
    with atomic_csv(interactions_path, INTERACTION_COLUMNS) as w, \
            atomic_csv(heldout.path(out_dir, heldout.NEXT_FILE), heldout.NEXT_COLUMNS) as w_next:
        for start in range(0, spec.num_users, USER_BLOCK):
            users = np.arange(start, min(start + USER_BLOCK, spec.num_users))
            block_rng = np.random.default_rng([spec.seed, start // USER_BLOCK])
            drift_rng = np.random.default_rng([spec.seed, DRIFT_STREAM, start // USER_BLOCK])
            picks = _pick(spec, block_rng, counts[users], user_factors[users], item_factors, log_pop)
            if start < spec.max_next_users:  # held out: the block's next items, from a stream of their own
                nexts = _next_items(spec, heldout.stream(spec.seed, heldout.NEXT_STREAM, start // USER_BLOCK), picks,
                                    user_factors[users], item_factors, log_pop)
                rows = [(user_key(u), item_key(i)) for u, i, items in zip(users, nexts, picks)
                        if i >= 0 and len(items) and u < spec.max_next_users]
                w_next.writerows(rows)
                next_written += len(rows)
            for u, items in zip(users, picks):
                k = len(items)
                if k == 0:
                    continue
                items = block_rng.permutation(items)  # consumption order: random, so time splits keep taste
                # Affinity centred on the user's own picks: how much more they like this one than their usual.
                dots = item_factors[items] @ user_factors[u] * rating_scale
                dots -= dots.mean()
                raw = RATING_MEAN + user_bias[u] + item_bias[items] + dots + block_rng.normal(0, spec.noise_sd, k)
                ratings = np.clip(np.round(raw * 2) / 2, RATING_MIN, RATING_MAX)
                if spec.taste_drift > 0:
                    items, ratings = _drift_order(spec, drift_rng, items, ratings, item_factors)
                # Active from a random start for a random share of the span; events uniform within it.
                length = span * block_rng.uniform(0.05, 1.0)
                begin = block_rng.uniform(0, span - length)
                stamps = spec.start_timestamp + np.sort(begin + block_rng.uniform(0, length, k)).astype(np.int64)
                buffer.extend((user_key(u), item_key(i), f"{r:.1f}", int(t))
                              for i, r, t in zip(items, ratings, stamps))
            if len(buffer) >= spec.chunk_size:
                w.writerows(buffer)
                written, buffer = written + len(buffer), []
        w.writerows(buffer)
        written += len(buffer)
    sessions = heldout.write_sessions(out_dir, _sessions(spec, genre_vectors, item_factors, log_pop))
    return {"users": spec.num_users, "items": spec.num_items, "interactions": written, "next": next_written,
            "sessions": sessions}
