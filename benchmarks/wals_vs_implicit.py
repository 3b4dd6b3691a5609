"""Benchmark: our TF2 WALS vs `implicit`'s ALS vs popularity on MovieLens ml-latest-small.

    python -m benchmarks.wals_vs_implicit [--ratings PATH] [--tune] [--json OUT]
    python benchmarks/wals_vs_implicit.py ...

Same data, same seeded 80/20 per-user split (trainer.metrics.split_holdout), ratings scaled as
the pipeline does (min(0.3 · rating / median, 1)), every model scored by the same
trainer.metrics.evaluate (seen items excluded, k = 10). Speed: our epoch vs one `implicit`
iteration at the same k, same number of iterations, same thread count, measured in the same
process (ratios are meaningful on a busy machine; absolute seconds are not). Quality: ours
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

from trainer import metrics, task, wals

RATINGS = "/work/shared/data/ml-latest-small/ratings.csv"
K = 10
IMPLICIT_GRID = {"factors": (16, 32, 64, 128), "regularization": (0.1, 1.0, 3.0, 10.0, 30.0, 100.0),
                 "alpha": (1.0, 3.0, 10.0, 40.0)}
OUR_GRID = {"regularization": (1.0, 3.0, 10.0), "unobserved_weight": (0.05, 0.5, 2.0),
            "col_weights": ("none", "log")}


def load_ratings(path: str):
    """(users, items, scaled ratings, nusers, nitems) with ids remapped to 0..n-1."""
    import pandas as pd
    frame = pd.read_csv(path)
    users = pd.factorize(frame["userId"])[0].astype(np.int64)
    items = pd.factorize(frame["movieId"])[0].astype(np.int64)
    value = frame["rating"].to_numpy(np.float64)
    ratings = np.minimum(0.3 * value / np.median(value), 1.0).astype(np.float32)
    return users, items, ratings, int(users.max()) + 1, int(items.max()) + 1


def default_args(**overrides) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    task.add_args(parser)
    args = parser.parse_args([])
    args.seed, args.top_k = 42, K
    for name, value in overrides.items():
        setattr(args, name, value)
    return args


def fit_ours(train, nusers, nitems, args):
    users, items, ratings = train
    counts = np.bincount(items, minlength=nitems)
    weights = wals.column_weights(counts, args.col_weights, args.feature_wt_factor,
                                  args.feature_wt_exp)[items]
    solver = wals.WALS(users, items, ratings, nusers, nitems, args.n_embeds,
                       args.regularization, args.unobserved_weight, weights, args.seed,
                       max_rows=args.batch_size, max_entries=args.batch_entries)
    solver.epoch()  # warm-up: traces the tf.functions (not counted, like implicit's JIT-free C)
    solver = wals.WALS(users, items, ratings, nusers, nitems, args.n_embeds,
                       args.regularization, args.unobserved_weight, weights, args.seed,
                       max_rows=args.batch_size, max_entries=args.batch_entries)
    seconds = []
    for _ in range(args.epochs):
        tick = time.perf_counter()
        solver.epoch()
        seconds.append(time.perf_counter() - tick)
    return solver.row_factors.numpy(), solver.col_factors.numpy(), seconds


def fit_implicit(train, nusers, nitems, factors, regularization, alpha, iterations, threads,
                 seed):
    import scipy.sparse as sparse
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits
    users, items, ratings = train
    user_items = sparse.csr_matrix((ratings, (users, items)), shape=(nusers, nitems))
    model = AlternatingLeastSquares(factors=factors, regularization=regularization, alpha=alpha,
                                    iterations=iterations, num_threads=threads,
                                    random_state=seed)
    with threadpool_limits(1, "blas"):  # implicit's own advice; it parallelises by rows
        tick = time.perf_counter()
        model.fit(user_items, show_progress=False)
        seconds = time.perf_counter() - tick
    return np.asarray(model.user_factors), np.asarray(model.item_factors), seconds / iterations


def score(row_factors, col_factors, train, test, nusers, nitems):
    return metrics.evaluate(metrics.factor_scorer(row_factors, col_factors), train[:2], test,
                            nusers, nitems, K)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", default=RATINGS)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rounds", type=int, default=3, help="Alternating speed rounds.")
    parser.add_argument("--tune", action="store_true", help="Also grid-search our flags.")
    parser.add_argument("--json", help="Write the results here.")
    opts = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(opts.threads)
    tf.config.threading.set_inter_op_parallelism_threads(opts.threads)

    users, items, ratings, nusers, nitems = load_ratings(opts.ratings)
    held = metrics.split_holdout(users, 0.2, opts.seed)
    train = (users[~held], items[~held], ratings[~held])
    test = (users[held], items[held])
    print(f"data: {users.size} ratings, {nusers} users, {nitems} items; "
          f"{(~held).sum()} train / {held.sum()} held out; threads={opts.threads}")
    results = {"data": {"ratings": int(users.size), "nusers": nusers, "nitems": nitems}}

    ours = default_args(seed=opts.seed)
    # Speed: alternate rounds of ours and implicit so both see the same background load; the
    # best round of each is compared (the least disturbed measurement of each).
    our_rounds, implicit_rounds = [], []
    for _ in range(opts.rounds):
        row_f, col_f, ours_seconds = fit_ours(train, nusers, nitems, ours)
        our_rounds.append(float(np.median(ours_seconds)))
        implicit_rounds.append(fit_implicit(train, nusers, nitems, ours.n_embeds, 0.1, 10.0,
                                            ours.epochs, opts.threads, opts.seed)[2])
    results["wals"] = {**score(row_f, col_f, train, test, nusers, nitems),
                       "epoch_seconds": ours_seconds, "hyperparameters": task.hyperparameters(ours)}
    our_epoch, implicit_iter = min(our_rounds), min(implicit_rounds)
    results["speed"] = {"k": ours.n_embeds, "iterations": ours.epochs, "threads": opts.threads,
                        "wals_epoch_seconds_per_round": our_rounds,
                        "implicit_iteration_seconds_per_round": implicit_rounds,
                        "ratio_wals_over_implicit": our_epoch / implicit_iter}
    print(f"speed at k={ours.n_embeds}, {ours.epochs} iterations, {opts.threads} threads, best of "
          f"{opts.rounds} rounds: ours {our_epoch * 1e3:.1f} ms/epoch, implicit "
          f"{implicit_iter * 1e3:.1f} ms/iteration, ratio {our_epoch / implicit_iter:.2f}x "
          f"(rounds: ours {[round(x * 1e3, 1) for x in our_rounds]} ms, implicit "
          f"{[round(x * 1e3, 1) for x in implicit_rounds]} ms)")

    grid = []
    for factors, reg, alpha in itertools.product(*IMPLICIT_GRID.values()):
        row_f, col_f, _ = fit_implicit(train, nusers, nitems, factors, reg, alpha, ours.epochs,
                                       opts.threads, opts.seed)
        grid.append({"factors": factors, "regularization": reg, "alpha": alpha,
                     **score(row_f, col_f, train, test, nusers, nitems)})
    best = max(grid, key=lambda row: row[f"ndcg@{K}"])
    results["implicit_best"], results["implicit_grid"] = best, grid
    results["popularity"] = metrics.evaluate(metrics.popularity_scorer(train[1], nitems),
                                             train[:2], test, nusers, nitems, K)
    if opts.tune:
        tuned = []
        for values in itertools.product(*OUR_GRID.values()):
            args = default_args(seed=opts.seed, **dict(zip(OUR_GRID, values)))
            row_f, col_f, _ = fit_ours(train, nusers, nitems, args)
            tuned.append({**dict(zip(OUR_GRID, values)),
                          **score(row_f, col_f, train, test, nusers, nitems)})
            print("tune", tuned[-1])
        results["wals_grid"] = tuned
    for name, row in (("wals (defaults)", results["wals"]), ("implicit (best of grid)", best),
                      ("popularity", results["popularity"])):
        print(f"{name:26s} ndcg@{K}={row[f'ndcg@{K}']:.4f} map@{K}={row[f'map@{K}']:.4f} "
              f"precision@{K}={row[f'precision@{K}']:.4f} recall@{K}={row[f'recall@{K}']:.4f} "
              f"coverage={row[f'coverage@{K}']:.3f}")
    print("implicit best:", {key: best[key] for key in IMPLICIT_GRID})
    if opts.json:
        with open(opts.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return results


if __name__ == "__main__":
    main()
