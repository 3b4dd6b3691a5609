"""Test helpers for the trainer: write a small preproc dir the way the preprocess stage does.

Writes items_for_user-* / users_for_item-* TFRecord shards (DESIGN.md record format),
metadata.json and transform_fn/assets/vocab_users, vocab_items, without running Beam.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
import tensorflow as tf

from trainer import task


def example(key: int, indices, values) -> bytes:
    feature = {
        "key": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(key)])),
        "indices": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(i) for i in indices])),
        "values": tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_records(path: str, records: list[bytes]) -> None:
    options = tf.io.TFRecordOptions(compression_type="GZIP" if path.endswith(".gz") else "")
    with tf.io.TFRecordWriter(path, options) as writer:
        for record in records:
            writer.write(record)


def _rows(keys, others, ratings, n_rows):
    """One Example per row key that has entries, indices sorted."""
    order = np.lexsort((others, keys))
    keys, others, ratings = keys[order], others[order], ratings[order]
    bounds = np.searchsorted(keys, np.arange(n_rows + 1))
    return [example(row, others[bounds[row]:bounds[row + 1]], ratings[bounds[row]:bounds[row + 1]])
            for row in range(n_rows) if bounds[row + 1] > bounds[row]]


def write_preproc(root: str, users, items, ratings, nusers: int, nitems: int, shards: int = 2,
                  gz: bool = False, metadata: dict | None = None, user_ids: list[str] | None = None,
                  item_ids: list[str] | None = None) -> str:
    """Writes a preproc dir for the COO matrix (users, items, ratings); returns its path.
    Vocabularies: `user_ids` / `item_ids`, default visitor<i> / item<i>."""
    users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
    ratings = np.asarray(ratings, np.float32)
    os.makedirs(os.path.join(root, "transform_fn", "assets"), exist_ok=True)
    suffix = ".gz" if gz else ""
    for prefix, records in (("items_for_user", _rows(users, items, ratings, nusers)),
                            ("users_for_item", _rows(items, users, ratings, nitems))):
        for shard in range(shards):
            write_records(os.path.join(root, f"{prefix}-{shard:05d}-of-{shards:05d}{suffix}"),
                          records[shard::shards])
    vocabs = {}
    for name, ids in (("vocab_users", user_ids or [f"visitor{i}" for i in range(nusers)]),
                      ("vocab_items", item_ids or [f"item{i}" for i in range(nitems)])):
        vocabs[name] = os.path.join(root, "transform_fn", "assets", name)
        with open(vocabs[name], "w") as handle:
            handle.writelines(f"{value}\n" for value in ids)
    meta = {"nusers": nusers, "nitems": nitems, "interactions": int(users.size),
            "created": "2026-01-01T00:00:00", **vocabs, **(metadata or {})}
    with open(os.path.join(root, "metadata.json"), "w") as handle:
        json.dump(meta, handle)
    return root


def random_matrix(nusers: int, nitems: int, density: float, seed: int):
    """A random COO matrix where every user has at least two ratings."""
    rng = np.random.default_rng(seed)
    mask = rng.random((nusers, nitems)) < density
    mask[np.arange(nusers), rng.integers(0, nitems, nusers)] = True
    mask[np.arange(nusers), (np.arange(nusers) * 7 + 3) % nitems] = True
    users, items = np.nonzero(mask)
    ratings = rng.uniform(0.05, 1.0, users.size).astype(np.float32)
    return users, items, ratings


def train_args(input_dir: str, output_dir: str, *extra: str) -> argparse.Namespace:
    """The Namespace `python -m trainer.task` would build for these flags."""
    return task.build_parser().parse_args(["--input_dir", input_dir, "--output_dir", output_dir, *extra])
