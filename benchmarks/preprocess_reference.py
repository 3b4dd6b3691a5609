"""The two references `benchmarks.preprocess` times the preprocess stage against, each run as its
own fresh process (`python -m benchmarks.preprocess_reference {straightforward,fast} DATA OUT_DIR`).

Both write what the stage writes for an interactions file: vocab_users / vocab_items (TFT's
order: frequency descending, ties by token descending) and the two TFRecord sides of
tf.train.Example records (DESIGN.md), with the same median-scaled ratings.

* `straightforward`: the issue's yardstick. pandas reads and sums per (user, item); each output
  record is one `tf.train.Example` built with the protobuf API from that key's slice of the
  sorted rows, written with `tf.io.TFRecordWriter`.
* `fast`: the same in pandas + numpy, but the Example bytes are encoded for all records at once
  with numpy (`pipeline.preprocess.examples`), as the stage does. A lower bound, kept for context.
"""
import json
import os
import sys
import time

import numpy as np
import pandas as pd
import tensorflow as tf

from pipeline.preprocess.examples import serialized_examples


def summed_interactions(path: str, scale: float = 0.3):
    """pandas: read, keep finite ratings >= 0, sum per pair, keep sums > 0; vocabularies and the
    (key ids, rating) columns as the stage computes them."""
    frame = pd.read_csv(path, dtype={"user_id": str, "item_id": str},
                        usecols=["user_id", "item_id", "rating"])
    frame["rating"] = pd.to_numeric(frame["rating"], errors="coerce")
    frame = frame[np.isfinite(frame["rating"]) & (frame["rating"] >= 0)]
    sums = frame.groupby(["user_id", "item_id"], sort=False)["rating"].sum()
    sums = sums[sums > 0].reset_index()
    vocabs = {}
    for column in ("user_id", "item_id"):
        counts = sums[column].value_counts()
        # TFT's order: frequency descending, ties by token descending.
        vocab = counts.reset_index().sort_values(["count", column], ascending=False)[column]
        vocabs[column] = pd.Index(vocab.to_numpy())
    user_ids = vocabs["user_id"].get_indexer(sums["user_id"])
    item_ids = vocabs["item_id"].get_indexer(sums["item_id"])
    value = sums["rating"].to_numpy(np.float32)
    median = float(np.median(value))
    rating = np.minimum(scale * value / median, 1.0).astype(np.float32)
    summary = {"nusers": len(vocabs["user_id"]), "nitems": len(vocabs["item_id"]),
               "interactions": len(sums), "median_value": median,
               "vocab_users": vocabs["user_id"].tolist(), "vocab_items": vocabs["item_id"].tolist()}
    return summary, user_ids, item_ids, rating


def _write_vocabularies(out_dir: str, summary: dict) -> None:
    for name in ("vocab_users", "vocab_items"):
        with open(os.path.join(out_dir, name), "w") as f:
            f.write("\n".join(summary[name]) + "\n")


def _sides(user_ids, item_ids):
    return (("users_for_item", item_ids, user_ids), ("items_for_user", user_ids, item_ids))


def straightforward_reference(path: str, out_dir: str) -> dict:
    """One tf.train.Example per key, built with the protobuf API, written with TFRecordWriter."""
    summary, user_ids, item_ids, rating = summed_interactions(path)
    _write_vocabularies(out_dir, summary)
    for name, keys, indices in _sides(user_ids, item_ids):
        order = np.lexsort((indices, keys))  # by key, then index ascending (DESIGN.md)
        keys, indices, values = keys[order], indices[order], rating[order]
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        ends = np.r_[starts[1:], len(keys)]
        with tf.io.TFRecordWriter(os.path.join(out_dir, name + "-00000-of-00001")) as writer:
            for start, end in zip(starts.tolist(), ends.tolist()):
                example = tf.train.Example(features=tf.train.Features(feature={
                    "key": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(keys[start])])),
                    "indices": tf.train.Feature(
                        int64_list=tf.train.Int64List(value=indices[start:end].tolist())),
                    "values": tf.train.Feature(
                        float_list=tf.train.FloatList(value=values[start:end].tolist()))}))
                writer.write(example.SerializeToString())
    return summary


def fast_reference(path: str, out_dir: str) -> dict:
    """The same outputs with the Example bytes encoded by numpy for all records at once."""
    summary, user_ids, item_ids, rating = summed_interactions(path)
    _write_vocabularies(out_dir, summary)
    for name, keys, indices in _sides(user_ids, item_ids):
        with tf.io.TFRecordWriter(os.path.join(out_dir, name + "-00000-of-00001")) as writer:
            for record in serialized_examples(keys, indices, rating):
                writer.write(record)
    return summary


REFERENCES = {"straightforward": straightforward_reference, "fast": fast_reference}


def main(argv: list[str]) -> None:
    """Runs one reference; prints its summary and its seconds after imports as one JSON line."""
    kind, data, out_dir = argv
    os.makedirs(out_dir, exist_ok=True)
    started = time.perf_counter()
    summary = REFERENCES[kind](data, out_dir)
    summary["compute_seconds"] = time.perf_counter() - started
    print(json.dumps(summary))


if __name__ == "__main__":
    main(sys.argv[1:])
