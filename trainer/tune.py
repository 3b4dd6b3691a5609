"""Tune stage: searches the trainer's hyperparameters on held-out data; writes tuning/best.json.

    python -m trainer.tune --input_dir OUTPUT/preproc --output_dir OUTPUT/tuning \
        [--tune_trials 40] [--tune_seconds 0] [--tune_folds 1] [--tune_metric ndcg] [--overwrite]

Search: Optuna's TPE sampler (multivariate, seeded by --seed) over trainer/search_space.py, with
Optuna's median pruner stopping hopeless trials after a few epochs. Trial 0 is always the
current settings (the flags' values), so `best_value` can only match or beat them on this split.
The search never sees the interactions the train stage holds out for metrics.json
(--eval_fraction, same seed), so those stay an honest test of the tuned model. On the rest, each
trial trains on a seeded holdout split (--tune_holdout of each user's interactions) or on each of
--tune_folds folds (every interaction held out once), is scored after every epoch by the held-out --tune_metric at --top_k, and keeps its best
epoch count. It stops after --tune_trials trials or --tune_seconds, whichever comes first.

best.json: {"chosen": flag values incl. epochs, "metric", "best_value", "default_value", "trials":
[{number, state, params, value, epochs, curve, seconds}], "seconds", ...}. The train stage uses
"chosen" for every flag not given explicitly (pipeline.run finds OUTPUT/tuning/best.json itself;
`python -m trainer.task --tuning_file`). Written to a scratch folder and published whole.
On Google Cloud, `pipeline.run --stages tune --trainer vertex` runs the same space as a Vertex AI
hyperparameter tuning job instead (pipeline/cloud/vertex.py).
"""
from __future__ import annotations

import argparse
import datetime
import logging
import posixpath
import sys
import time
import uuid
import warnings
from typing import TYPE_CHECKING

import numpy as np

from stagekit import cli, publish
from stagekit.artifacts import exists, join, write_json
from trainer import flags, metrics, search_space
from trainer.tuned import TUNED_FLAGS  # noqa: F401 (what the stage tunes)

if TYPE_CHECKING:
    from factorization import input as wals_input  # TensorFlow: imported where the search runs

LOG = logging.getLogger(__name__)
BEST = "best.json"
MAX_FOLDS = 10  # beyond, most users have too few interactions to appear in every fold


def add_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("tune")
    group.add_argument("--tune_trials", type=int, default=40,
                       help="Trials to run (trial 0 = the current flags).")
    group.add_argument("--tune_seconds", type=cli.finite_float, default=0.0,
                       help="Stop starting trials after this long (0: no time limit).")
    group.add_argument("--tune_folds", type=int, default=1,
                       help="1: one seeded holdout split (--tune_holdout); k > 1: k folds, "
                            "each interaction held out once, metric averaged.")
    group.add_argument("--tune_holdout", type=cli.finite_float, default=0.2,
                       help="Share of each user's interactions held out with --tune_folds 1.")
    group.add_argument("--tune_metric", choices=metrics.RANKING_METRICS, default="ndcg",
                       help="Held-out metric to maximise, at --top_k.")
    group.add_argument("--tune_max_epochs", type=int, default=25,
                       help="Epochs per trial; each trial keeps its best epoch count.")
    group.add_argument("--tune_max_k", type=int, default=256,
                       help="Largest factor count tried (memory and time grow with k²).")
    group.add_argument("--tune_eval_users", type=int, default=5000,
                       help="Held-out users scored per epoch (spread over all users).")


def validate_args(args: argparse.Namespace) -> None:
    """Flag values alone, the trainer's included: no files, no heavy import."""
    for name in ("tune_trials", "tune_max_epochs", "tune_max_k", "tune_eval_users"):
        cli.check_range(args, name, 1)
    cli.check_range(args, "tune_folds", 1, MAX_FOLDS)
    if args.n_embeds > args.tune_max_k:  # trial 0 is the flags as given
        raise ValueError(f"--n_embeds {args.n_embeds} is above --tune_max_k {args.tune_max_k}")
    cli.check_range(args, "tune_seconds", 0)
    cli.check_range(args, "tune_holdout", 0, 1, low_open=True, high_open=True)
    flags.validate_args(args)


def check_inputs(args: argparse.Namespace) -> None:
    """What the flags name must be there (the trainer's: --warm_start_from)."""
    flags.check_inputs(args)


def splits(users: np.ndarray, args: argparse.Namespace) -> list[np.ndarray]:
    """Held-out masks: one seeded holdout, or k folds (each user's interactions dealt round-robin
    in a seeded order; a user's first one always trains, so every user keeps some)."""
    seed = args.seed + 1  # not the train stage's eval split (that one is left out already)
    if args.tune_folds == 1:
        return [metrics.split_holdout(users, args.tune_holdout, seed)]
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(users.size), users))
    rank = np.empty(users.size, np.int64)
    starts = np.concatenate([[0], np.cumsum(np.bincount(users))[:-1]])
    rank[order] = np.arange(users.size) - starts[users[order]]
    fold = np.where(rank == 0, -1, (rank - 1) % args.tune_folds)
    return [fold == f for f in range(args.tune_folds)]


def current_values(args: argparse.Namespace) -> dict:
    """Trial 0: the flags' values for the parameters active under them."""
    values = {p.name: getattr(args, p.name) for p in search_space.SPACE}
    if values.get("target_cap") is None:
        values["target_cap"] = next(p.high for p in search_space.SPACE  # no effective cap
                                    if p.name == "target_cap")
    return {p.name: values[p.name] for p in search_space.active(search_space.SPACE, values)}


def run(args: argparse.Namespace) -> dict:
    """Runs the search on args.input_dir and publishes args.output_dir/best.json."""
    from factorization import input as wals_input  # TensorFlow: only now

    started = time.time()
    validate_args(args)
    check_inputs(args)
    refuse_existing(args)
    matrix, metadata = wals_input.load_matrix(args.input_dir, args.batch_size)
    study = search(without_test_split(matrix, args), args)
    return _publish(args, study, f"{args.tune_metric}@{args.top_k}", matrix, metadata,
                    time.time() - started)


def without_test_split(matrix: wals_input.Interactions,
                       args: argparse.Namespace) -> wals_input.Interactions:
    """The interactions left after the train stage's own --eval_fraction holdout (same seed, so
    the same split): the search never sees what metrics.json is computed on, which keeps those
    metrics an honest test of the tuned model."""
    if not getattr(args, "eval_fraction", 0):
        return matrix
    from factorization import input as wals_input

    keep = ~metrics.split_holdout(matrix.users, args.eval_fraction, args.seed)
    LOG.info("tune: searching on %d of %d interactions (the train stage's --eval_fraction %g "
             "holdout is left out)", int(keep.sum()), matrix.nnz, args.eval_fraction)
    return wals_input.Interactions(matrix.users[keep], matrix.items[keep], matrix.ratings[keep],
                                   matrix.nusers, matrix.nitems)


def search(matrix: wals_input.Interactions, args: argparse.Namespace):
    """The Optuna study over `matrix` (in memory), run to --tune_trials / --tune_seconds."""
    import optuna

    from factorization import wals

    held_masks = splits(matrix.users, args)
    metric = f"{args.tune_metric}@{args.top_k}"
    LOG.info("tune: %d users x %d items, %d interactions, %s, maximising held-out %s",
             matrix.nusers, matrix.nitems, matrix.nnz,
             "holdout" if len(held_masks) == 1 else f"{len(held_masks)} folds", metric)

    first = current_values(args)

    def objective(trial) -> float:
        tick = time.time()
        values = search_space.suggest(trial, max_k=args.tune_max_k, current=first)
        settings = {**vars(args), **values}
        if settings.get("rating_target") != "rating":
            settings["target_cap"] = None
        curves, weights = [], []
        for fold, held in enumerate(held_masks):
            evaluated = np.unique(matrix.users[held]).size
            if evaluated == 0:  # a fold nobody has an interaction in says nothing
                continue
            train = ~held
            test = (matrix.users[held], matrix.items[held])
            solver = wals.WALS.from_settings(matrix.users[train], matrix.items[train],
                                             matrix.ratings[train], matrix.nusers, matrix.nitems,
                                             settings)
            curve = []
            for epoch in range(args.tune_max_epochs):
                solver.epoch()
                curve.append(metrics.evaluate(
                    metrics.factor_scorer(solver.row_factors.numpy(), solver.col_factors.numpy()),
                    (matrix.users[train], matrix.items[train]), test, matrix.nusers,
                    matrix.nitems, args.top_k, max_users=args.tune_eval_users)[metric])
                if fold == 0:  # prune on the first fold's curve (the others are alike)
                    trial.report(max(curve), epoch)
                    if trial.should_prune():
                        trial.set_user_attr("curve", curve)
                        raise optuna.TrialPruned()
            curves.append(curve)
            weights.append(min(evaluated, args.tune_eval_users))
        mean_curve = np.average(curves, axis=0, weights=weights)  # per evaluated user
        best_epoch = int(np.argmax(mean_curve))
        trial.set_user_attr("epochs", best_epoch + 1)
        trial.set_user_attr("curve", [round(float(x), 6) for x in mean_curve])
        LOG.info("tune: trial %d %s=%.4f at epoch %d in %.1fs: %s", trial.number, metric,
                 mean_curve[best_epoch], best_epoch + 1, time.time() - tick, values)
        return float(mean_curve[best_epoch])

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=args.seed, multivariate=True, group=True)
    study = optuna.create_study(direction="maximize", sampler=sampler,
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=5,
                                                                   n_warmup_steps=3))
    study.set_user_attr("searched_interactions", matrix.nnz)
    study.enqueue_trial(first)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.optimize(objective, n_trials=args.tune_trials, timeout=args.tune_seconds or None,
                       catch=(ValueError, ArithmeticError))
    return study


def chosen_values(study) -> dict:
    """The best trial's flag values, its best epoch count included."""
    best = study.best_trial
    chosen = {**best.params, "epochs": best.user_attrs["epochs"]}
    if chosen.get("rating_target") == "binary":
        chosen["target_cap"] = None
    return chosen


def refuse_existing(args: argparse.Namespace) -> None:
    """A finished search is kept unless --overwrite (checked before any trial runs)."""
    if exists(join(args.output_dir, BEST)) and not args.overwrite:
        raise FileExistsError(f"{args.output_dir} already holds {BEST}; pass --overwrite to "
                              "tune again")


def publish_best(output_dir: str, result: dict, keep: tuple[str, ...] = ()) -> None:
    """Writes best.json (result, with its run_id) in a scratch folder beside output_dir and
    publishes it whole (stagekit/publish.py); files under `keep` prefixes stay."""
    import tensorflow as tf

    parent = posixpath.dirname(output_dir.rstrip("/"))
    name = f"_tmp_tune_{result['run_id'][:12]}"  # dead-run scratch: the driver removes it
    scratch = join(parent, name) if parent else name
    tf.io.gfile.makedirs(scratch)
    write_json(join(scratch, BEST), result)  # the marker and the only file
    publish.publish(scratch, output_dir, BEST, result["run_id"], keep=keep)


def _publish(args, study, metric: str, matrix, metadata: dict, seconds: float) -> dict:
    import optuna

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise ValueError("tune: no trial completed (see the log for their errors)")
    best = study.best_trial
    default = study.trials[0]
    chosen = chosen_values(study)
    trials = [{"number": t.number, "state": t.state.name, "params": t.params, "value": t.value,
               "epochs": t.user_attrs.get("epochs"), "curve": t.user_attrs.get("curve"),
               "seconds": None if t.duration is None else round(t.duration.total_seconds(), 3)}
              for t in study.trials]
    run_id = uuid.uuid4().hex
    result = {"run_id": run_id, "metric": metric, "direction": "maximize",
              "chosen": chosen, "best_value": best.value, "best_trial": best.number,
              "default_value": default.value if default.state.name == "COMPLETE" else None,
              "default": {**default.params, "epochs": default.user_attrs.get("epochs")},
              "trials": trials, "n_trials": len(trials),
              "states": {s: sum(t["state"] == s for t in trials)
                         for s in sorted({t["state"] for t in trials})},
              "seconds": round(seconds, 3), "seed": args.seed,
              "split": ({"holdout": args.tune_holdout} if args.tune_folds == 1
                        else {"folds": args.tune_folds}),
              "max_epochs": args.tune_max_epochs, "eval_users": args.tune_eval_users,
              "search": f"optuna {optuna.__version__} TPE (multivariate) + median pruner",
              "input": {"preproc_run_id": metadata.get("run_id"), "nusers": matrix.nusers,
                        "nitems": matrix.nitems, "interactions": matrix.nnz,
                        "searched_interactions": study.user_attrs.get("searched_interactions")},
              "created": datetime.datetime.now(datetime.timezone.utc).isoformat()}
    publish_best(args.output_dir, result)
    LOG.info("tune: %d trials (%s) in %.1fs; best %s=%.4f (trial %d) vs %.4f with the current "
             "flags; chosen %s", len(trials), result["states"], seconds, metric, best.value,
             best.number, result["default_value"] or float("nan"), chosen)
    return {"output_dir": args.output_dir, "best_value": best.value,
            "default_value": result["default_value"], "chosen": chosen,
            "n_trials": len(trials), "seconds": round(seconds, 3)}


def build_parser() -> argparse.ArgumentParser:
    def add_all(parser):
        flags.add_args(parser)
        add_args(parser)
    return cli.stage_parser("python -m trainer.tune", __doc__.splitlines()[0],
                            {"--input_dir": "preproc dir (preprocess output).",
                             "--output_dir": "tuning dir to write (best.json)."}, add_all)


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=cli.LOG_FORMAT)
    try:
        summary = run(args)
    except (ValueError, FileExistsError) as err:
        LOG.error("tune: %s", err)
        sys.exit(2)
    return summary


if __name__ == "__main__":
    main()
