"""Benchmark: the trainer against `implicit` 0.7 as fresh processes: epochs, whole process, memory,
held-out evaluation (issue 12's targets, each printed with its ratio).

    python -m benchmarks.trainer_speed [--datasets movielens,zipf_2M] [--ks 32,128]
        [--rounds 3] [--epoch_iterations 6] [--process_iterations 15] [--memory_sizes 0.5,2,8]

Every figure comes from a fresh Python process, ours and implicit's alternating within each round
(so both see the same background load); a ratio is computed per round, and the best (min) and
median over the rounds are printed with the target.

- Epochs (per dataset, k, solver): one process trains `--epoch_iterations` epochs on the in-memory
  ratings (our trainer's objective and defaults, `factorization.wals.WALS.from_settings`) and reports
  each epoch's seconds; implicit's `fit` reports each iteration's through its callback. Steady =
  median of epochs 2..n; first epoch (ours: tracing included) / steady is printed too. CG is
  compared with implicit's CG (3 steps both), exact with its Cholesky solver (use_cg=False).
- Whole process (zipf sets): `python -m trainer.task --eval_fraction 0` from launch to exit
  (imports, reading the TFRecords, training, writing the model dir) against a process that imports
  implicit, loads the same interactions from .npz, fits and saves both factor matrices with
  np.save. Same k, solver family and iterations; peak RSS of each process from wait4.
- Memory: the same pair of processes at --memory_sizes M interactions (k=32, CG, 2 iterations):
  peak RSS, ours / implicit, and our MB per million interactions between sizes (linear = flat).
- Evaluation: NDCG@10 etc. of all users with held-out items (trainer.metrics.evaluate, as
  metrics.json does: WALS and popularity) against one steady epoch, in one process.

Data: MovieLens ml-latest-small (read in place, research-use licence) and generated Zipf sets
(benchmarks/datasets.py `zipf_large`, written once under bench_out as .npz and as a preproc dir).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np

from benchmarks import datasets
from benchmarks.models import default_args, implicit_model
from benchmarks.processes import timed_process

TARGETS = {"epoch": 1.0, "first_epoch": 2.0, "process": 1.5, "memory": 4.0, "eval": 1.0}


def load(name: str) -> datasets.Dataset:
    if name.startswith("zipf_") and name.endswith("M"):
        return datasets.zipf_large(float(name[5:-1]))
    return datasets.LOADERS[name]()


def npz_path(name: str) -> str:
    """The interactions as implicit's process loads them (users, items, ratings, shape): the
    zipf sets' own cache (benchmarks/datasets.py zipf_large writes it in this form)."""
    load(name)  # makes the cache when missing
    return os.path.join(datasets.CACHE, f"{name}.npz")


def preproc_dir(name: str) -> str:
    path = os.path.join(datasets.CACHE, f"{name}_preproc")
    if not os.path.exists(os.path.join(path, "metadata.json")):
        datasets.write_preproc(load(name), path)
    return path


# ---- child processes (each prints one JSON line) ----

def child_epochs(opts) -> dict:
    data = load(opts.dataset)
    if opts.side == "implicit":
        seconds = []
        implicit_model(data.users, data.items, data.ratings, (data.nusers, data.nitems), opts.k,
                       opts.solver == "cg", opts.iterations,
                       lambda _i, elapsed, _l: seconds.append(elapsed))
        return {"seconds": seconds}
    from factorization import wals
    solver = wals.WALS.from_settings(data.users, data.items, data.ratings, data.nusers,
                                     data.nitems, vars(default_args(n_embeds=opts.k,
                                                                    solver=opts.solver)))
    seconds = []
    for _ in range(opts.iterations):
        tick = time.perf_counter()
        solver.epoch()
        seconds.append(time.perf_counter() - tick)
    return {"seconds": seconds}


def child_implicit_process(opts) -> dict:
    """implicit's whole job: load the interactions, fit, save both factor matrices."""
    saved = np.load(opts.npz)
    model = implicit_model(saved["users"], saved["items"], saved["ratings"],
                           tuple(saved["shape"]), opts.k, opts.solver == "cg", opts.iterations)
    np.save(os.path.join(opts.out, "user_factors.npy"), np.asarray(model.user_factors))
    np.save(os.path.join(opts.out, "item_factors.npy"), np.asarray(model.item_factors))
    return {}


def child_eval(opts) -> dict:
    from trainer import metrics
    from factorization import wals
    data = load(opts.dataset)
    held = metrics.split_holdout(data.users, 0.2, 42)
    solver = wals.WALS.from_settings(data.users[~held], data.items[~held], data.ratings[~held],
                                     data.nusers, data.nitems,
                                     vars(default_args(n_embeds=opts.k, solver=opts.solver)))
    epochs = []
    for _ in range(3):
        tick = time.perf_counter()
        solver.epoch()
        epochs.append(time.perf_counter() - tick)
    train, test = (data.users[~held], data.items[~held]), (data.users[held], data.items[held])
    result = {"epoch": float(np.median(epochs[1:]))}
    for name, scorer in (("wals", metrics.factor_scorer(solver.row_factors.numpy(),
                                                        solver.col_factors.numpy())),
                         ("popularity", metrics.popularity_scorer(train[1], data.nitems))):
        tick = time.perf_counter()
        scores = metrics.evaluate(scorer, train, test, data.nusers, data.nitems, 10, label=name)
        result[f"eval_{name}"] = time.perf_counter() - tick
        result["users_evaluated"] = scores["users_evaluated"]
    return result


CHILDREN = {"epochs": child_epochs, "implicit_process": child_implicit_process, "eval": child_eval}


def run_child(mode: str, **flags) -> tuple[dict, float, float]:
    command = [sys.executable, "-m", "benchmarks.trainer_speed", "--child", mode]
    for name, value in flags.items():
        command += [f"--{name}", str(value)]
    seconds, rss_mb, out = timed_process(command)
    return json.loads(out.strip().splitlines()[-1]), seconds, rss_mb


# ---- the comparisons ----

def report(what: str, ratios: list[float], target: float, detail: str = "") -> dict:
    """One line per target; the verdict goes by the median round (the min flatters)."""
    best, median = min(ratios), float(np.median(ratios))
    verdict = "met" if median <= target else f"missed by {100 * (median / target - 1):.0f}%"
    print(f"{what}: median {median:.2f}x, min {best:.2f}x (of {len(ratios)} rounds), target <= "
          f"{target:g}x — {verdict}{detail}", flush=True)
    return {"what": what, "min": best, "median": median, "target": target, "ratios": ratios}


def compare_epochs(dataset: str, k: int, solver: str, opts) -> list[dict]:
    rounds = []
    for r in range(opts.rounds):
        sides = ("ours", "implicit") if r % 2 == 0 else ("implicit", "ours")
        got = {side: run_child("epochs", side=side, solver=solver, dataset=dataset, k=k,
                               iterations=opts.epoch_iterations)[0]["seconds"] for side in sides}
        rounds.append(got)
    steady = [{side: float(np.median(s[side][1:])) for side in s} for s in rounds]
    ms = lambda side: [round(1e3 * s[side], 1) for s in steady]  # noqa: E731
    label = f"{dataset} k={k} {solver}"
    return [report(f"{label}: steady epoch, ours / implicit", [s["ours"] / s["implicit"]
                                                               for s in steady], TARGETS["epoch"],
                   f" (ms: ours {ms('ours')}, implicit {ms('implicit')})"),
            report(f"{label}: our first epoch / our steady epoch",
                   [r["ours"][0] / s["ours"] for r, s in zip(rounds, steady)],
                   TARGETS["first_epoch"])]


def trainer_command(dataset: str, k: int, solver: str, iterations: int, out: str) -> list[str]:
    return [sys.executable, "-m", "trainer.task", "--input_dir", preproc_dir(dataset),
            "--output_dir", out, "--eval_fraction", "0", "--epochs", str(iterations),
            "--n_embeds", str(k), "--solver", solver, "--overwrite"]


def process_pair(dataset: str, k: int, solver: str, iterations: int, work: str, r: int):
    """(ours (seconds, rss MB), implicit's) as whole fresh processes, order alternating."""
    result = {}
    for side in (("ours", "implicit") if r % 2 == 0 else ("implicit", "ours")):
        out = tempfile.mkdtemp(dir=work)
        if side == "ours":
            seconds, rss, _ = timed_process(trainer_command(dataset, k, solver, iterations, out))
        else:
            _, seconds, rss = run_child("implicit_process", npz=npz_path(dataset), k=k,
                                        solver=solver, iterations=iterations, out=out)
        result[side] = (seconds, rss)
    return result


def compare_processes(dataset: str, k: int, solver: str, opts, work: str) -> list[dict]:
    rounds = [process_pair(dataset, k, solver, opts.process_iterations, work, r)
              for r in range(opts.rounds)]
    detail = lambda i: {side: [round(x[side][i], 1) for x in rounds]  # noqa: E731
                        for side in ("ours", "implicit")}
    label = f"{dataset} k={k} {solver}, {opts.process_iterations} iterations"
    return [report(f"{label}: whole process, ours / implicit",
                   [x["ours"][0] / x["implicit"][0] for x in rounds], TARGETS["process"],
                   f" (s: {detail(0)})"),
            report(f"{label}: peak memory, ours / implicit",
                   [x["ours"][1] / x["implicit"][1] for x in rounds], TARGETS["memory"],
                   f" (MB: {detail(1)})")]


def memory_scaling(sizes: list[float], work: str) -> dict:
    rows = []
    for size in sizes:
        name = f"zipf_{size:g}M"
        pair = process_pair(name, 32, "cg", 2, work, 0)
        nnz = int(np.load(npz_path(name))["users"].size)
        rows.append({"dataset": name, "interactions": nnz, "ours_mb": pair["ours"][1],
                     "implicit_mb": pair["implicit"][1]})
        print(f"memory at {nnz / 1e6:.2f}M interactions (k=32, cg): ours {pair['ours'][1]:.0f} MB,"
              f" implicit {pair['implicit'][1]:.0f} MB: {pair['ours'][1] / pair['implicit'][1]:.2f}x"
              f", target <= {TARGETS['memory']:g}x", flush=True)
    slopes = [(b["ours_mb"] - a["ours_mb"]) / ((b["interactions"] - a["interactions"]) / 1e6)
              for a, b in zip(rows, rows[1:])]
    if slopes:
        print("our memory per extra million interactions between sizes: "
              + ", ".join(f"{s:.0f} MB/M" for s in slopes)
              + " (linear in nnz: equal slopes)", flush=True)
    return {"rows": rows, "mb_per_million": slopes}


def compare_eval(dataset: str, k: int, solver: str, rounds: int) -> dict:
    runs = [run_child("eval", dataset=dataset, k=k, solver=solver)[0] for _ in range(rounds)]
    seconds = {name: [r[name] for r in runs] for name in ("eval_wals", "eval_popularity", "epoch")}
    result = report(f"{dataset} k={k} {solver}: held-out evaluation of all "
                    f"{runs[0]['users_evaluated']} users (WALS + popularity) / one steady epoch",
                    [(r["eval_wals"] + r["eval_popularity"]) / r["epoch"] for r in runs],
                    TARGETS["eval"], f" (s: {seconds})")
    return {**result, "seconds": seconds, "users_evaluated": runs[0]["users_evaluated"]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="movielens,zipf_2M")
    parser.add_argument("--ks", default="32,128")
    parser.add_argument("--solvers", default="cg,exact")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epoch_iterations", type=int, default=6)
    parser.add_argument("--process_iterations", type=int, default=15)
    parser.add_argument("--memory_sizes", default="0.5,2,8")
    parser.add_argument("--only", default="epochs,process,memory,eval")
    parser.add_argument("--json", help="Write the results here.")
    for hidden in ("child", "side", "solver", "dataset", "npz", "out"):
        parser.add_argument(f"--{hidden}", help=argparse.SUPPRESS)
    for hidden in ("k", "iterations"):
        parser.add_argument(f"--{hidden}", type=int, help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if not opts.child and opts.epoch_iterations < 2:
        parser.error("--epoch_iterations must be >= 2 (the first epoch is not a steady one)")
    if opts.child:
        print(json.dumps(CHILDREN[opts.child](opts)))
        return {}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    names, ks = opts.datasets.split(","), [int(k) for k in opts.ks.split(",")]
    solvers, only = opts.solvers.split(","), set(opts.only.split(","))
    results: dict = {"epochs": [], "process": [], "memory": None, "eval": []}
    with tempfile.TemporaryDirectory(prefix="bench_trainer_") as work:
        for name in names:
            print(load(name).describe(), flush=True)
            for k in ks:
                for solver in solvers:
                    if "epochs" in only:
                        results["epochs"] += compare_epochs(name, k, solver, opts)
                    if "process" in only and name.startswith("zipf") and solver == "cg":
                        results["process"] += compare_processes(name, k, solver, opts, work)
                if "eval" in only and name.startswith("zipf"):
                    results["eval"].append(compare_eval(name, k, "cg", opts.rounds))
        if "memory" in only:
            results["memory"] = memory_scaling([float(s) for s in opts.memory_sizes.split(",")],
                                               work)
    if opts.json:
        with open(opts.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return results


if __name__ == "__main__":
    main()
