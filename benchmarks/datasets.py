"""Datasets of different shapes for the quality benchmarks, as stored ratings (what preprocess
writes: ids 0..n-1, ratings in (0, 1]), each with an optional time order.

- movielens: MovieLens ml-latest-small (610 users x 9.7k items, 100k ratings; dense users, long
  item tail), ratings scaled like the pipeline: min(0.3 · rating / median, 1). Read in place
  from ../shared/data (research-use licence: never copied).
- ga_sample: the bundled GA360 news sample through the real preprocess stage (2.8k visitors x
  300 articles, 32k interactions; short sessions, few items).
- zipf: a generated long-tail set (20k users x 5k items, ~240k interactions): item popularity
  Zipf(1.1), user activity log-normal, choices drawn from 32 latent taste clusters mixed with
  popularity, time on page log-normal and scaled by its median like the pipeline.
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np

MOVIELENS = os.environ.get("GA_WALS_MOVIELENS", "/work/shared/data/ml-latest-small/ratings.csv")
CACHE = os.environ.get("GA_WALS_BENCH_DIR", "bench_out")


@dataclasses.dataclass
class Dataset:
    name: str
    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    nusers: int
    nitems: int
    times: np.ndarray | None = None   # an order of the interactions (day-over-day splits)

    def describe(self) -> str:
        return (f"{self.name}: {self.nusers} users x {self.nitems} items, "
                f"{self.users.size} interactions")


def movielens(path: str = MOVIELENS) -> Dataset:
    import pandas as pd
    frame = pd.read_csv(path)
    users = pd.factorize(frame["userId"])[0].astype(np.int64)
    items = pd.factorize(frame["movieId"])[0].astype(np.int64)
    value = frame["rating"].to_numpy(np.float64)
    ratings = np.minimum(0.3 * value / np.median(value), 1.0).astype(np.float32)
    return Dataset("movielens", users, items, ratings, int(users.max()) + 1,
                   int(items.max()) + 1, frame["timestamp"].to_numpy(np.int64))


def ga_sample(cache: str = CACHE) -> Dataset:
    """The bundled sample, preprocessed by the product itself (once, cached under bench_out)."""
    from factorization.input import load_matrix
    output = os.path.join(cache, "ga_sample")
    if not os.path.exists(os.path.join(output, "preproc", "metadata.json")):
        subprocess.run([sys.executable, "-m", "pipeline.run", "--stages", "preprocess",
                        "--output_dir", output, "--overwrite", "--no_report"], check=True,
                       capture_output=True)
    matrix, _ = load_matrix(os.path.join(output, "preproc"), 1024)
    return Dataset("ga_sample", matrix.users, matrix.items, matrix.ratings, matrix.nusers,
                   matrix.nitems)


def zipf(nusers: int = 20000, nitems: int = 5000, clusters: int = 32, seed: int = 7) -> Dataset:
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, nitems + 1) ** 1.1
    popularity = rng.permutation(popularity)
    item_cluster = rng.integers(0, clusters, nitems)
    user_cluster = rng.integers(0, clusters, nusers)
    activity = np.clip(rng.lognormal(2.0, 0.9, nusers).astype(np.int64), 2, 400)
    users = np.repeat(np.arange(nusers), activity)
    # half of the choices follow the user's taste cluster, half the global popularity
    by_cluster = [np.flatnonzero(item_cluster == c) for c in range(clusters)]
    cluster_p = [popularity[m] / popularity[m].sum() for m in by_cluster]
    from_taste = rng.random(users.size) < 0.5
    items = rng.choice(nitems, size=users.size, p=popularity / popularity.sum())
    for c in range(clusters):
        pick = from_taste & (user_cluster[users] == c)
        items[pick] = rng.choice(by_cluster[c], size=int(pick.sum()), p=cluster_p[c])
    codes = np.unique(users * nitems + items)           # one interaction per (user, item)
    users, items = codes // nitems, codes % nitems
    seconds = rng.lognormal(3.5, 1.0, users.size) * np.where(
        item_cluster[items] == user_cluster[users], 1.5, 1.0)
    ratings = np.minimum(0.3 * seconds / np.median(seconds), 1.0).astype(np.float32)
    keep_items = np.unique(items)
    remap = np.full(nitems, -1, np.int64)
    remap[keep_items] = np.arange(keep_items.size)
    return Dataset("zipf", users.astype(np.int64), remap[items], ratings, nusers,
                   int(keep_items.size), rng.permutation(users.size))


def zipf_large(nnz_millions: float = 2.0, seed: int = 7) -> Dataset:
    """The zipf shape scaled to ~`nnz_millions` M interactions (20k items; 125k users per M),
    cached as .npz under bench_out: the issue 12 speed and memory sets (0.5M, 2M, 8M)."""
    path = os.path.join(CACHE, f"zipf_{nnz_millions:g}M.npz")
    if not os.path.exists(path):
        data = zipf(int(125_000 * nnz_millions), 20_000, seed=seed)
        os.makedirs(CACHE, exist_ok=True)
        np.savez(path, users=data.users, items=data.items, ratings=data.ratings,
                 shape=[data.nusers, data.nitems])
    saved = np.load(path)
    return Dataset(f"zipf_{nnz_millions:g}M", saved["users"], saved["items"], saved["ratings"],
                   int(saved["shape"][0]), int(saved["shape"][1]))


def write_preproc(data: Dataset, out_dir: str, shards: int = 8) -> str:
    """`data` as a preprocess stage output (DESIGN.md: both TFRecord sides, the vocabularies
    `u<n>` / `i<n>`, metadata.json), so `python -m trainer.task --input_dir` reads it."""
    import json

    import tensorflow as tf

    from stagekit import artifacts
    from pipeline.preprocess.examples import serialized_examples
    assets = os.path.join(out_dir, "transform_fn", "assets")
    os.makedirs(assets, exist_ok=True)
    for prefix, keys, indices in ((artifacts.ITEMS_FOR_USER, data.users, data.items),
                                  (artifacts.USERS_FOR_ITEM, data.items, data.users)):
        records = serialized_examples(keys, indices, data.ratings)
        for shard in range(shards):
            with tf.io.TFRecordWriter(os.path.join(out_dir, f"{prefix}-{shard:05d}")) as out:
                for record in records[shard::shards]:
                    out.write(record)
    for name, prefix, size in ((artifacts.VOCAB_USERS, "u", data.nusers),
                               (artifacts.VOCAB_ITEMS, "i", data.nitems)):
        with open(os.path.join(assets, name), "w") as out:
            out.write("".join(f"{prefix}{n}\n" for n in range(size)))
    with open(os.path.join(out_dir, "metadata.json"), "w") as out:
        json.dump({"nusers": data.nusers, "nitems": data.nitems, "interactions": int(data.users.size),
                   "run_id": data.name, "created": "2026-01-01T00:00:00+00:00"}, out)
    return out_dir


LOADERS = {"movielens": movielens, "ga_sample": ga_sample, "zipf": zipf, "zipf_large": zipf_large}
