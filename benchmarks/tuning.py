"""Benchmark: tuned vs default WALS vs implicit's best grid, on several datasets; and which
single default setting does best across them (how the trainer's defaults are chosen).

    python -m benchmarks.tuning [--datasets movielens,ga_sample,zipf] [--trials 40]
        [--tune_seconds 600] [--json bench_out/tuning.json]

Per dataset (benchmarks/datasets.py): one seeded 80/20 per-user split into train and test. The
tune stage's own search (trainer.tune.search, Optuna) sees only the train part, split again
into its own holdout; its choice is then trained on all of train and scored on test. Defaults:
the trainer's flags as they are. implicit 0.7.3: a grid over factors x regularization x alpha
(15 iterations), the best of it *on test* (an upper bound for implicit: it is picked with the
test data). Popularity for scale. All scored by trainer.metrics.evaluate (NDCG@10 etc., seen
items excluded).

Defaults: every dataset's tuned choice and the current defaults are each trained on every
dataset; the setting with the best mean of NDCG / (best NDCG on that dataset) is the candidate
for the defaults (printed as a table).
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np

from benchmarks.datasets import LOADERS
from benchmarks.models import fit_implicit, trainer_args
from trainer import metrics, tune
from factorization import wals
from factorization.input import Interactions

K = 10
METRIC = f"ndcg@{K}"
IMPLICIT_GRID = {"factors": (32, 64, 128, 256), "regularization": (0.01, 0.1, 1.0, 10.0, 100.0),
                 "alpha": (1.0, 5.0, 20.0, 50.0)}


def fit_and_score(data, test, settings: dict) -> dict:
    users, items, ratings = (x[~test] for x in (data.users, data.items, data.ratings))
    solver = wals.WALS.from_settings(users, items, ratings, data.nusers, data.nitems, settings)
    tick = time.perf_counter()
    for _ in range(int(settings["epochs"])):
        solver.epoch()
    seconds = time.perf_counter() - tick
    result = metrics.evaluate(metrics.factor_scorer(solver.row_factors.numpy(),
                                                    solver.col_factors.numpy()),
                              (users, items), (data.users[test], data.items[test]),
                              data.nusers, data.nitems, K)
    return {**result, "train_seconds": round(seconds, 2)}


def implicit_grid(data, test, threads: int) -> list[dict]:
    train = tuple(x[~test] for x in (data.users, data.items, data.ratings))
    rows = []
    for factors, reg, alpha in itertools.product(*IMPLICIT_GRID.values()):
        row_f, col_f, _ = fit_implicit(train, data.nusers, data.nitems, factors, reg, alpha, 15,
                                       threads, 42)
        rows.append({"factors": factors, "regularization": reg, "alpha": alpha,
                     **metrics.evaluate(metrics.factor_scorer(row_f, col_f), train[:2],
                                        (data.users[test], data.items[test]), data.nusers,
                                        data.nitems, K)})
    return rows


def run_dataset(data, opts) -> dict:
    print(data.describe(), flush=True)
    test = metrics.split_holdout(data.users, 0.2, 42)
    defaults = vars(trainer_args())
    result = {"data": data.describe(), "default": fit_and_score(data, test, defaults)}
    print(f"  default  {METRIC}={result['default'][METRIC]:.4f}", flush=True)

    train_only = Interactions(data.users[~test], data.items[~test], data.ratings[~test],
                              data.nusers, data.nitems)
    tick = time.time()
    study = tune.search(train_only, trainer_args(tune_trials=opts.trials,
                                                 tune_seconds=opts.tune_seconds,
                                                 tune_max_epochs=opts.max_epochs,
                                                 tune_folds=opts.folds))
    chosen = tune.chosen_values(study)
    result["tuning"] = {"trials": len(study.trials), "seconds": round(time.time() - tick, 1),
                        "folds": opts.folds,
                        "validation": study.best_value, "chosen": chosen}
    result["tuned"] = fit_and_score(data, test, {**defaults, **chosen})
    print(f"  tuned    {METRIC}={result['tuned'][METRIC]:.4f} ({len(study.trials)} trials, "
          f"{result['tuning']['seconds']:.0f}s) {chosen}", flush=True)
    if not opts.skip_implicit:
        grid = implicit_grid(data, test, opts.threads)
        best = max(grid, key=lambda row: row[METRIC])
        result["implicit_best"] = best
        print(f"  implicit {METRIC}={best[METRIC]:.4f} (best of {len(grid)} on test) "
              f"{ {k: best[k] for k in IMPLICIT_GRID} }", flush=True)
    result["popularity"] = metrics.evaluate(
        metrics.popularity_scorer(data.items[~test], data.nitems),
        (data.users[~test], data.items[~test]), (data.users[test], data.items[test]),
        data.nusers, data.nitems, K)
    print(f"  popular  {METRIC}={result['popularity'][METRIC]:.4f}", flush=True)
    return result


def cross_defaults(datasets, results: dict) -> dict:
    """Every candidate setting (defaults, each dataset's tuned choice) on every dataset."""
    defaults = vars(trainer_args())
    candidates = {"current defaults": {}, **{f"tuned on {name}": r["tuning"]["chosen"]
                                             for name, r in results.items()}}
    table = {}
    for label, chosen in candidates.items():
        table[label] = {}
        for data in datasets:
            test = metrics.split_holdout(data.users, 0.2, 42)
            table[label][data.name] = fit_and_score(data, test,
                                                    {**defaults, **chosen})[METRIC]
    best_per_data = {d.name: max(table[c][d.name] for c in table) for d in datasets}
    relative = {c: float(np.mean([table[c][d] / best_per_data[d] for d in best_per_data]))
                for c in table}
    print(f"\n{METRIC} of each setting on each dataset (test split); mean relative to the best:")
    for label in table:
        print(f"  {label:24s} " + " ".join(f"{d}={table[label][d]:.4f}" for d in best_per_data)
              + f"  mean relative {relative[label]:.3f}")
    return {"table": table, "relative": relative, "candidates": candidates}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="movielens,ga_sample,zipf")
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--tune_seconds", type=float, default=600.0)
    parser.add_argument("--max_epochs", type=int, default=25)
    parser.add_argument("--folds", type=int, default=1, help="--tune_folds of the search.")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--skip_implicit", action="store_true")
    parser.add_argument("--no_cross", action="store_true")
    parser.add_argument("--json", default=None)
    opts = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    datasets = [LOADERS[name]() for name in opts.datasets.split(",")]
    results = {data.name: run_dataset(data, opts) for data in datasets}
    print(f"\n{'dataset':10s} {'default':>8s} {'tuned':>8s} {'implicit':>9s} {'popular':>8s}  ({METRIC}, test split)")
    for name, r in results.items():
        print(f"{name:10s} {r['default'][METRIC]:8.4f} {r['tuned'][METRIC]:8.4f} "
              f"{r.get('implicit_best', {}).get(METRIC, float('nan')):9.4f} "
              f"{r['popularity'][METRIC]:8.4f}")
    output = {"datasets": results}
    if not opts.no_cross:
        output["defaults"] = cross_defaults(datasets, results)
    if opts.json:
        os.makedirs(os.path.dirname(opts.json) or ".", exist_ok=True)
        with open(opts.json, "w") as handle:
            json.dump(output, handle, indent=2, default=str)
    return output


if __name__ == "__main__":
    main()
