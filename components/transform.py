"""Transform's entry point: raw ids and whatever attributes the data contract declares, inside the TF graph.

Ids become vocabulary indices (an unseen id lands in the OOV bucket); each declared attribute is encoded
by its kind: categorical and multi-valued strings through a vocabulary (with OOV), numbers scaled to z
scores with missing values (NaN) imputed at the mean and flagged, free text tokenised into a bag of words
over its most frequent tokens. The same graph is embedded in the exported model, so serving takes the
same raw features and train/serve skew is impossible by design.
"""

import tensorflow as tf
import tensorflow_transform as tft

from components import contract as contract_lib
from components import features as F

# Transform's custom_config keys: ids seen fewer times than this share the OOV bucket; the data contract
# (under contract_lib.CONFIG_KEY).
MIN_ID_FREQUENCY = "min_id_frequency"
CATEGORY_TOP_K = 1000  # most frequent values of a categorical / multi-valued feature kept (rest: OOV)
TEXT_TOP_K = 500  # most frequent tokens of a text feature
TEXT_MIN_FREQUENCY = 2
NUMERIC_CLIP = 5.0  # z scores beyond this are clipped (one outlier must not dominate a dot product)


def _flat(x: tf.Tensor) -> tf.Tensor:
    return tf.reshape(x, [-1])


def _one_per_row(x, missing):
    """[B] values of a one-value feature, whether it arrives dense or (when SchemaGen saw it absent) sparse."""
    return _flat(tf.sparse.to_dense(x, default_value=missing) if isinstance(x, tf.SparseTensor) else x)


def _as_sparse(x):
    """Multi-valued features arrive sparse (or dense [B, 1] when SchemaGen saw one value per row)."""
    if isinstance(x, tf.SparseTensor):
        return x
    if isinstance(x, tf.RaggedTensor):
        return x.to_sparse()
    return tf.sparse.from_dense(tf.reshape(x, [tf.shape(x)[0], -1]))


def tokenize(text: tf.Tensor) -> tf.SparseTensor:
    """Lower-cased words (letters and digits) of each row: [B, None] sparse."""
    cleaned = tf.strings.regex_replace(tf.strings.lower(_flat(text)), r"[^\p{L}\p{N}]+", " ")
    return tf.strings.split(cleaned).to_sparse()


def _numeric(x: tf.Tensor) -> tf.Tensor:
    """[B, 2]: the z score (0 when missing) and a missing flag; mean and variance over the present values."""
    values = tf.cast(_one_per_row(x, float("nan")), tf.float32)
    missing = tf.math.is_nan(values)
    present = tf.boolean_mask(values, ~missing)
    mean, var = tft.mean(present), tft.var(present)
    z = tf.clip_by_value((values - mean) * tf.math.rsqrt(var + 1e-8), -NUMERIC_CLIP, NUMERIC_CLIP)
    return tf.stack([tf.where(missing, tf.zeros_like(z), z), tf.cast(missing, tf.float32)], axis=1)


def encode_feature(feature: contract_lib.Feature, x):
    key = F.vocab_name(feature.name)
    if feature.kind == contract_lib.NUMERIC:
        return _numeric(x)
    if feature.kind == contract_lib.CATEGORICAL:
        return _flat(tft.compute_and_apply_vocabulary(_one_per_row(x, ""), top_k=CATEGORY_TOP_K,
                                                      num_oov_buckets=F.OOV_BUCKETS, vocab_filename=key))
    if feature.kind == contract_lib.MULTI:
        return tft.compute_and_apply_vocabulary(_as_sparse(x), top_k=CATEGORY_TOP_K, num_oov_buckets=F.OOV_BUCKETS,
                                                vocab_filename=key)
    if feature.kind == contract_lib.TEXT:
        return tft.compute_and_apply_vocabulary(tokenize(_one_per_row(x, "")), top_k=TEXT_TOP_K,
                                                frequency_threshold=TEXT_MIN_FREQUENCY,
                                                num_oov_buckets=F.OOV_BUCKETS, vocab_filename=key)
    raise ValueError(f"feature {feature.name!r}: kind {feature.kind!r} has no encoding")


# TFX calls this by name (Transform's `preprocessing_fn`).
def preprocessing_fn(inputs, custom_config=None):
    contract = contract_lib.from_custom_config(custom_config)
    min_frequency = int((custom_config or {}).get(MIN_ID_FREQUENCY, 1))
    outputs = {
        F.USER_INDEX: tft.compute_and_apply_vocabulary(
            _flat(inputs[F.USER_ID]), num_oov_buckets=F.OOV_BUCKETS, vocab_filename=F.USER_VOCAB,
            frequency_threshold=min_frequency,
        ),
        F.ITEM_INDEX: tft.compute_and_apply_vocabulary(
            _flat(inputs[F.ITEM_ID]), num_oov_buckets=F.OOV_BUCKETS, vocab_filename=F.ITEM_VOCAB,
            frequency_threshold=min_frequency,
        ),
    }
    for feature in contract.used(contract.item_features + contract.user_features):
        if feature.name in inputs:
            outputs[F.transformed_name(feature.name)] = encode_feature(feature, inputs[feature.name])
    if contract.title and contract.title in inputs:
        outputs[F.ITEM_TITLE_XF] = _one_per_row(inputs[contract.title], "")
    if F.RATING in inputs:  # absent at serving time and for implicit feedback
        outputs[F.LABEL_XF] = _flat(inputs[F.RATING])
    elif F.USER_ID in inputs:
        # Implicit feedback: every interaction is a positive of strength `weight` (1 without a weight column).
        weight = inputs.get(F.WEIGHT)
        outputs[F.LABEL_XF] = (_flat(tf.cast(weight, tf.float32)) if weight is not None
                               else tf.ones_like(_flat(inputs[F.USER_ID]), tf.float32))
    return outputs
