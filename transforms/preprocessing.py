"""TF Transform preprocessing for WALS: vocabularies for users and items, a data-learned rating scale.

Pure functions and constants only, no I/O (like TFT's census example): the Beam job in
`pipeline/preprocess/command.py` feeds raw interaction rows {visitorId, contentId, value} and gets back
userId / itemId (positions in the vocabularies `vocab_users` / `vocab_items`) and rating:

    rating = min(scale * value / median(value), 1)

The median is learned by a TFT analyzer: `tft.quantiles(value, num_buckets=2, epsilon=0.001)` has
the (approximate, within epsilon in rank) median as its single boundary. `scale` (default 0.3, as in
the original course) is bound with `make_preprocessing_fn(scale)`.

The vocabularies come from one of two TFT analyzers writing the same file (tested): `batched`
(transforms/vocabulary.py, the default: whole column batches, ~6 s less at 100k users) or `tft`
(stock `tft.compute_and_apply_vocabulary`, one Beam element per token).
"""
from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from transforms import vocabulary
from transforms.options import DEFAULT_RATING_SCALE, VOCABULARY_ANALYZERS

VISITOR_ID = "visitorId"
CONTENT_ID = "contentId"
VALUE = "value"
USER_ID = "userId"
ITEM_ID = "itemId"
RATING = "rating"

VOCAB_USERS = "vocab_users"
VOCAB_ITEMS = "vocab_items"

RAW_FEATURE_SPEC = {
    VISITOR_ID: tf.io.FixedLenFeature([], tf.string),
    CONTENT_ID: tf.io.FixedLenFeature([], tf.string),
    VALUE: tf.io.FixedLenFeature([], tf.float32),
}

TRANSFORMED_FEATURE_SPEC = {
    USER_ID: tf.io.FixedLenFeature([], tf.int64),
    ITEM_ID: tf.io.FixedLenFeature([], tf.int64),
    RATING: tf.io.FixedLenFeature([], tf.float32),
}


def preprocessing_fn(inputs: dict, *, scale: float = DEFAULT_RATING_SCALE,
                     vocabulary_analyzer: str = "batched",
                     vocab_shards: int = vocabulary.DEFAULT_SHARDS) -> dict:
    """Maps raw interactions to vocabulary ids and a rating in (0, 1]."""
    if not scale > 0:
        raise ValueError(f"rating scale must be > 0, got {scale}")
    value = tf.cast(inputs[VALUE], tf.float32)
    # num_buckets=2 -> exactly one boundary, the median (with 11 buckets none is the median).
    median = tf.reshape(tft.quantiles(value, num_buckets=2, epsilon=0.001), [-1])[0]
    # Guard a degenerate median (all values tiny): never divide by zero.
    median = tf.maximum(median, 1e-12)
    return {
        USER_ID: _vocabulary_ids(inputs[VISITOR_ID], VOCAB_USERS, vocabulary_analyzer, vocab_shards),
        ITEM_ID: _vocabulary_ids(inputs[CONTENT_ID], VOCAB_ITEMS, vocabulary_analyzer, vocab_shards),
        RATING: tf.minimum(scale * value / median, 1.0),
    }


def _vocabulary_ids(ids: tf.Tensor, vocab_filename: str, analyzer: str, shards: int) -> tf.Tensor:
    if analyzer == "batched":
        return vocabulary.compute_and_apply_vocabulary(ids, vocab_filename, shards)
    if analyzer == "tft":
        # Unit weights give the same frequency order, but TFT then counts unique ids per batch in
        # TF instead of emitting one Beam element per row (the unweighted path's hot spot).
        return tft.compute_and_apply_vocabulary(ids, vocab_filename=vocab_filename,
                                                weights=tf.ones_like(ids, dtype=tf.float32))
    raise ValueError(f"unknown vocabulary analyzer {analyzer!r}; expected one of {VOCABULARY_ANALYZERS}")


def make_preprocessing_fn(scale: float = DEFAULT_RATING_SCALE, vocabulary_analyzer: str = "batched",
                          vocab_shards: int = vocabulary.DEFAULT_SHARDS):
    """preprocessing_fn with its options bound (TFT calls it with the inputs only)."""
    if not scale > 0:
        raise ValueError(f"--rating_scale must be > 0, got {scale}")
    return functools.partial(preprocessing_fn, scale=float(scale),
                             vocabulary_analyzer=vocabulary_analyzer, vocab_shards=int(vocab_shards))


def learned_median(values: np.ndarray, ratings: np.ndarray, scale: float) -> float | None:
    """The float32 median TFT used, read back from transformed rows (None if all are clamped).

    TFT computes rating = fl32(fl32(scale * value) / median). Inverting one unclamped row gives the
    median to within an ulp or two; of the float32 numbers around that estimate, the one that
    reproduces the given rows' ratings exactly is the median.
    """
    unclamped = (ratings > 0) & (ratings < 1)
    numerators = np.float32(scale) * np.asarray(values, np.float32)[unclamped][:256]
    ratings = np.asarray(ratings, np.float32)[unclamped][:256]
    if not len(ratings):
        return None
    best = int(np.argmax(ratings))  # the largest rating has the smallest relative rounding error
    estimate = np.float32(float(numerators[best]) / float(ratings[best]))
    candidates = [estimate]
    for direction in (np.float32(np.inf), np.float32(0)):
        neighbour = estimate
        for _ in range(4):
            neighbour = np.nextafter(neighbour, direction)
            candidates.append(neighbour)
    exact = [int(np.sum(numerators / m == ratings)) for m in candidates]
    return float(candidates[int(np.argmax(exact))])  # ties -> the earliest, i.e. nearest the estimate
