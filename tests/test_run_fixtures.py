"""Tiny preproc/model/predictions artifact folders in the DESIGN.md layout, for the driver and
report tests (written by hand here so these tests do not depend on the stages' code)."""
from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf


def _example(key: int, indices: list[int], values: list[float]) -> bytes:
    feature = {
        "key": tf.train.Feature(int64_list=tf.train.Int64List(value=[key])),
        "indices": tf.train.Feature(int64_list=tf.train.Int64List(value=indices)),
        "values": tf.train.Feature(float_list=tf.train.FloatList(value=values)),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_preproc(root: str, nusers: int = 6, nitems: int = 5, seed: int = 0) -> dict:
    """Writes root/preproc (shards, vocabularies, metadata.json); returns the interactions."""
    rng = np.random.default_rng(seed)
    preproc = os.path.join(root, "preproc")
    assets = os.path.join(preproc, "transform_fn", "assets")
    os.makedirs(assets)
    ratings = {(u, i): float(np.round(rng.uniform(0.1, 1.0), 3))
               for u in range(nusers) for i in range(nitems) if rng.random() < 0.5 or i == u % nitems}
    for name, ids in (("vocab_users", [f"visitor{u}" for u in range(nusers)]),
                      ("vocab_items", [f"article{i}" for i in range(nitems)])):
        with open(os.path.join(assets, name), "w") as f:
            f.write("".join(x + "\n" for x in ids))
    for prefix, by_user in (("items_for_user", True), ("users_for_item", False)):
        with tf.io.TFRecordWriter(os.path.join(preproc, f"{prefix}-00000-of-00001")) as w:
            for key in range(nusers if by_user else nitems):
                pairs = sorted((i, r) for (u, i), r in ratings.items() if u == key) if by_user else \
                    sorted((u, r) for (u, i), r in ratings.items() if i == key)
                w.write(_example(key, [p[0] for p in pairs], [p[1] for p in pairs]))
    values = list(ratings.values())
    metadata = {"nusers": nusers, "nitems": nitems, "interactions": len(ratings),
                "input_rows": len(ratings) + 2, "accepted_rows": len(ratings), "rejected_rows": 2,
                "rejected_by_reason": {"invalid_json": 2}, "source": "ga_export", "ga_preset": "news",
                "rating": {"median_value": 31000.0, "scale": 0.3, "min": min(values),
                           "max": max(values), "mean": float(np.mean(values))}}
    with open(os.path.join(preproc, "metadata.json"), "w") as f:
        json.dump(metadata, f)
    return ratings


def write_model(root: str, nusers: int = 6, nitems: int = 5, n_embeds: int = 3,
                losses=(2.0, 1.2, 0.9), with_metrics: bool = True) -> None:
    model = os.path.join(root, "model")
    os.makedirs(model, exist_ok=True)
    rng = np.random.default_rng(1)
    np.save(os.path.join(model, "row_factors.npy"), rng.normal(size=(nusers, n_embeds)).astype(np.float32))
    np.save(os.path.join(model, "col_factors.npy"), rng.normal(size=(nitems, n_embeds)).astype(np.float32))
    with open(os.path.join(model, "model.json"), "w") as f:
        json.dump({"n_embeds": n_embeds, "nusers": nusers, "nitems": nitems,
                   "preproc_dir": os.path.join(root, "preproc"), "hyperparameters": {"regularization": 0.1},
                   "epochs_completed": len(losses), "loss_history": list(losses)}, f)
    if with_metrics:
        with open(os.path.join(model, "metrics.json"), "w") as f:
            json.dump({"wals": {"ndcg@10": 0.31, "precision@10": 0.12},
                       "popularity": {"ndcg@10": 0.18, "precision@10": 0.07}}, f)


def write_predictions(root: str, lines: list[str]) -> None:
    predictions = os.path.join(root, "predictions")
    os.makedirs(predictions, exist_ok=True)
    with open(os.path.join(predictions, "batch_pred-00000-of-00001"), "w") as f:
        f.write("".join(line + "\n" for line in lines))


def write_run(root: str) -> None:
    """A complete small run: preproc, model and predictions."""
    write_preproc(root)
    write_model(root)
    write_predictions(root, ["visitor0\tarticle3,article1", "visitor1\tarticle0,article4"])
