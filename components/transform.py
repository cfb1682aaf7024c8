"""Transform's entry point: raw string ids become vocabulary indices inside the TF graph.

The same graph is embedded in the exported model, so serving takes raw ids and an unseen id
lands in the OOV bucket instead of failing (train/serve skew is impossible by design).
"""

import tensorflow as tf
import tensorflow_transform as tft

from components import features as F


# Transform's custom_config key: ids seen fewer times than this share the OOV bucket.
MIN_ID_FREQUENCY = "min_id_frequency"


# TFX calls this by name (Transform's `preprocessing_fn`).
def preprocessing_fn(inputs, custom_config=None):
    min_frequency = int((custom_config or {}).get(MIN_ID_FREQUENCY, 1))
    outputs = {
        F.USER_INDEX: tft.compute_and_apply_vocabulary(
            inputs[F.USER_ID], num_oov_buckets=F.OOV_BUCKETS, vocab_filename=F.USER_VOCAB,
            frequency_threshold=min_frequency,
        ),
        F.ITEM_INDEX: tft.compute_and_apply_vocabulary(
            inputs[F.ITEM_ID], num_oov_buckets=F.OOV_BUCKETS, vocab_filename=F.ITEM_VOCAB,
            frequency_threshold=min_frequency,
        ),
        F.GENRES_INDEX: tft.compute_and_apply_vocabulary(
            inputs[F.GENRES], num_oov_buckets=F.OOV_BUCKETS, vocab_filename=F.GENRE_VOCAB
        ),
        F.TITLE_XF: inputs[F.TITLE],
        F.YEAR_XF: tft.scale_to_z_score(tf.cast(inputs[F.YEAR], tf.float32)),
    }
    if F.RATING in inputs:  # absent at serving time
        outputs[F.LABEL_XF] = inputs[F.RATING]
    return outputs
