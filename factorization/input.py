"""Reads the preprocessing stage's output into the trainer: the key-remapping input_fn.

`items_for_user-*` / `users_for_item-*` hold one tf.train.Example per matrix row
(`key` int64[1], `indices` int64 list, `values` float list; DESIGN.md). `make_dataset`
batches serialized Examples, parses them with one vectorized `parse_example` and *remaps* the
first index column of the parsed SparseTensor from "position in the batch" to the example's
`key`, so every batch is a SparseTensor of whole rows of the [n_rows, n_cols] rating matrix.
`load_matrix` drains that dataset into COO numpy arrays for the in-memory solver and checks
it against metadata.json and the TFT vocabularies: any mismatch is a ValueError naming the
files, never a silent truncation.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import time

import numpy as np
import tensorflow as tf

from stagekit import artifacts
from stagekit.artifacts import VOCAB_ITEMS, VOCAB_USERS, count_lines, join  # noqa: F401 (re-exported)

LOG = logging.getLogger(__name__)

USERS_PREFIX = artifacts.ITEMS_FOR_USER  # rows = users, one Example per user
ITEMS_PREFIX = artifacts.USERS_FOR_ITEM  # rows = items, one Example per item

_FEATURES = {
    "key": tf.io.FixedLenFeature([1], tf.int64),
    "indices": tf.io.VarLenFeature(tf.int64),
    "values": tf.io.VarLenFeature(tf.float32),
}


@dataclasses.dataclass(frozen=True)
class Interactions:
    """The rating matrix as COO arrays (one entry per observed (user, item))."""
    users: np.ndarray    # int64 [nnz]
    items: np.ndarray    # int64 [nnz]
    ratings: np.ndarray  # float32 [nnz]
    nusers: int
    nitems: int

    @property
    def nnz(self) -> int:
        return int(self.ratings.shape[0])


def shard_files(preproc_dir: str, prefix: str) -> list[str]:
    return artifacts.shards(preproc_dir, prefix, missing=lambda pattern: ValueError(
        f"no TFRecord shards {pattern}: run the preprocess stage first (or check --input_dir)"))


def remap_rows(keys: tf.Tensor, indices: tf.SparseTensor, values: tf.SparseTensor,
               n_rows: int, n_cols: int) -> tf.SparseTensor:
    """Batch-position rows -> key rows: one SparseTensor of whole matrix rows.

    `indices` / `values` are the VarLen parses of a batch ([batch, max_len]); entry (b, j)
    holds column `indices.values[n]` with rating `values.values[n]` of the example at batch
    position b, whose matrix row is keys[b]. Rows without entries simply contribute nothing.
    """
    tf.debugging.assert_equal(indices.indices, values.indices,
                              message="an Example has len(indices) != len(values)")
    rows = tf.gather(keys, indices.indices[:, 0])
    return tf.SparseTensor(tf.stack([rows, indices.values], axis=1), values.values,
                           dense_shape=[n_rows, n_cols])


def make_dataset(files: list[str], n_rows: int, n_cols: int,
                 batch_size: int = 1024) -> tf.data.Dataset:
    """The key-remapping input_fn: yields (keys [B], SparseTensor [n_rows, n_cols]) per batch.

    Shards ending in .gz are read as GZIP, others uncompressed (both kinds may be mixed).
    The last batch may be partial.
    """
    records = artifacts.tfrecord_dataset(files)

    def parse(serialized):
        parsed = tf.io.parse_example(serialized, _FEATURES)
        keys = parsed["key"][:, 0]
        return keys, remap_rows(keys, parsed["indices"], parsed["values"], n_rows, n_cols)

    return records.batch(batch_size).map(parse, num_parallel_calls=tf.data.AUTOTUNE,
                                         deterministic=True).prefetch(tf.data.AUTOTUNE)


def _read_rows(files: list[str], n_rows: int, n_cols: int, batch_size: int):
    """Drains make_dataset into numpy (keys, row ids, col ids, ratings) with range checks."""
    keys, rows, cols, vals = [], [], [], []
    try:
        for batch_keys, sparse in make_dataset(files, n_rows, n_cols, batch_size):
            keys.append(batch_keys.numpy())
            index = sparse.indices.numpy()
            rows.append(index[:, 0])
            cols.append(index[:, 1])
            vals.append(sparse.values.numpy())
    except tf.errors.OpError as err:
        raise ValueError(f"cannot read TFRecords {files[0]} (+{len(files) - 1} more): "
                         f"{err.message}") from None
    def joined(parts: list, dtype) -> np.ndarray:
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)
    keys, rows, cols = joined(keys, np.int64), joined(rows, np.int64), joined(cols, np.int64)
    vals = joined(vals, np.float32)
    for what, ids, limit in (("key", keys, n_rows), ("index", cols, n_cols)):
        bad = (ids < 0) | (ids >= limit)
        if bad.any():
            raise ValueError(f"{files[0]}...: {int(bad.sum())} {what} value(s) outside "
                             f"[0, {limit}) (e.g. {int(ids[bad][0])}): the TFRecords do not "
                             "match metadata.json / the vocabularies")
    if keys.size and np.bincount(keys, minlength=n_rows).max() > 1:
        raise ValueError(f"{files[0]}...: duplicate keys, one Example per row expected")
    if not np.isfinite(vals).all():
        raise ValueError(f"{files[0]}...: non-finite rating values")
    return keys, rows, cols, vals


def read_metadata(preproc_dir: str) -> dict:
    """metadata.json, with nusers/nitems cross-checked against the vocabulary files."""
    path = join(preproc_dir, "metadata.json")
    metadata = artifacts.read_json(path, missing=lambda p: ValueError(
        f"{p} not found: --input_dir must be the preprocess stage's output"))
    for side, vocab in (("nusers", VOCAB_USERS), ("nitems", VOCAB_ITEMS)):
        vocab_path = artifacts.vocab_path(preproc_dir, vocab)
        if not tf.io.gfile.exists(vocab_path):
            raise ValueError(f"vocabulary {vocab_path} not found")
        size = count_lines(vocab_path)
        if side not in metadata:
            metadata[side] = size
        elif int(metadata[side]) != size:
            raise ValueError(f"{path} says {side}={metadata[side]} but {vocab_path} has "
                             f"{size} lines: preproc dir is inconsistent")
    return metadata


def load_matrix(preproc_dir: str, batch_size: int = 1024) -> tuple[Interactions, dict]:
    """Reads items_for_user (and checks users_for_item against it) into an Interactions."""
    start = time.time()
    metadata = read_metadata(preproc_dir)
    nusers, nitems = int(metadata["nusers"]), int(metadata["nitems"])
    # Both sides at once: tf.data decodes in C++ threads, so the two reads overlap.
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        by_user, by_item = pool.map(lambda side: _read_rows(shard_files(preproc_dir, side[0]),
                                                            *side[1:], batch_size),
                                    ((USERS_PREFIX, nusers, nitems), (ITEMS_PREFIX, nitems, nusers)))
    _, users, items, ratings = by_user
    _, t_items, t_users, t_ratings = by_item
    expected = metadata.get("interactions")
    for name, count in ((USERS_PREFIX, users.size), (ITEMS_PREFIX, t_users.size)):
        if expected is not None and count != int(expected):
            raise ValueError(f"{name}-* hold {count} entries but metadata.json says "
                             f"interactions={expected}")
    # Both files describe the same matrix: compare them as sorted (user, item) codes.
    codes = np.sort(users * nitems + items)
    if users.size != t_users.size or not np.array_equal(codes, np.sort(t_users * nitems + t_items)):
        raise ValueError(f"{USERS_PREFIX}-* and {ITEMS_PREFIX}-* describe different matrices")
    if (codes[1:] == codes[:-1]).any():
        raise ValueError(f"{USERS_PREFIX}-*: duplicate (user, item) entries")
    matrix = Interactions(users, items, ratings, nusers, nitems)
    LOG.info("input: read %d interactions, %d users, %d items from %s in %.2fs",
                 matrix.nnz, nusers, nitems, preproc_dir, time.time() - start)
    return matrix, metadata
