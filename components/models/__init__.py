"""Model registry: `--model NAME` picks a module here.

Rating models (mf, mlp, content, hybrid) regress the rating value: each exposes `build(dims, config)`
and is fitted with MSE. Ranking models (ease, ials, two_tower) learn which items a user picks from implicit
feedback (every interaction a positive): each exposes `train(dims, config, catalogue, dataset, holdout)`.
Every model has `score_all_items(users, items)` for `recommend`, and for `similar_items` either
`similar_item_scores(item_index)` (EASE's weights) or `similarity_vectors(items)` (compared by cosine). `auto`, the default, is the ranking
model that ranks best: EASE when the catalogue fits its size limit; above it iALS and the two-tower model
are both fitted and the one with the better validation Recall@10 is kept.
"""

from types import ModuleType
from typing import Tuple

from components.models import content, ease, hybrid, ials, mf, mlp, two_tower
from components.training_config import RATING_HISTORY_AUTO, RATING_HISTORY_OFF, RATING_HISTORY_ON

RATING_MODELS = {"mf": mf, "mlp": mlp, "content": content, "hybrid": hybrid}
RANKING_MODELS = {"ease": ease, "ials": ials, "two_tower": two_tower}
MODELS = {**RATING_MODELS, **RANKING_MODELS}
AUTO = "auto"
DEFAULT_MODEL = AUTO
CHOICES = (AUTO, *MODELS)


def get(name: str) -> ModuleType:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(CHOICES)}") from None


def is_ranking(name: str) -> bool:
    """Ranking models are gated on top-k metrics; rating models on RMSE (and report top-k)."""
    if name != AUTO and name not in MODELS:
        get(name)
    return name == AUTO or name in RANKING_MODELS


def candidates(name: str, num_items: int, ease_max_items: int) -> Tuple[str, ...]:
    """The concrete models `name` means for a catalogue of `num_items` items; the Trainer fits each and keeps
    the one with the best validation Recall@10 (`auto` above EASE's limit: iALS and the two-tower model)."""
    if name != AUTO:
        get(name)
        return (name,)
    return ("ease",) if num_items <= ease_max_items else ("ials", "two_tower")


def reads_examples(name: str) -> bool:
    """Whether ranking model `name` trains on the examples as a tf.data stream (two_tower); EASE and iALS fit
    from the catalogue's interaction matrix, so the Trainer builds no dataset for them (it reads the split)."""
    return bool(getattr(get(name), "READS_EXAMPLES", False))


def solves_in_background(name: str) -> bool:
    """Whether ranking model `name`'s train takes `background=True`: its final closed-form solve then runs on a
    thread while the Trainer traces the signatures, and the model's `finish_fitting()` waits for it (EASE)."""
    return bool(getattr(get(name), "SOLVES_IN_BACKGROUND", False))


def uses_rating_history(name: str) -> bool:
    """Whether rating model `name` can carry SVD++'s implicit term (TrainingConfig.rating_history)."""
    return bool(getattr(get(name), "USES_RATING_HISTORY", False))


def rating_history_forms(name: str, rating_history: str) -> Tuple[str, ...]:
    """The forms of rating model `name` to fit and compare on validation: both for `auto` where the term applies."""
    if not uses_rating_history(name):
        return (RATING_HISTORY_OFF,)
    if rating_history == RATING_HISTORY_AUTO:
        return (RATING_HISTORY_ON, RATING_HISTORY_OFF)
    if rating_history not in (RATING_HISTORY_ON, RATING_HISTORY_OFF):
        raise ValueError(f"unknown rating_history {rating_history!r}; choose one of: "
                         f"{RATING_HISTORY_AUTO}, {RATING_HISTORY_ON}, {RATING_HISTORY_OFF}")
    return (rating_history,)
