"""The one place where feature keys, vocabulary names and signature names are spelled.

Transform, Trainer, the exported signatures, the server, the clients and the tests all
import these constants, so a rename is a one-line change and train/serve skew in names
cannot happen.
"""

# Raw columns, as they appear in the CSV inputs and in the tf.Examples ExampleGen writes.
USER_ID = "user_id"
ITEM_ID = "item_id"
RATING = "rating"
TIMESTAMP = "timestamp"
WEIGHT = "weight"  # optional strength of an implicit interaction (a purchase counts more than a click)
# Item and user attribute keys are the dataset's own column names (components/contract.py infers them).

# Evaluation slices ExampleGen adds to every example: how many ratings the user gave and the item got.
USER_ACTIVITY = "user_activity"
ITEM_POPULARITY = "item_popularity"
ACTIVITY_EDGES = (10, 50)  # buckets <10, 10-49, >=50 ratings
POPULARITY_EDGES = (10, 100)


# ExampleGen's output splits: the Trainer fits on train and early-stops / tunes on validation; the
# gates (Evaluator, ranking gate) and the benchmark report on eval, which training never looks at.
TRAIN_SPLIT = "train"
VALIDATION_SPLIT = "validation"
EVAL_SPLIT = "eval"
SPLIT_NAMES = (TRAIN_SPLIT, VALIDATION_SPLIT, EVAL_SPLIT)
# How ExampleGen makes them (`recsys run --split`; components/example_gen.py); `auto` is resolved by
# pipeline/config.py: resolve_split.
SPLIT_AUTO, SPLIT_HASH, SPLIT_TIME, SPLIT_USER_TIME, SPLIT_LAST_ONE, SPLIT_USER_HASH = (
    "auto", "hash", "time", "user-time", "leave-last-one-out", "user-hash")

INTERACTIONS_FILE = "interactions.csv"
ITEMS_FILE = "items.csv"

LABEL_KEY = RATING


def count_bucket(count: int, edges) -> str:
    """'<10', '10-49', '>=50' for edges (10, 50): readable slice names in TFMA's output."""
    if count < edges[0]:
        return f"<{edges[0]}"
    for low, high in zip(edges, edges[1:]):
        if count < high:
            return f"{low}-{high - 1}"
    return f">={edges[-1]}"


def transformed_name(key: str) -> str:
    """Name of a feature after Transform (keeps raw and transformed keys apart)."""
    return f"{key}_xf"


# Transform outputs.
USER_INDEX = transformed_name(USER_ID)
ITEM_INDEX = transformed_name(ITEM_ID)
# The label the models fit: the rating, or for implicit feedback the interaction's weight (1 without one).
LABEL_XF = transformed_name(RATING)
WEIGHT_XF = transformed_name(WEIGHT)
# The item's display title (the contract's title column, raw), carried through Transform for the catalogue.
ITEM_TITLE_XF = "item_title_display"
# What models read for an item's / a user's attributes: one dense vector per row, every declared feature
# encoded (one-hot, multi-hot, bag of words, scaled number + missing flag) and concatenated.
ITEM_CONTENT = "item_content"
USER_CONTENT = "user_content"

# Vocabulary files written by Transform and exported as assets with the model.
USER_VOCAB = "user_id_vocab"
ITEM_VOCAB = "item_id_vocab"
OOV_BUCKETS = 1


def vocab_name(key: str) -> str:
    """Vocabulary file of a categorical, multi-valued or text feature."""
    return f"{key}_vocab"

# Exported signatures and their tensor names.
SERVING_DEFAULT = "serving_default"  # serialized tf.Example -> rating (TFMA, Predict)
PREDICT = "predict"  # raw user_id, item_id -> rating
RECOMMEND = "recommend"  # user_id, k -> top-k item ids, titles, scores
# recommend + per-request lists (the same lists for every user of the request): exclude these item ids,
# and rank only these (an empty allow-list means the whole catalogue).
RECOMMEND_FILTERED = "recommend_filtered"
SIMILAR_ITEMS = "similar_items"  # item_id, k -> the k most similar other items ("more like this")
# serialized tf.Examples of users (user_id + the user's attributes), k -> top-k: a user training never saw is
# ranked by their attributes (user cold start); a known user as `recommend` ranks them, without their items.
RECOMMEND_BY_FEATURES = "recommend_by_features"
# user ids ("" for an anonymous session), [rows, L] item ids each row just interacted with ("" pads), optional
# [rows, L] weights (an empty tensor: all 1), use_stored_history, k, exclude/allow lists -> top-k scored from
# that history (plus, with use_stored_history, the known user's stored history), the history excluded.
RECOMMEND_BY_HISTORY = "recommend_by_history"
TRANSFORM_FEATURES = "transform_features"  # serialized tf.Example -> transformed features
# serialized tf.Example -> rating under TF Serving's regression contract (method name
# tf.saved_model.REGRESS_METHOD_NAME, input "inputs", output "outputs"): what Regress and
# MultiInference run, on the real TF Serving as on ours.
REGRESS = "regress"

EXAMPLES_INPUT = "examples"
K_INPUT = "k"
EXCLUDE_RATED_INPUT = "exclude_rated"  # recommend: drop every item the user interacted with (all splits)
EXCLUDE_ITEMS_INPUT = "exclude_item_ids"  # recommend_filtered
ALLOW_ITEMS_INPUT = "allow_item_ids"  # recommend_filtered; empty = no restriction
HISTORY_ITEMS_INPUT = "history_item_ids"  # recommend_by_history: [rows, L] string, "" pads a short row
HISTORY_WEIGHTS_INPUT = "history_weights"  # recommend_by_history: [rows, L] float, or empty for all 1.0
# recommend_by_history: also score from (and exclude) what the pipeline saw of a known user (every split);
# False scores from exactly the given history (what the ranking gate does, with eval left out).
USE_STORED_HISTORY_INPUT = "use_stored_history"
UNKNOWN_ITEMS_OUTPUT = "unknown_history_items"  # [rows] int32: history ids not in the catalogue (ignored)
HISTORY_LENGTH_OUTPUT = "history_length"  # [rows] int32: distinct catalogue items the row was scored from
FALLBACK_OUTPUT = "popularity_fallback"  # [rows] bool: no history and no attributes, most popular answered
RATING_OUTPUT = "rating"  # rating models' predict / serving_default
SCORE_OUTPUT = "score"  # ranking models' predict / serving_default: a ranking score, not a rating
ITEMS_OUTPUT = "item_ids"
TITLES_OUTPUT = "titles"
SCORES_OUTPUT = "scores"

DEFAULT_MODEL_NAME = "recsys"
# Requests TF Serving replays on a version before it serves it (a TFRecord of PredictionLog).
WARMUP_REQUESTS_FILE = "assets.extra/tf_serving_warmup_requests"
USERS_FILE = "users.csv"  # optional user attributes
