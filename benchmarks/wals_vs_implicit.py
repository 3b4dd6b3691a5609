"""Benchmark: our TF2 WALS vs `implicit`'s ALS vs popularity on MovieLens ml-latest-small.

    python -m benchmarks.wals_vs_implicit [--ratings PATH] [--tune] [--json OUT]
    python benchmarks/wals_vs_implicit.py ...

Same data, same seeded 80/20 per-user split (trainer.metrics.split_holdout), ratings scaled as
the pipeline does (min(0.3 · rating / median, 1)), every model scored by the same
trainer.metrics.evaluate (seen items excluded, k = 10). Speed: benchmarks/trainer_speed.py.
Quality: ours
with the trainer's default flags vs the best of a grid over implicit's factors,
regularization and alpha. --tune also runs a small grid over our own hyperparameters (how the
defaults were chosen). The data is read in place (research-use licence: never copied).
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import sys
import time

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np

from benchmarks.models import default_args, fit_implicit
from trainer import flags, metrics
from factorization import wals

RATINGS = "/work/shared/data/ml-latest-small/ratings.csv"
K = 10
IMPLICIT_GRID = {"factors": (16, 32, 64, 128), "regularization": (0.1, 1.0, 3.0, 10.0, 30.0, 100.0),
                 "alpha": (1.0, 3.0, 10.0, 40.0)}
OUR_GRID = {"n_embeds": (32, 128), "regularization": (3.0, 5.0),
            "unobserved_weight": (0.5, 1.0), "col_weights": ("none", "log")}


def load_ratings(path: str):
    """(users, items, scaled ratings, nusers, nitems) with ids remapped to 0..n-1."""
    import pandas as pd
    frame = pd.read_csv(path)
    users = pd.factorize(frame["userId"])[0].astype(np.int64)
    items = pd.factorize(frame["movieId"])[0].astype(np.int64)
    value = frame["rating"].to_numpy(np.float64)
    ratings = np.minimum(0.3 * value / np.median(value), 1.0).astype(np.float32)
    return users, items, ratings, int(users.max()) + 1, int(items.max()) + 1


def fit_ours(train, nusers, nitems, args, solver_name=None):
    """Our trainer's solver with args' hyperparameters (the trainer's own objective: targets,
    weights, per-row λ); solver_name overrides args.solver."""
    users, items, ratings = train
    settings = {**vars(args), "solver": solver_name or args.solver}

    def build():
        return wals.WALS.from_settings(users, items, ratings, nusers, nitems, settings)

    build().epoch()  # warm-up: traces the tf.functions (not counted, like implicit's JIT-free C)
    solver = build()
    seconds = []
    for _ in range(args.epochs):
        tick = time.perf_counter()
        solver.epoch()
        seconds.append(time.perf_counter() - tick)
    return solver.row_factors.numpy(), solver.col_factors.numpy(), seconds


def score(row_factors, col_factors, train, test, nusers, nitems):
    return metrics.evaluate(metrics.factor_scorer(row_factors, col_factors), train[:2], test,
                            nusers, nitems, K)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", default=RATINGS)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--tune", action="store_true", help="Also grid-search our flags.")
    parser.add_argument("--json", help="Write the results here.")
    opts = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    users, items, ratings, nusers, nitems = load_ratings(opts.ratings)
    held = metrics.split_holdout(users, 0.2, opts.seed)
    train = (users[~held], items[~held], ratings[~held])
    test = (users[held], items[held])
    print(f"data: {users.size} ratings, {nusers} users, {nitems} items; "
          f"{(~held).sum()} train / {held.sum()} held out; implicit threads={opts.threads}")
    results = {"data": {"ratings": int(users.size), "nusers": nusers, "nitems": nitems}}

    ours = default_args(seed=opts.seed)
    row_f, col_f, ours_seconds = fit_ours(train, nusers, nitems, ours)
    results["wals"] = {**score(row_f, col_f, train, test, nusers, nitems),
                       "epoch_seconds": ours_seconds, "hyperparameters": flags.hyperparameters(ours)}
    row_f, col_f, cg_seconds = fit_ours(train, nusers, nitems, ours, "cg")
    results["wals_cg"] = {**score(row_f, col_f, train, test, nusers, nitems),
                          "epoch_seconds": cg_seconds, "cg_steps": ours.cg_steps}

    grid = []
    for factors, reg, alpha in itertools.product(*IMPLICIT_GRID.values()):
        row_f, col_f, _ = fit_implicit(train, nusers, nitems, factors, reg, alpha, ours.epochs,
                                       opts.threads, opts.seed)
        grid.append({"factors": factors, "regularization": reg, "alpha": alpha,
                     **score(row_f, col_f, train, test, nusers, nitems)})
    best = max(grid, key=lambda row: row[f"ndcg@{K}"])
    same_k = max((row for row in grid if row["factors"] == ours.n_embeds),
                 key=lambda row: row[f"ndcg@{K}"], default=None)
    results["implicit_best"], results["implicit_best_same_k"] = best, same_k
    results["implicit_grid"] = grid
    results["popularity"] = metrics.evaluate(metrics.popularity_scorer(train[1], nitems),
                                             train[:2], test, nusers, nitems, K)
    if opts.tune:
        tuned = []
        for values in itertools.product(*OUR_GRID.values()):
            args = default_args(seed=opts.seed, **dict(zip(OUR_GRID, values)))
            row_f, col_f, _ = fit_ours(train, nusers, nitems, args)
            tuned.append({**dict(zip(OUR_GRID, values)),
                          **score(row_f, col_f, train, test, nusers, nitems)})
            print("tune", dict(zip(OUR_GRID, values)),
                  f"ndcg@{K}={tuned[-1][f'ndcg@{K}']:.4f} map@{K}={tuned[-1][f'map@{K}']:.4f}")
        results["wals_grid"] = tuned
    for name, row in (("wals (defaults)", results["wals"]),
                      ("wals (defaults, solver cg)", results["wals_cg"]),
                      ("implicit (best of grid)", best),
                      ("popularity", results["popularity"])):
        print(f"{name:26s} ndcg@{K}={row[f'ndcg@{K}']:.4f} map@{K}={row[f'map@{K}']:.4f} "
              f"precision@{K}={row[f'precision@{K}']:.4f} recall@{K}={row[f'recall@{K}']:.4f} "
              f"coverage={row[f'coverage@{K}']:.3f}")
    print("implicit best:", {key: best[key] for key in IMPLICIT_GRID})
    if same_k:
        print(f"implicit best at k={ours.n_embeds}: ndcg@{K}={same_k[f'ndcg@{K}']:.4f} "
              f"map@{K}={same_k[f'map@{K}']:.4f}",
              {key: same_k[key] for key in IMPLICIT_GRID})
    if opts.json:
        with open(opts.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return results


if __name__ == "__main__":
    main()
