"""Deterministic synthetic ratings with planted structure, so tests can assert real learning.

Ratings are mu + user bias + item bias + <user factor, item factor> + noise, where item
factors are built from the item's genres and users prefer some genres: a model that learns
embeddings and biases must beat the global mean by a clear margin, and a broken one cannot.
Rows are streamed to disk (write to a temp file, then rename), so large sets use constant memory.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from components import features as F
from data.atomic_csv import atomic_csv

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
    chunk_size: int = 200_000


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


def generate(out_dir: str, spec: SampleSpec = SampleSpec()) -> dict:
    """Write `items.csv` and `interactions.csv` under `out_dir`; returns counts written."""
    rng = np.random.default_rng(spec.seed)
    item_genres, item_factors, years, genre_vectors = _items(spec, rng)
    # Users like a few genres: their factor leans towards those genres' directions.
    user_factors = np.empty((spec.num_users, spec.latent_dim))
    for u in range(spec.num_users):
        liked = rng.choice(len(GENRES), size=2, replace=False)
        user_factors[u] = genre_vectors[liked].mean(axis=0) + rng.normal(0, 0.3, spec.latent_dim)
    scale = 1.0 / np.sqrt(spec.latent_dim)
    user_bias = rng.normal(0, 0.3, spec.num_users)
    item_bias = rng.normal(0, 0.4, spec.num_items)
    # Popularity and activity are long-tailed, as in real rating logs.
    item_pop = rng.zipf(1.6, spec.num_items).astype(float) ** 0.5
    item_p = item_pop / item_pop.sum()
    user_act = rng.lognormal(0.0, 0.8, spec.num_users)
    user_p = user_act / user_act.sum()

    os.makedirs(out_dir, exist_ok=True)
    items_path = os.path.join(out_dir, F.ITEMS_FILE)
    with atomic_csv(items_path, F.ITEM_COLUMNS) as w:
        for i in range(spec.num_items):
            title = f"The {_ADJECTIVES[i % len(_ADJECTIVES)]} {_NOUNS[(i // len(_ADJECTIVES)) % len(_NOUNS)]}"
            if i >= len(_ADJECTIVES) * len(_NOUNS):
                title += f" {i // (len(_ADJECTIVES) * len(_NOUNS)) + 1}"
            genres = F.GENRE_SEPARATOR.join(GENRES[g] for g in item_genres[i])
            w.writerow((item_key(i), title, genres, int(years[i])))

    interactions_path = os.path.join(out_dir, F.INTERACTIONS_FILE)
    written = 0
    with atomic_csv(interactions_path, F.INTERACTION_COLUMNS) as w:
        while written < spec.num_ratings:
            n = min(spec.chunk_size, spec.num_ratings - written)
            users = rng.choice(spec.num_users, size=n, p=user_p)
            items = rng.choice(spec.num_items, size=n, p=item_p)
            dots = np.einsum("ij,ij->i", user_factors[users], item_factors[items]) * scale
            raw = 3.5 + user_bias[users] + item_bias[items] + dots + rng.normal(0, spec.noise_sd, n)
            ratings = np.clip(np.round(raw * 2) / 2, F.RATING_MIN, F.RATING_MAX)
            stamps = spec.start_timestamp + (written + np.arange(n)) * 60
            for u, i, r, t in zip(users, items, ratings, stamps):
                w.writerow((user_key(u), item_key(i), f"{r:.1f}", int(t)))
            written += n
    return {"users": spec.num_users, "items": spec.num_items, "interactions": written}
