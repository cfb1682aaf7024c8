"""A deterministic shop sample: implicit feedback, item attributes and user attributes the movie sample lacks.

Shape (three CSV files, each written atomically):
- `interactions.csv`: user_id,item_id,timestamp: clicks and purchases, no rating (implicit feedback);
- `items.csv`: item_id,title,category,brand,price,description: a price with ~3% missing values, and a
  free-text description with commas, double quotes (`12" screen`, `the "eco" line`) and, for a few
  percent of items, a newline inside the quoted field: what a real export looks like;
- `users.csv`: user_id,age,country,segment (a few ages missing).

Taste is planted as in data/synthetic.py: Zipf-like item popularity, lognormal user activity (at least
min_user_interactions each), and each user picks distinct items by Gumbel-top-k with
P ~ popularity^a * exp(taste * affinity). Affinity is the dot product of latent user and item factors:
an item's factor comes from its category and its brand plus its (log) price; a user's from the categories
they like, a favourite brand or two and their price sensitivity. Which categories a user likes, and how
price-sensitive they are, depends on their segment, age and (weakly) country, so user features carry
signal for cold start. Timestamps are spread over each user's active period in random order, so the
last interaction is drawn from the same taste as the rest.

Each part draws from its own random stream (catalogue, users, interactions, text), so changing the text
generator does not move a single interaction.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Tuple

import numpy as np

from components import features as F
from data import heldout
from data.atomic_csv import atomic_csv
from data.sampling import activity_counts

# This dataset's own layout: the data contract infers the features from the files, so none of it is shared.
INTERACTION_COLUMNS = (F.USER_ID, F.ITEM_ID, F.TIMESTAMP)
ITEM_COLUMNS = (F.ITEM_ID, "title", "category", "brand", "price", "description")
USER_COLUMNS = (F.USER_ID, "age", "country", "segment")
SECONDS_PER_DAY = 86_400
AGE_MIN, AGE_MAX = 16, 80

# category -> (nouns for titles, words for descriptions, size unit for an inch spec or "", median price)
CATEGORIES: Dict[str, Tuple[Tuple[str, ...], Tuple[str, ...], str, float]] = {
    "Electronics": (("Headphones", "Speaker", "Charger", "Tablet", "Earbuds", "Soundbar"),
                    ("wireless", "bluetooth", "battery", "USB-C", "noise cancelling", "fast charging"), "screen", 60.0),
    "Computers": (("Laptop", "Keyboard", "Mouse", "Monitor", "Router", "Webcam"),
                  ("ergonomic", "backlit", "HD", "dual band", "plug and play", "low latency"), "display", 120.0),
    "Kitchen": (("Kettle", "Blender", "Pan", "Knife", "Toaster", "Mug"),
                ("stainless steel", "non-stick", "dishwasher safe", "BPA free", "induction ready"), "pan", 30.0),
    "Home": (("Lamp", "Cushion", "Blanket", "Mirror", "Clock", "Vase"),
             ("cosy", "handmade", "cotton", "minimalist", "warm light", "scandinavian"), "frame", 35.0),
    "Garden": (("Hose", "Planter", "Shears", "Seeds", "Grill", "Lantern"),
               ("weatherproof", "organic", "solar", "frost resistant", "heavy duty"), "pot", 25.0),
    "Toys": (("Puzzle", "Robot", "Blocks", "Doll", "Kite", "Car"),
             ("educational", "ages 3+", "colourful", "battery powered", "wooden"), "", 20.0),
    "Books": (("Novel", "Cookbook", "Guide", "Atlas", "Journal", "Anthology"),
              ("paperback", "hardcover", "illustrated", "bestselling", "signed edition"), "", 14.0),
    "Sports": (("Racket", "Ball", "Dumbbell", "Mat", "Bottle", "Gloves"),
               ("sweat resistant", "anti-slip", "lightweight", "training", "pro grade"), "", 28.0),
    "Outdoor": (("Tent", "Backpack", "Jacket", "Torch", "Stove", "Hammock"),
                ("waterproof", "windproof", "packable", "4-season", "ultralight"), "", 70.0),
    "Beauty": (("Serum", "Lipstick", "Cream", "Palette", "Perfume", "Mask"),
               ("vegan", "cruelty free", "hydrating", "fragrance free", "SPF 30"), "", 18.0),
    "Health": (("Vitamins", "Thermometer", "Massager", "Scale", "Brace", "Tea"),
               ("clinically tested", "sugar free", "digital", "gentle", "daily"), "", 22.0),
    "Fashion": (("Shirt", "Dress", "Scarf", "Watch", "Belt", "Hoodie"),
                ("slim fit", "organic cotton", "machine washable", "oversized", "linen"), "", 40.0),
    "Shoes": (("Sneakers", "Boots", "Sandals", "Loafers", "Trainers", "Slippers"),
              ("cushioned", "leather", "breathable", "wide fit", "memory foam"), "", 65.0),
    "Pets": (("Leash", "Bed", "Treats", "Bowl", "Scratcher", "Toy"),
             ("grain free", "chew proof", "washable", "for large dogs", "for cats"), "bed", 16.0),
    "Baby": (("Stroller", "Bottle", "Onesie", "Monitor", "Rattle", "Carrier"),
             ("soft", "hypoallergenic", "newborn", "easy fold", "BPA free"), "", 30.0),
    "Automotive": (("Wipers", "Charger", "Polish", "Jack", "Mount", "Dashcam"),
                   ("universal fit", "12V", "scratch free", "1080p", "quick install"), "screen", 35.0),
    "Office": (("Notebook", "Pen", "Stapler", "Desk", "Chair", "Planner"),
               ("refillable", "recycled paper", "adjustable", "A5", "quiet"), "desk", 15.0),
    "Music": (("Guitar", "Strings", "Pedal", "Microphone", "Ukulele", "Stand"),
              ("acoustic", "studio quality", "beginner friendly", "tuned", "vintage"), "", 45.0),
}
CATEGORY_NAMES = tuple(CATEGORIES)
_ADJECTIVES = ("Classic", "Compact", "Deluxe", "Essential", "Pro", "Lite", "Max", "Plus", "Smart", "Urban",
               "Nordic", "Studio", "Travel", "Eco", "Prime", "Flex")
_LINES = ("eco", "pro", "classic", "ultra", "lite", "studio", "urban", "nordic", "smart", "signature", "heritage")
_GENERIC = ("durable", "easy to clean", "a great gift", "for everyday use", "premium quality", "value pack",
            "free returns", "limited edition", "customer favourite", "made to last", "simple to use",
            "ships in 24h", "2 year warranty", "new for this season", "sustainably sourced", "compact design")
_SYLLABLES_A = ("Vel", "Kor", "Lum", "Zen", "Tor", "Mar", "Sol", "Ar", "Bel", "Nov", "Ori", "Cal", "Dax", "Fen",
                "Gal", "Hal", "Ion", "Jun", "Kai", "Lyn")
_SYLLABLES_B = ("ora", "ex", "ix", "ano", "ia", "ino", "is", "eon", "aro", "ux", "ena", "ico", "ova", "et")
SEGMENTS = ("student", "family", "professional", "retired", "hobbyist")
# segment -> (age mean, age sd, price preference: > 0 leans premium, < 0 leans cheap)
_SEGMENT_SHAPE = {"student": (22, 4, -1.0), "family": (38, 7, -0.4), "professional": (40, 10, 0.8),
                  "retired": (68, 6, 0.2), "hobbyist": (45, 14, 0.3)}
_SEGMENT_SHARE = (0.2, 0.3, 0.25, 0.1, 0.15)
COUNTRIES = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "SE", "PL", "CA")
_COUNTRY_SHARE = (0.3, 0.14, 0.13, 0.1, 0.08, 0.07, 0.05, 0.04, 0.05, 0.04)


@dataclasses.dataclass(frozen=True)
class ShopSpec:
    """Size and shape of a generated shop; the defaults are the bundled sample."""

    num_users: int = 1500
    num_items: int = 3000
    num_interactions: int = 60_000
    num_brands: int = 150
    seed: int = 42
    start_timestamp: int = 1_650_000_000
    span_days: int = 365  # the log covers this period; each user is active in part of it
    latent_dim: int = 12
    # Choice model: log-weight of item i for user u = popularity_exponent * log(pop_i) + taste * affinity(u, i).
    zipf_exponent: float = 0.9  # pop_i = rank_i ** -zipf_exponent
    popularity_exponent: float = 1.0
    taste: float = 2.25
    min_user_interactions: int = 5
    activity_sigma: float = 0.9  # lognormal spread of the number of interactions per user
    max_user_share: float = 0.1  # the most active users touch at most this share of the catalogue
    missing_price_share: float = 0.03
    missing_age_share: float = 0.02
    multiline_share: float = 0.04  # descriptions with a newline inside the quoted field
    num_sessions: int = 300  # held-out anonymous sessions of new users (data/heldout.py; never read by the pipeline)


def user_key(index: int) -> str:
    return f"u{index + 1:05d}"


def item_key(index: int) -> str:
    return f"p{index + 1:05d}"


@dataclasses.dataclass
class _Catalogue:
    category: np.ndarray  # [items] category index
    brand: np.ndarray  # [items] brand index
    brand_names: List[str]
    brand_category: np.ndarray  # [brands] the category each brand sells in
    brand_line: List[str]
    price: np.ndarray  # [items] true price (the file misses a few)
    factors: np.ndarray  # [items, latent_dim]
    category_vectors: np.ndarray
    brand_vectors: np.ndarray


def _brand_names(count: int, rng: np.random.Generator) -> List[str]:
    names = [a + b for a in _SYLLABLES_A for b in _SYLLABLES_B]
    if count > len(names):
        names += [f"{n} {k}" for k in range(2, 2 + -(-count // len(names))) for n in names]
    return [names[i] for i in rng.permutation(len(names))[:count]]


def _catalogue(spec: ShopSpec, rng: np.random.Generator) -> _Catalogue:
    n_cat, d = len(CATEGORY_NAMES), spec.latent_dim
    if spec.num_brands < n_cat:
        raise ValueError(f"num_brands {spec.num_brands} must be at least the {n_cat} categories")
    # Categories differ in size (a shop sells more fashion than music); every category has at least one brand.
    cat_share = rng.dirichlet(np.full(n_cat, 3.0))
    brand_category = np.concatenate([np.arange(n_cat), rng.choice(n_cat, spec.num_brands - n_cat, p=cat_share)])
    brand_category = np.sort(brand_category, kind="stable")
    brand_names = _brand_names(spec.num_brands, rng)
    brand_line = [_LINES[i] for i in rng.integers(0, len(_LINES), spec.num_brands)]
    brand_tier = rng.normal(0.0, 0.45, spec.num_brands)  # log price multiplier: budget < 0 < premium
    brand_weight = rng.lognormal(0.0, 0.8, spec.num_brands)  # some brands carry many more products
    category_vectors = rng.normal(0.0, 1.0, (n_cat, d))
    brand_vectors = rng.normal(0.0, 1.0, (spec.num_brands, d))

    category = rng.choice(n_cat, spec.num_items, p=cat_share)
    brand = np.empty(spec.num_items, np.int64)
    for c in range(n_cat):
        members = np.flatnonzero(category == c)
        own = np.flatnonzero(brand_category == c)
        w = brand_weight[own] / brand_weight[own].sum()
        brand[members] = own[rng.choice(len(own), len(members), p=w)]
    medians = np.array([CATEGORIES[c][3] for c in CATEGORY_NAMES])
    log_price = np.log(medians[category]) + brand_tier[brand] + rng.normal(0.0, 0.35, spec.num_items)
    price = np.round(np.exp(log_price), 2)
    price = np.maximum(price, 0.99)
    factors = (category_vectors[category] + 0.7 * brand_vectors[brand]
               + rng.normal(0.0, 0.4, (spec.num_items, d)))
    # The last latent dimension is price level: users' price preference meets it there.
    price_z = (log_price - np.log(medians[category])) / 0.55
    factors[:, -1] = price_z
    return _Catalogue(category, brand, brand_names, brand_category, brand_line, price, factors,
                      category_vectors, brand_vectors)


@dataclasses.dataclass
class _UserTaste:
    """How a user's attributes shift the categories they like: category preference logits."""

    segment_logits: np.ndarray  # [segments, categories]
    age_slope: np.ndarray  # [categories]
    country_logits: np.ndarray  # [countries, categories]


def _demographics(n: int, rng: np.random.Generator):
    segment = rng.choice(len(SEGMENTS), n, p=_SEGMENT_SHARE)
    country = rng.choice(len(COUNTRIES), n, p=_COUNTRY_SHARE)
    shape = np.array([_SEGMENT_SHAPE[s] for s in SEGMENTS])
    age = np.clip(np.round(rng.normal(shape[segment, 0], shape[segment, 1])), AGE_MIN, AGE_MAX).astype(np.int64)
    return segment, country, age


def _users(spec: ShopSpec, cat: _Catalogue, rng: np.random.Generator):
    """Segment, age and country per user, and a latent factor whose liked categories they shift."""
    n_cat = len(CATEGORY_NAMES)
    segment, country, age = _demographics(spec.num_users, rng)
    # Category preference logits: strong by segment, a slope in age, a weak nudge by country.
    taste = _UserTaste(segment_logits=rng.normal(0.0, 2.5, (len(SEGMENTS), n_cat)),
                       age_slope=rng.normal(0.0, 1.0, n_cat),
                       country_logits=rng.normal(0.0, 0.4, (len(COUNTRIES), n_cat)))
    factors = _user_factors(spec, cat, taste, segment, country, age, rng)
    return segment, age, country, factors, taste


def _new_users(spec: ShopSpec, cat: _Catalogue, taste: _UserTaste, n: int, rng: np.random.Generator) -> np.ndarray:
    """Latent factors of n users drawn like the sample's own (same attribute shares and taste), from `rng`."""
    segment, country, age = _demographics(n, rng)
    return _user_factors(spec, cat, taste, segment, country, age, rng)


def _user_factors(spec: ShopSpec, cat: _Catalogue, taste: _UserTaste, segment, country, age,
                  rng: np.random.Generator) -> np.ndarray:
    n, n_cat, d = len(segment), len(CATEGORY_NAMES), spec.latent_dim
    shape = np.array([_SEGMENT_SHAPE[s] for s in SEGMENTS])
    logits = (taste.segment_logits[segment] + taste.age_slope * ((age - 45.0) / 15.0)[:, None]
              + taste.country_logits[country])
    factors = np.empty((n, d))
    for u in range(n):
        p = np.exp(logits[u] - logits[u].max())
        liked = rng.choice(n_cat, size=rng.integers(1, 4), replace=False, p=p / p.sum())
        brands = np.flatnonzero(np.isin(cat.brand_category, liked))
        fav = rng.choice(brands, size=min(2, len(brands)), replace=False)
        factors[u] = (cat.category_vectors[liked].mean(axis=0) + 0.7 * cat.brand_vectors[fav].mean(axis=0)
                      + rng.normal(0.0, 0.4, d))
    factors[:, -1] = shape[segment, 2] + rng.normal(0.0, 0.5, n)
    return factors


def _pick(spec: ShopSpec, rng, counts, user_factors, item_factors, log_pop) -> List[np.ndarray]:
    """Each user's distinct items by Gumbel-top-k on the log-weights (exact: the whole catalogue is ranked)."""
    scale = spec.taste / np.sqrt(spec.latent_dim)
    picks = []
    for start in range(0, len(counts), 256):  # bounded memory: 256 users x catalogue at a time
        rows = slice(start, start + 256)
        logits = spec.popularity_exponent * log_pop + scale * (user_factors[rows] @ item_factors.T)
        logits += rng.gumbel(size=logits.shape)
        for row, k in zip(logits, counts[rows]):
            picks.append(np.argpartition(-row, k - 1)[:k] if 0 < k < len(row) else np.arange(k))
    return picks


def _next_items(spec: ShopSpec, rng, histories, user_factors, item_factors, log_pop) -> np.ndarray:
    """Each user's next item given the distinct items they already picked (-1 when none is left): the next draw of
    the same Gumbel-top-k, i.e. the choice model restricted to the items outside the history."""
    scale = spec.taste / np.sqrt(spec.latent_dim)
    nexts = np.full(len(histories), -1, np.int64)
    for start in range(0, len(histories), 256):
        rows = slice(start, start + 256)
        logits = spec.popularity_exponent * log_pop + scale * (user_factors[rows] @ item_factors.T)
        logits += rng.gumbel(size=logits.shape)
        for u, row in enumerate(logits, start):
            nexts[u] = heldout.best_unseen(row, histories[u])
    return nexts


def _sessions(spec: ShopSpec, cat: _Catalogue, taste: _UserTaste, log_pop):
    """Anonymous sessions of new users: (session id, items in time order, timestamps, next item or None)."""
    n, total = heldout.session_count(spec.num_sessions, spec.num_users, spec.num_interactions)
    if n == 0:
        return []
    rng = heldout.stream(spec.seed, heldout.SESSIONS_STREAM)
    factors = _new_users(spec, cat, taste, n, rng)
    counts = activity_counts(n, spec.num_items, total, spec.min_user_interactions, spec.max_user_share,
                             spec.activity_sigma, rng, noun="interactions")
    counts = np.minimum(counts, spec.num_items - 1)  # leave an item to pick next
    picks = [rng.permutation(items) for items in _pick(spec, rng, counts, factors, cat.factors, log_pop)]
    nexts = _next_items(spec, rng, picks, factors, cat.factors, log_pop)
    log_end = spec.start_timestamp + spec.span_days * SECONDS_PER_DAY
    return [(heldout.session_key(s), [item_key(i) for i in items], heldout.session_stamps(rng, log_end, len(items)),
             item_key(nexts[s]) if nexts[s] >= 0 else None)
            for s, items in enumerate(picks) if len(items)]


def _description(rng: np.random.Generator, category: str, adjective: str, noun: str, brand: str, line: str,
                 multiline: bool) -> str:
    """8-30 words of product copy: commas always, double quotes often, a newline when `multiline`."""
    _nouns, words, unit, _median = CATEGORIES[category]
    pieces = [f"{adjective.lower()} {noun.lower()} from {brand}"]
    pieces.append(", ".join(words[i] for i in rng.choice(len(words), rng.integers(1, 4), replace=False)))
    if unit and rng.random() < 0.7:
        pieces.append(f'{rng.choice([7, 10, 12, 15, 24, 27, 32])}" {unit}')
    if rng.random() < 0.5:
        pieces.append(f'part of the "{line}" line')
    for i in rng.choice(len(_GENERIC), rng.integers(1, 5), replace=False):
        pieces.append(_GENERIC[i])
    while sum(len(p.split()) for p in pieces) < 8:
        pieces.append(_GENERIC[rng.integers(len(_GENERIC))])
    while sum(len(p.split()) for p in pieces) > 30:
        pieces.pop()
    head, tail = pieces[:2], pieces[2:]
    text = ", ".join(head)
    if tail:
        rest = ", ".join(tail)
        text += ("\n" if multiline else ". ") + rest[0].upper() + rest[1:]
    return text[0].upper() + text[1:] + "."


def generate(out_dir: str, spec: ShopSpec = ShopSpec()) -> Dict[str, int]:
    """Write `interactions.csv`, `items.csv` and `users.csv` under `out_dir`, and the held-out data under
    `heldout/` (data/heldout.py); returns the counts written."""
    catalogue_rng, user_rng, pick_rng, text_rng = (np.random.default_rng([spec.seed, k]) for k in range(4))
    counts = activity_counts(spec.num_users, spec.num_items, spec.num_interactions, spec.min_user_interactions,
                             spec.max_user_share, spec.activity_sigma, user_rng, noun="interactions")
    cat = _catalogue(spec, catalogue_rng)
    segment, age, country, user_factors, taste = _users(spec, cat, user_rng)
    log_pop = -spec.zipf_exponent * np.log1p(catalogue_rng.permutation(spec.num_items)).astype(np.float64)
    picks = _pick(spec, pick_rng, counts, user_factors, cat.factors, log_pop)

    os.makedirs(out_dir, exist_ok=True)
    missing_price = catalogue_rng.random(spec.num_items) < spec.missing_price_share
    with atomic_csv(os.path.join(out_dir, F.ITEMS_FILE), ITEM_COLUMNS) as w:
        for i in range(spec.num_items):
            category = CATEGORY_NAMES[cat.category[i]]
            brand = cat.brand_names[cat.brand[i]]
            noun = CATEGORIES[category][0][text_rng.integers(len(CATEGORIES[category][0]))]
            adjective = _ADJECTIVES[text_rng.integers(len(_ADJECTIVES))]
            title = f"{brand} {noun} {adjective} {text_rng.integers(100, 1000)}"
            description = _description(text_rng, category, adjective, noun, brand, cat.brand_line[cat.brand[i]],
                                       text_rng.random() < spec.multiline_share)
            price = "" if missing_price[i] else f"{cat.price[i]:.2f}"
            w.writerow((item_key(i), title, category, brand, price, description))

    missing_age = user_rng.random(spec.num_users) < spec.missing_age_share
    with atomic_csv(os.path.join(out_dir, F.USERS_FILE), USER_COLUMNS) as w:
        w.writerows((user_key(u), "" if missing_age[u] else int(age[u]), COUNTRIES[country[u]], SEGMENTS[segment[u]])
                    for u in range(spec.num_users))

    span = spec.span_days * SECONDS_PER_DAY
    rows = []
    for u, items in enumerate(picks):
        k = len(items)
        if k == 0:
            continue
        items = pick_rng.permutation(items)  # consumption order: random, so the last item keeps the taste
        length = span * pick_rng.uniform(0.05, 1.0)
        begin = pick_rng.uniform(0, span - length)
        stamps = spec.start_timestamp + np.sort(begin + pick_rng.uniform(0, length, k)).astype(np.int64)
        rows.extend((user_key(u), item_key(i), int(t)) for i, t in zip(items, stamps))
    with atomic_csv(os.path.join(out_dir, F.INTERACTIONS_FILE), INTERACTION_COLUMNS) as w:
        w.writerows(rows)

    # Held out, from streams of their own (nothing above draws from them): each user's next item, and sessions.
    nexts = _next_items(spec, heldout.stream(spec.seed, heldout.NEXT_STREAM, 0), picks, user_factors, cat.factors,
                        log_pop)
    next_rows = [(user_key(u), item_key(i)) for u, i in enumerate(nexts) if i >= 0 and len(picks[u])]
    with atomic_csv(heldout.path(out_dir, heldout.NEXT_FILE), heldout.NEXT_COLUMNS) as w:
        w.writerows(next_rows)
    sessions = heldout.write_sessions(out_dir, _sessions(spec, cat, taste, log_pop))
    return {"users": spec.num_users, "items": spec.num_items, "interactions": len(rows), "next": len(next_rows),
            "sessions": sessions}
