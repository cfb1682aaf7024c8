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
    head = np.argsort(-log_pop, kind="stable")[:POOL_HEAD]
    is_head = np.zeros(n_items, bool)
    is_head[head] = True
    tail = np.flatnonzero(~is_head)
    for u, k in enumerate(counts):
        size = min(len(tail), max(POOL_ITEMS - POOL_HEAD, 2 * int(k)))
        sampled = tail[rng.choice(len(tail), size=size, replace=False)]
        pool = np.concatenate([head, sampled])
        # A tail item is in the pool with probability size/len(tail): add log(len(tail)/size) to its weight.
        logits = spec.popularity_exponent * log_pop[pool] + scale * (item_factors[pool] @ user_factors[u])
        logits[POOL_HEAD:] += np.log(len(tail) / size)
        logits += rng.gumbel(size=len(pool))
        picks.append(pool[np.argpartition(-logits, k - 1)[:k]] if k > 0 else pool[:0])
    return picks


def generate(out_dir: str, spec: SampleSpec = SampleSpec()) -> dict:
    """Write `items.csv` and `interactions.csv` under `out_dir`; returns counts written."""
    rng = np.random.default_rng(spec.seed)
    item_genres, item_factors, years, genre_vectors = _items(spec, rng)
    # Users like a few genres: their factor leans towards those genres' directions.
    user_factors = np.empty((spec.num_users, spec.latent_dim))
    for u in range(spec.num_users):
        liked = rng.choice(len(GENRES), size=2, replace=False)
        user_factors[u] = genre_vectors[liked].mean(axis=0) + rng.normal(0, 0.3, spec.latent_dim)
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
    written, buffer = 0, []
    with atomic_csv(interactions_path, INTERACTION_COLUMNS) as w:
        for start in range(0, spec.num_users, USER_BLOCK):
            users = np.arange(start, min(start + USER_BLOCK, spec.num_users))
            block_rng = np.random.default_rng([spec.seed, start // USER_BLOCK])
            picks = _pick(spec, block_rng, counts[users], user_factors[users], item_factors, log_pop)
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
    return {"users": spec.num_users, "items": spec.num_items, "interactions": written}
