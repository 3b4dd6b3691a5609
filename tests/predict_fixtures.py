"""Small preproc/ + model/ folders in the layout of DESIGN.md / ARCHITECTURE.md, for the
batch_predict tests (the real stages are not needed to produce them)."""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
import tensorflow as tf


def _example(key: int, indices: list[int]) -> bytes:
    return tf.train.Example(features=tf.train.Features(feature={
        "key": tf.train.Feature(int64_list=tf.train.Int64List(value=[key])),
        "indices": tf.train.Feature(int64_list=tf.train.Int64List(value=indices)),
        "values": tf.train.Feature(float_list=tf.train.FloatList(value=[1.0] * len(indices))),
    })).SerializeToString()


def write_shards(folder: str, prefix: str, rows: dict[int, list[int]], nshards: int, gz: bool):
    keys = sorted(rows)
    for shard in range(nshards):
        name = f"{prefix}-{shard:05d}-of-{nshards:05d}" + (".gz" if gz else "")
        options = tf.io.TFRecordOptions(compression_type="GZIP" if gz else "")
        with tf.io.TFRecordWriter(os.path.join(folder, name), options) as writer:
            for key in keys[shard::nshards]:
                writer.write(_example(key, rows[key]))


def make_fixture(root, seen: dict[int, list[int]], row_factors: np.ndarray,
                 col_factors: np.ndarray, nshards: int = 2, gz: bool = False,
                 user_ids: list[str] | None = None, item_ids: list[str] | None = None):
    """Writes root/preproc and root/model; returns (preproc_dir, model_dir, user_ids, item_ids).

    seen: userId -> itemIds the user has (users missing from it get no items_for_user record).
    """
    nusers, nitems = len(row_factors), len(col_factors)
    user_ids = user_ids or [f"visitor-{u * 7 + 3}" for u in range(nusers)]
    item_ids = item_ids or [f"article/{j * 11 + 5}" for j in range(nitems)]
    preproc, model = os.path.join(str(root), "preproc"), os.path.join(str(root), "model")
    assets = os.path.join(preproc, "transform_fn", "assets")
    os.makedirs(assets)
    os.makedirs(model)
    for name, ids in (("vocab_users", user_ids), ("vocab_items", item_ids)):
        with open(os.path.join(assets, name), "w") as f:
            f.write("".join(i + "\n" for i in ids))
    users_for_item: dict[int, list[int]] = {}
    for user, items in seen.items():
        for item in items:
            users_for_item.setdefault(item, []).append(user)
    write_shards(preproc, "items_for_user", seen, nshards, gz)
    write_shards(preproc, "users_for_item", users_for_item, nshards, gz)
    with open(os.path.join(preproc, "metadata.json"), "w") as f:
        json.dump({"nusers": nusers, "nitems": nitems,
                   "interactions": sum(len(v) for v in seen.values())}, f)
    with open(os.path.join(model, "model.json"), "w") as f:
        json.dump({"n_embeds": row_factors.shape[1], "nusers": nusers, "nitems": nitems,
                   "preproc_dir": preproc}, f)
    np.save(os.path.join(model, "row_factors.npy"), row_factors.astype(np.float32))
    np.save(os.path.join(model, "col_factors.npy"), col_factors.astype(np.float32))
    return preproc, model, user_ids, item_ids


def random_fixture(root, nusers: int = 40, nitems: int = 15, nfactors: int = 4, seed: int = 0,
                   **kwargs):
    """Random factors; user u has seen (u % 5) random items; returns make_fixture's tuple + seen."""
    rng = np.random.default_rng(seed)
    seen = {u: sorted(rng.choice(nitems, size=u % 5, replace=False).tolist())
            for u in range(nusers)}
    fixture = make_fixture(root, seen, rng.standard_normal((nusers, nfactors)),
                           rng.standard_normal((nitems, nfactors)), **kwargs)
    return (*fixture, seen)


def predict_args(preproc: str, model: str, output: str, **overrides) -> argparse.Namespace:
    """The Namespace batch_predict.run.run expects, as the driver builds it."""
    from batch_predict.run import build_parser
    argv = ["--preproc_dir", preproc, "--model_dir", model, "--output_dir", output]
    args = build_parser().parse_args(argv)
    for name, value in overrides.items():
        setattr(args, name, value)
    return args


def read_topk(folder: str, prefix: str = "batch_pred") -> dict[str, list[str]]:
    """{query id: [candidate ids]} from the TAB files of one output."""
    result = {}
    for path in sorted(tf.io.gfile.glob(os.path.join(folder, prefix + "-*"))):
        if path.endswith((".json", ".jsonl")):
            continue
        for line in tf.io.gfile.GFile(path).read().splitlines():
            query, _, candidates = line.partition("\t")
            assert query not in result, f"{query} listed twice"
            result[query] = candidates.split(",") if candidates else []
    return result
