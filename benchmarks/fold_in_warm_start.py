"""Benchmark: fold-in quality for visitors the model never saw, and epochs saved by warm start.

    python -m benchmarks.fold_in_warm_start [--datasets movielens,zipf] [--json OUT]

Fold-in: 10% of the users (seeded) are left out of training entirely; 10% others ("trained")
are in training with 20% of their interactions held out. The model trains on everything else
with the trainer's defaults. Each left-out user gets a factor from 80% of their interactions by
fold-in (factorization/fold_in.py: the exact least squares with the item factors fixed — the same
solve the SavedModel's `fold_in` signature runs, checked equal in tests/test_fold_in.py), and
the remaining 20% are scored. NDCG@10 of: folded-in users, trained users, and popularity for
the folded-in users. The folded-in scores exclude the 80% given, like the signature.

Warm start: a day-over-day split. Interactions in time order (MovieLens timestamps; a random
order for the generated set): day 1 = the first 85%, day 2 = the first 90%, test = the last
10%, scored for users present on day 2. Day 1 trains cold for the default epochs; day 2 trains
cold and warm-started from day 1 (factors matched by id), scoring test after every epoch. The
figure: the first epoch at which warm reaches cold's final NDCG@10.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np

from benchmarks.datasets import LOADERS
from benchmarks.models import trainer_args
from trainer import metrics
from factorization import wals
from factorization.fold_in import fold_in_factors
from factorization.objective import Objective

K = 10
METRIC = f"ndcg@{K}"


def _score(row_f, col_f, train_pairs, test_pairs, data, users=None) -> float:
    keep = np.isin(test_pairs[0], users) if users is not None else slice(None)
    return metrics.evaluate(metrics.factor_scorer(row_f, col_f), train_pairs,
                            (test_pairs[0][keep], test_pairs[1][keep]), data.nusers,
                            data.nitems, K)[METRIC]


def fold_in_quality(data, settings: dict) -> dict:
    rng = np.random.default_rng(11)
    groups = rng.random(data.nusers)
    left_out, trained = groups < 0.1, (groups >= 0.1) & (groups < 0.2)
    held = metrics.split_holdout(data.users, 0.2, 42) & (left_out | trained)[data.users]
    in_training = ~left_out[data.users] & ~held
    solver = wals.WALS.from_settings(data.users[in_training], data.items[in_training],
                                     data.ratings[in_training], data.nusers, data.nitems, settings)
    for _ in range(int(settings["epochs"])):
        solver.epoch()
    row_f, col_f = solver.row_factors.numpy(), solver.col_factors.numpy()
    given = left_out[data.users] & ~held
    item_counts = np.bincount(data.items[in_training], minlength=data.nitems)
    folded = fold_in_factors(col_f, data.users[given], data.items[given], data.ratings[given],
                             data.nusers, Objective.from_settings(settings), item_counts)
    row_f = np.where(left_out[:, None], folded, row_f)
    seen = in_training | given
    seen_pairs = (data.users[seen], data.items[seen])
    test_pairs = (data.users[held], data.items[held])
    result = {
        "folded_in": _score(row_f, col_f, seen_pairs, test_pairs, data, np.flatnonzero(left_out)),
        "trained": _score(row_f, col_f, seen_pairs, test_pairs, data, np.flatnonzero(trained)),
        "popularity_for_folded_in": metrics.evaluate(
            metrics.popularity_scorer(data.items[in_training], data.nitems), seen_pairs,
            (test_pairs[0][left_out[test_pairs[0]]], test_pairs[1][left_out[test_pairs[0]]]),
            data.nusers, data.nitems, K)[METRIC],
        "users_folded_in": int(left_out.sum()), "users_trained_held": int(trained.sum())}
    print(f"  fold-in {METRIC}: folded-in users {result['folded_in']:.4f}, trained users "
          f"{result['trained']:.4f}, popularity for the folded-in {result['popularity_for_folded_in']:.4f}",
          flush=True)
    return result


def warm_start_epochs(data, settings: dict) -> dict:
    order = np.argsort(data.times, kind="stable")
    rank = np.empty(order.size, np.int64)
    rank[order] = np.arange(order.size)
    day1, day2 = rank < 0.85 * order.size, rank < 0.9 * order.size
    test = ~day2 & np.isin(data.users, np.unique(data.users[day2]))
    epochs = int(settings["epochs"])

    def train(mask, initial=None):
        return wals.WALS.from_settings(data.users[mask], data.items[mask], data.ratings[mask],
                                       data.nusers, data.nitems, settings, initial=initial)

    first = train(day1)
    for _ in range(epochs):
        first.epoch()
    # what --warm_start_from gives (ids are shared here): day-1 factors for items day 1 had,
    # the seeded start for items new on day 2 (tests/test_warm_start.py checks the id mapping)
    fresh = wals.initial_factors(data.nitems, int(settings["n_embeds"]), settings["seed"], 1,
                                 settings.get("init_scale") or 1.0).numpy()
    seen_day1 = np.zeros(data.nitems, bool)
    seen_day1[data.items[day1]] = True
    cols = np.where(seen_day1[:, None], first.col_factors.numpy(), fresh)
    curves = {}
    train_pairs = (data.users[day2], data.items[day2])
    test_pairs = (data.users[test], data.items[test])
    for name, initial in (("cold", None), ("warm", (first.row_factors.numpy(), cols))):
        solver = train(day2, initial)
        curves[name] = []
        for _ in range(epochs):
            solver.epoch()
            curves[name].append(_score(solver.row_factors.numpy(), solver.col_factors.numpy(),
                                       train_pairs, test_pairs, data))
    target = curves["cold"][-1]

    def first_epoch(curve, level):
        return next((e + 1 for e, v in enumerate(curve) if v >= level), None)
    reached = {name: {"cold_final": first_epoch(curve, target),
                      "99%_of_cold_final": first_epoch(curve, 0.99 * target)}
               for name, curve in curves.items()}
    print(f"  warm start: cold day-2 {METRIC} after {epochs} epochs {target:.4f}; epochs to reach "
          f"it: warm {reached['warm']['cold_final']}; to reach 99% of it: warm "
          f"{reached['warm']['99%_of_cold_final']}, cold {reached['cold']['99%_of_cold_final']} "
          f"(curves: warm {[round(v, 4) for v in curves['warm']]}, cold "
          f"{[round(v, 4) for v in curves['cold']]})", flush=True)
    return {"curves": curves, "cold_final": target, "epochs_to_reach": reached,
            "epochs": epochs, "test_interactions": int(test.sum())}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="movielens,zipf")
    parser.add_argument("--json", default=None)
    opts = parser.parse_args(argv)
    settings = vars(trainer_args())
    results = {}
    for name in opts.datasets.split(","):
        data = LOADERS[name]()
        print(data.describe(), flush=True)
        results[name] = {"fold_in": fold_in_quality(data, settings)}
        if data.times is not None:
            results[name]["warm_start"] = warm_start_epochs(data, settings)
    if opts.json:
        os.makedirs(os.path.dirname(opts.json) or ".", exist_ok=True)
        with open(opts.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return results


if __name__ == "__main__":
    main()
