"""The ranking gate: a custom TFX component that judges a model by its top-k lists and blesses it for the Pusher.

TFMA scores one prediction per example; a recommender is judged by what it puts in a user's top-k out of
the whole catalogue, next to what "most popular" would have shown. This component loads the trained
SavedModel, asks its `recommend_by_history` signature for every eval user's top-k, scored from and
excluding the user's history before eval (train + validation, sent explicitly: the model's stored
history also holds eval; the protocol of components/ranking_eval.py; with a window of spans, also every split of
the window's earlier spans, as the next day's serving scores from everything seen), and computes
Recall@k and NDCG@k overall and per slice (user activity, item popularity: the buckets ExampleGen adds),
beside most-popular on the same split and the latest blessed model when there is one.

Blessing (a ModelBlessing as TFX's Evaluator writes it, so the standard Pusher and the
LatestBlessedModelStrategy resolver read it): a ranking model is blessed iff its Recall@k is above
most-popular's * (1 + min_lift_over_popular) and not below the baseline's by more than
max_relative_recall_regression (relative) with confidence: the per-user differences pair the two models on
the same users, and a regression is refused only when the upper confidence bound of the mean difference is below
the allowed drop (regression_confidence; 0.5 is the plain point comparison). An eval split of a few hundred users
moves Recall@10 by more than 2 % between two equally good models. A rating model's ranking metrics are reported and, unless
gate_rating_models is set, do not gate it: TFMA's RMSE gate (its `rating_blessing`) decides. The metrics
and the verdict are written as JSON into the blessing's directory (METRICS_FILE), for `recsys runs show`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import posixpath
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set

import numpy as np
import tensorflow as tf
from tfx import types
from tfx.components.evaluator import constants as evaluator_constants
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter
from tfx.utils import path_utils

from components import features as F
from components import ann, example_files, models, ranking_eval
from components.atomic_io import atomic_write
from components.training_config import CUSTOM_CONFIG_KEY

METRICS_FILE = "ranking_metrics.json"  # in the blessing artifact's directory
OVERALL = "overall"
SLICE_FEATURES = (F.USER_ACTIVITY, F.ITEM_POPULARITY)
DEFAULT_K = 10

# Input, output and parameter keys.
EXAMPLES_KEY, MODEL_KEY, BASELINE_MODEL_KEY, RATING_BLESSING_KEY, HISTORY_EXAMPLES_KEY = (
    "examples", "model", "baseline_model", "rating_blessing", "history_examples")
BLESSING_KEY = "blessing"
TRAINING_CONFIG_KEY = "training_config"  # the Trainer's custom_config, as JSON
K_KEY = "k"
MIN_LIFT_KEY = "min_lift_over_popular"
MAX_REGRESSION_KEY = "max_relative_recall_regression"
CONFIDENCE_KEY = "regression_confidence"
DEFAULT_CONFIDENCE = 0.95
GATE_RATING_KEY = "gate_rating_models"


class RankingGateSpec(types.ComponentSpec):
    PARAMETERS = {
        TRAINING_CONFIG_KEY: ExecutionParameter(type=str),
        K_KEY: ExecutionParameter(type=int),
        MIN_LIFT_KEY: ExecutionParameter(type=float),
        MAX_REGRESSION_KEY: ExecutionParameter(type=float),
        CONFIDENCE_KEY: ExecutionParameter(type=float),
        GATE_RATING_KEY: ExecutionParameter(type=int),
    }
    INPUTS = {
        EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        BASELINE_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model, optional=True),
        RATING_BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing, optional=True),
        # The window's spans (this run's among them): their other splits are the eval users' earlier history.
        HISTORY_EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples, optional=True),
    }
    OUTPUTS = {BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing)}


# --- reading ExampleGen's splits -------------------------------------------------------------------------

class Ids:
    """String ids <-> dense int codes, shared by the splits read with it (users and items apart)."""

    def __init__(self):
        self.codes: Dict[str, int] = {}
        self.names: List[str] = []

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Codes of a batch of byte strings; each distinct value is decoded and looked up once."""
        unique, inverse = np.unique(values, return_inverse=True)
        mapped = np.empty(len(unique), np.int32)
        for n, value in enumerate(unique):
            name = value.decode("utf-8")
            code = self.codes.get(name)
            if code is None:
                code = self.codes[name] = len(self.names)
                self.names.append(name)
            mapped[n] = code
        return mapped[inverse]


@dataclasses.dataclass
class SplitData:
    """One split as two int32 columns of codes (never a Python object per interaction) and the slices."""

    users: np.ndarray  # user code per interaction
    items: np.ndarray  # item code per interaction
    user_slices: Dict[int, str]  # user code -> user_activity bucket
    item_slices: Dict[int, str]  # item code -> item_popularity bucket

    @classmethod
    def empty(cls) -> "SplitData":
        return cls(np.zeros(0, np.int32), np.zeros(0, np.int32), {}, {})


def read_split(examples: types.Artifact, split: str, users: Ids, items: Ids, allow_empty: bool = False,
               batch: int = 65536) -> SplitData:
    """One split of ExampleGen's tf.Examples, streamed in batches into int codes (memory: 8 bytes an interaction)."""
    try:
        uri = artifact_utils.get_split_uri([examples], split)
    except ValueError:  # the artifact has no such split
        if not allow_empty:
            raise
        return SplitData.empty()
    files = example_files.matching_files([posixpath.join(uri, "*")])
    if not files:
        if allow_empty:
            return SplitData.empty()
        raise ValueError(f"{uri}: split {split!r} has no files")
    spec = {key: tf.io.FixedLenFeature([], tf.string, default_value="")
            for key in (F.USER_ID, F.ITEM_ID, *SLICE_FEATURES)}
    data = tf.data.TFRecordDataset(files, compression_type=example_files.compression(files)).batch(batch).map(
        lambda serialized: tf.io.parse_example(serialized, spec))
    user_parts, item_parts = [], []
    user_slices: Dict[int, str] = {}
    item_slices: Dict[int, str] = {}
    for columns in data.as_numpy_iterator():
        user_codes, item_codes = users.encode(columns[F.USER_ID]), items.encode(columns[F.ITEM_ID])
        user_parts.append(user_codes)
        item_parts.append(item_codes)
        for codes, buckets, slices in ((user_codes, columns[F.USER_ACTIVITY], user_slices),
                                       (item_codes, columns[F.ITEM_POPULARITY], item_slices)):
            _, first = np.unique(codes, return_index=True)
            slices.update((int(codes[n]), buckets[n].decode("utf-8")) for n in first)
    if not user_parts:
        return SplitData.empty()
    return SplitData(np.concatenate(user_parts), np.concatenate(item_parts), user_slices, item_slices)


# --- asking the model --------------------------------------------------------------------------------------

def load_model(model: types.Artifact):
    ann.register_ops()  # a model with a ScaNN index needs its ops
    return tf.saved_model.load(path_utils.serving_model_path(model.uri))


# --- metrics ------------------------------------------------------------------------------------------------

def metrics_by_slice(ranked: Mapping[str, Sequence[str]], relevant: Mapping[str, Set[str]],
                     user_slices: Mapping[str, str], item_slices: Mapping[str, str], k: int,
                     num_items: int) -> Dict[str, Dict[str, float]]:
    """'overall' and 'feature=bucket' -> recall, ndcg, users (and coverage overall).

    A user-activity slice keeps its users; an item-popularity slice keeps every user's relevant items
    in that bucket (the lists are the same, the hits counted are those among the slice's items).
    """
    out = {OVERALL: ranking_eval.ranking_metrics(ranked, relevant, k)}
    out[OVERALL]["coverage"] = ranking_eval.coverage(ranked, num_items, k)
    for bucket in sorted(set(user_slices.values())):
        chosen = {u: items for u, items in relevant.items() if user_slices.get(u) == bucket}
        out[f"{F.USER_ACTIVITY}={bucket}"] = ranking_eval.ranking_metrics(ranked, chosen, k)
    for bucket in sorted(set(item_slices.values())):
        chosen = {u: {i for i in items if item_slices.get(i) == bucket} for u, items in relevant.items()}
        out[f"{F.ITEM_POPULARITY}={bucket}"] = ranking_eval.ranking_metrics(ranked, chosen, k)
    return out


@dataclasses.dataclass
class Evaluation:
    model: Dict[str, Dict[str, float]]
    most_popular: Dict[str, Dict[str, float]]
    baseline: Optional[Dict[str, Dict[str, float]]]
    # Recall@k per eval user (the same users, in the same order): the paired comparison with the baseline
    # (baseline_per_user is set with baseline).
    model_per_user: np.ndarray
    baseline_per_user: Optional[np.ndarray] = None


def concat(*parts: SplitData) -> SplitData:
    """One split of several (their slices merged; codes come from the same Ids)."""
    users = np.concatenate([p.users for p in parts]) if parts else np.zeros(0, np.int32)
    items = np.concatenate([p.items for p in parts]) if parts else np.zeros(0, np.int32)
    user_slices: Dict[int, str] = {}
    item_slices: Dict[int, str] = {}
    for part in parts:
        user_slices.update(part.user_slices)
        item_slices.update(part.item_slices)
    return SplitData(users, items, user_slices, item_slices)


def evaluate(saved_model, train: SplitData, evaluation: SplitData, users: Ids, items: Ids, k: int,
             baseline_model=None, validation: Optional[SplitData] = None,
             earlier: Optional[SplitData] = None) -> Evaluation:
    """The model's, most-popular's and (if given) the baseline model's metrics on the same eval split.

    Every list is scored from the user's history before eval (train + validation: what the model's weights
    were fitted on; plus `earlier`, the window's earlier spans) and excludes it; most popular counts the same
    interactions. The history stays a sparse matrix of codes, turned into ids a batch of users at a time; only
    the eval split becomes Python sets."""
    seen = concat(train, validation or SplitData.empty(), earlier or SplitData.empty())
    interactions = ranking_eval.Interactions.from_codes(seen.users, seen.items, users.names, items.names)
    history = interactions.history()
    relevant: Dict[str, Set[str]] = {}
    for user, item in zip(evaluation.users.tolist(), evaluation.items.tolist()):
        relevant.setdefault(users.names[user], set()).add(items.names[item])
    eval_users = sorted(relevant)
    user_slices = {users.names[u]: bucket for u, bucket in evaluation.user_slices.items()}
    item_slices = {items.names[i]: bucket for i, bucket in evaluation.item_slices.items()}
    num_items = len(interactions.items)
    popular = ranking_eval.top_k(interactions, ranking_eval.most_popular(interactions), eval_users, k)

    def of(ranked):
        return metrics_by_slice(ranked, relevant, user_slices, item_slices, k, num_items)

    def model_lists(model):
        return ranking_eval.saved_model_top_k(model, eval_users, history, k)

    lists = model_lists(saved_model)
    result = Evaluation(model=of(lists), most_popular=of(popular), baseline=None,
                        model_per_user=ranking_eval.recall_per_user(lists, relevant, eval_users, k))
    if baseline_model is not None:
        baseline_lists = model_lists(baseline_model)
        result.baseline = of(baseline_lists)
        result.baseline_per_user = ranking_eval.recall_per_user(baseline_lists, relevant, eval_users, k)
    return result


def baseline_comparison(result: Evaluation, confidence: float) -> Optional[Dict[str, float]]:
    """The paired difference with the baseline over the eval users: its mean and upper confidence bound."""
    if result.baseline is None:
        return None
    model, base = result.model[OVERALL]["recall"], result.baseline[OVERALL]["recall"]
    upper = ranking_eval.paired_upper_bound(result.model_per_user, result.baseline_per_user, confidence)
    return {"mean_difference": model - base, "upper_bound": upper, "confidence": confidence,
            "users": int(result.model[OVERALL]["users"])}


def ranking_failures(result: Evaluation, k: int, min_lift: float, max_regression: float,
                     confidence: float = 0.5) -> List[str]:
    """Why the model is not good enough at ranking (empty: it is)."""
    failures = []
    recall = result.model[OVERALL]["recall"]
    popular = result.most_popular[OVERALL]["recall"]
    if not recall > popular * (1 + min_lift):
        bound = f"most popular's {popular:.4f}" + (f" * (1 + {min_lift:g})" if min_lift else "")
        failures.append(f"{OVERALL}: recall@{k} {recall:.4f} is not above {bound}")
    comparison = baseline_comparison(result, confidence)
    if comparison is not None:
        base = result.baseline[OVERALL]["recall"]
        if comparison["upper_bound"] < -max_regression * base:
            failures.append(f"{OVERALL}: recall@{k} {recall:.4f} is more than {max_regression:.0%} below the "
                            f"latest blessed model's {base:.4f} (paired over {comparison['users']} users, the "
                            f"difference's {confidence:.0%} upper bound is {comparison['upper_bound']:+.4f})")
    return failures


def model_name(training_config: str) -> str:
    """The `--model` the Trainer was given ('auto' when the config does not say)."""
    values = json.loads(training_config or "{}")
    return values.get(CUSTOM_CONFIG_KEY, {}).get("model", models.AUTO)


def _blessed(artifact: types.Artifact) -> bool:
    return artifact.get_int_custom_property(evaluator_constants.ARTIFACT_PROPERTY_BLESSED_KEY) == \
        evaluator_constants.BLESSED_VALUE


class Executor(base_executor.BaseExecutor):
    """Computes the ranking metrics and writes the blessing (property, marker file and metrics JSON)."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        k = int(exec_properties.get(K_KEY) or DEFAULT_K)
        min_lift = float(exec_properties.get(MIN_LIFT_KEY) or 0.0)
        max_regression = float(exec_properties.get(MAX_REGRESSION_KEY) or 0.0)
        confidence = float(exec_properties.get(CONFIDENCE_KEY) or 0.5)
        name = model_name(exec_properties.get(TRAINING_CONFIG_KEY, ""))
        ranking = models.is_ranking(name)
        gated = ranking or bool(exec_properties.get(GATE_RATING_KEY))

        examples = artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY])
        model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
        baseline = (input_dict.get(BASELINE_MODEL_KEY) or [None])[0]
        rating_blessing = (input_dict.get(RATING_BLESSING_KEY) or [None])[0]
        blessing = artifact_utils.get_single_instance(output_dict[BLESSING_KEY])

        users, items = Ids(), Ids()
        train = read_split(examples, F.TRAIN_SPLIT, users, items)
        evaluation = read_split(examples, F.EVAL_SPLIT, users, items)
        validation = read_split(examples, F.VALIDATION_SPLIT, users, items, allow_empty=True)
        earlier_spans = [a for a in input_dict.get(HISTORY_EXAMPLES_KEY) or [] if a.uri != examples.uri]
        earlier = concat(*(read_split(a, split, users, items, allow_empty=True)
                           for a in earlier_spans for split in F.SPLIT_NAMES))
        result = evaluate(load_model(model), train, evaluation, users, items, k,
                          baseline_model=load_model(baseline) if baseline is not None else None,
                          validation=validation, earlier=earlier)
        failures = ranking_failures(result, k, min_lift, max_regression, confidence)
        if not gated:  # reported, not gating
            failures = []
        if not ranking:
            if rating_blessing is None:
                failures.append(f"rating model {name!r}: no RMSE evaluation (rating_blessing) to gate it")
            elif not _blessed(rating_blessing):
                failures.append(f"rating model {name!r}: the RMSE gate (Evaluator) did not bless it")
        blessed = not failures

        blessing.set_string_custom_property(evaluator_constants.ARTIFACT_PROPERTY_CURRENT_MODEL_URI_KEY, model.uri)
        blessing.set_int_custom_property(evaluator_constants.ARTIFACT_PROPERTY_CURRENT_MODEL_ID_KEY, model.id)
        if baseline is not None:
            blessing.set_string_custom_property(evaluator_constants.ARTIFACT_PROPERTY_BASELINE_MODEL_URI_KEY,
                                                baseline.uri)
            blessing.set_int_custom_property(evaluator_constants.ARTIFACT_PROPERTY_BASELINE_MODEL_ID_KEY,
                                             baseline.id)
        blessing.set_float_custom_property(f"recall_at_{k}", result.model[OVERALL]["recall"])
        blessing.set_float_custom_property(f"most_popular_recall_at_{k}", result.most_popular[OVERALL]["recall"])
        report = {
            "k": k, "model_name": name, "ranking_model": ranking, "gated_on_ranking": gated, "blessed": blessed,
            "failures": failures, "model": result.model, "most_popular": result.most_popular,
            "baseline": result.baseline, "baseline_model": baseline.uri if baseline is not None else None,
            "rating_blessed": _blessed(rating_blessing) if rating_blessing is not None else None,
            "baseline_comparison": baseline_comparison(result, confidence),
            "history_spans": len(earlier_spans),
            "thresholds": {MIN_LIFT_KEY: min_lift, MAX_REGRESSION_KEY: max_regression, CONFIDENCE_KEY: confidence},
        }
        tf.io.gfile.makedirs(blessing.uri)
        atomic_write(posixpath.join(blessing.uri, METRICS_FILE), json.dumps(report, indent=1, sort_keys=True))
        markers = [evaluator_constants.BLESSED_FILE_NAME, evaluator_constants.NOT_BLESSED_FILE_NAME]
        marker, stale = markers if blessed else markers[::-1]
        if tf.io.gfile.exists(posixpath.join(blessing.uri, stale)):  # a re-run into the same directory
            tf.io.gfile.remove(posixpath.join(blessing.uri, stale))
        atomic_write(posixpath.join(blessing.uri, marker), "")
        blessing.set_int_custom_property(
            evaluator_constants.ARTIFACT_PROPERTY_BLESSED_KEY,
            evaluator_constants.BLESSED_VALUE if blessed else evaluator_constants.NOT_BLESSED_VALUE)
        logging.info("ranking gate: recall@%d %.4f (most popular %.4f%s): %s", k, result.model[OVERALL]["recall"],
                     result.most_popular[OVERALL]["recall"],
                     f", baseline {result.baseline[OVERALL]['recall']:.4f}" if result.baseline else "",
                     "blessed" if blessed else "NOT blessed: " + "; ".join(failures))


def read_report(blessing_uri: str) -> Optional[Dict[str, Any]]:
    """The gate's metrics and verdict from a blessing directory (None if not written by this gate)."""
    path = posixpath.join(blessing_uri, METRICS_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "r") as f:
        return json.loads(f.read())


class RankingGate(base_component.BaseComponent):
    """Blesses a model whose top-k lists beat most-popular (and do not regress); see the module docstring."""

    SPEC_CLASS = RankingGateSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, examples: types.BaseChannel, model: types.BaseChannel, training_config: Any,
                 baseline_model: Optional[types.BaseChannel] = None,
                 rating_blessing: Optional[types.BaseChannel] = None, k: int = DEFAULT_K,
                 min_lift_over_popular: float = 0.0, max_relative_recall_regression: float = 0.02,
                 regression_confidence: float = DEFAULT_CONFIDENCE, gate_rating_models: bool = False,
                 history_examples: Optional[types.BaseChannel] = None):
        if not 0.5 <= regression_confidence < 1.0:
            raise ValueError(f"regression_confidence must be in [0.5, 1), got {regression_confidence}")
        spec = RankingGateSpec(
            examples=examples, model=model, baseline_model=baseline_model, rating_blessing=rating_blessing,
            history_examples=history_examples,
            training_config=training_config, k=k, min_lift_over_popular=min_lift_over_popular,
            max_relative_recall_regression=max_relative_recall_regression,
            regression_confidence=regression_confidence,
            gate_rating_models=int(gate_rating_models),
            blessing=types.Channel(type=standard_artifacts.ModelBlessing))
        super().__init__(spec=spec)
