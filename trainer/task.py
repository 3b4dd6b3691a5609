"""Train stage: WALS on the preprocess stage's TFRecords; writes model/ (docs/ARCHITECTURE.md).

    python -m trainer.task --input_dir OUTPUT/preproc --output_dir OUTPUT/model [--overwrite]

Output dir rules: training happens in a scratch folder beside the model dir, named after the
run's settings (`_tmp_train_<hash of run_config.json>`: hyperparameters + seed + identity of
the input), and the result is published over the model dir only when complete (atomically on
local disk, pipeline/publish.py), keeping the SavedModel versions under export/. A killed run's
rerun with the same settings finds its scratch and *resumes* from the last checkpoint. A model
dir already holding this very model is left as it is (rerunning is a no-op); any other
non-empty dir is refused with the differing keys unless --overwrite, which replaces it (only
once the new model is complete).

Defaults (k=128, binary target with confidence ∝ rating, λ=0.02 scaled per row by frequency,
w0=0.02, no column weights, init scale 0.1, 8 epochs) were chosen across three datasets of
different shapes (MovieLens ml-latest-small, the GA sample, a generated long-tail Zipf set) as the
setting with the best mean held-out NDCG@10 relative to each dataset's best (benchmarks/tuning.py;
README "Benchmarks"); per dataset, the tune stage does better.
Training phases: with --eval_fraction > 0 the trainer first trains on the split (phase
"eval": a seeded share of each user's interactions held out) and writes metrics.json from that
model; then (phase "full", default) it trains again on *all* interactions with the same
hyperparameters and seed, and those factors are written as row_factors.npy / col_factors.npy
(so batch prediction and serving use everything). --no_refit_full serves the eval model instead
(half the training time). --eval_fraction 0 runs the full phase only, with no metrics.
Each phase checkpoints under checkpoints/<phase>/ and logs under logs/<phase>/, so a run killed
in either phase resumes where it stopped; model.json records which data the factors saw and
where the metrics came from.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import sys
import time
import uuid

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2
from tensorflow.python.framework import config as tf_config

from pipeline import cli, faults, publish
from pipeline.artifacts import (VOCAB_ITEMS, VOCAB_USERS, absolute, join,
                                read_vocabulary, vocab_path, write_json, write_npy)
from trainer import input as wals_input
from trainer import metrics, objective, wals, warm_start
from trainer.fold_in import save_trained_items
from trainer.model_dir import finished_summary, prepare_model_dir

LOG = logging.getLogger(__name__)

PER_EPOCH_EVAL_USERS = 2000  # per-epoch monitoring only; the final metrics use every user


def add_args(parser: argparse.ArgumentParser) -> None:
    """Flags owned by the train stage (shared ones come from pipeline/cli.py)."""
    group = parser.add_argument_group("trainer (WALS)")
    group.add_argument("--n_embeds", type=int, default=128, help="Latent factors k.")
    group.add_argument("--regularization", type=cli.finite_float, default=0.02,
                       help="L2 weight λ on both factor matrices (> 0).")
    group.add_argument("--unobserved_weight", type=cli.finite_float, default=0.02,
                       help="Weight w0 of every unobserved (user, item) pair.")
    group.add_argument("--reg_scaling", choices=objective.REG_SCALINGS, default="frequency",
                       help="none: the same λ for every row; frequency: λ·(n_i + w0·n_other) "
                            "per row (Rendle et al. 2021; needs a much smaller λ).")
    group.add_argument("--rating_target", choices=objective.RATING_TARGETS, default="binary",
                       help="rating: fit min(target_scale · rating, target_cap); binary: fit 1 "
                            "with confidence ∝ target_scale · rating (Hu, Koren, Volinsky 2008).")
    group.add_argument("--target_scale", type=cli.finite_float, default=1.0,
                       help="Scale of the stored rating for training (target or confidence, --rating_target).")
    group.add_argument("--target_cap", type=cli.finite_float, default=None,
                       help="Cap of the scaled rating with --rating_target rating (default none).")
    group.add_argument("--init_scale", type=cli.finite_float, default=0.1,
                       help="Item factors start as N(0, (init_scale/√k)²); Rendle et al. use 0.1.")
    group.add_argument("--col_weights", choices=objective.COL_WEIGHT_SCHEMES, default="none",
                       help="Observed-entry weight c_j per item: none = 1, linear = "
                            "feature_wt_factor / n_j, log = (1 / n_j) ** feature_wt_exp.")
    group.add_argument("--feature_wt_factor", type=cli.finite_float, default=130.0,
                       help="Factor of --col_weights linear.")
    group.add_argument("--feature_wt_exp", type=cli.finite_float, default=0.1,
                       help="Exponent of --col_weights log (negative favours popular items).")
    group.add_argument("--epochs", type=int, default=8, help="Full WALS sweeps.")
    group.add_argument("--checkpoint_seconds", type=cli.finite_float, default=30.0,
                       help="Checkpoint a phase when this many seconds have passed since its "
                            "last checkpoint, and after its last epoch (a killed run resumes "
                            "from there); 0: after every epoch.")
    group.add_argument("--batch_size", type=int, default=1024,
                       help="Rows per batched solve (and Examples per input batch).")
    group.add_argument("--batch_entries", type=int, default=4096,
                       help="Padded ratings per batched solve: bounds memory to ~this × k floats "
                            "(small batches pad less; 4096 measured fastest on MovieLens).")
    group.add_argument("--solver", choices=wals.SOLVERS, default="exact",
                       help="exact: every row's least squares solved exactly (default); cg: "
                            "--cg_steps conjugate-gradient steps per row, warm-started and "
                            "preconditioned by the Gramian (approximate; ~3x faster at k=128).")
    group.add_argument("--cg_steps", type=int, default=3,
                       help="CG steps per row and half-step with --solver cg.")
    group.add_argument("--eval_fraction", type=cli.finite_float, default=0.2,
                       help="Seeded share of each user's interactions held out for metrics "
                            "(metrics.json comes from a model trained without them); 0 writes "
                            "no metrics.json.")
    group.add_argument("--no_refit_full", action="store_true",
                       help="With --eval_fraction > 0, write the factors of the model trained "
                            "on the split instead of retraining on all interactions (the "
                            "default retrains with the same settings and seed).")
    group.add_argument("--warm_start_from", default=None, metavar="MODEL_DIR",
                       help="Start from a previous model's factors, matched by original ids "
                            "through both runs' vocabularies; new users and items start as usual. "
                            "The full phase only: the eval phase (metrics.json) starts cold, since "
                            "the previous model saw what it holds out.")
    group.add_argument("--hypertune_metric", choices=metrics.RANKING_METRICS,
                       default=None,
                       help="Report this held-out metric at --top_k to Vertex AI hyperparameter "
                            "tuning (cloudml-hypertune, tag <metric>_at_<k>); set by the tune "
                            "stage's Vertex AI job.")
    group.add_argument("--warm_start_optional", action="store_true",
                       help="With --warm_start_from: start cold, with a warning, when that folder "
                            "holds no model (e.g. the first night of a schedule).")
    group.add_argument("--tuning_file", default=None, metavar="BEST_JSON",
                       help="Hyperparameters chosen by the tune stage (tuning/best.json); flags "
                            "given explicitly win. pipeline.run uses OUTPUT/tuning/best.json "
                            "when it exists.")


def hyperparameters(args: argparse.Namespace) -> dict:
    names = ("n_embeds", "regularization", "unobserved_weight", "reg_scaling", "rating_target",
             "target_scale", "target_cap", "init_scale", "col_weights",
             "feature_wt_factor", "feature_wt_exp", "epochs", "batch_size", "batch_entries",
             "solver", "cg_steps", "eval_fraction", "seed", "top_k", "warm_start_from",
             "tuning_file")
    return {**{name: getattr(args, name) for name in names},
            "refit_full": not getattr(args, "no_refit_full", False)}


def _scalar_summary(name: str, value: float, step: int) -> None:
    """A TensorBoard scalar via the core op (the tensorboard package is not a dependency)."""
    meta = summary_pb2.SummaryMetadata()
    meta.plugin_data.plugin_name = "scalars"
    tf.summary.write(name, tf.constant(value, tf.float32), step=step, metadata=meta)


MAX_N_EMBEDS = 8192  # far beyond any useful k; larger values are typos


def validate_args(args: argparse.Namespace) -> None:
    """Flag checks that need no data (the driver runs them before any stage starts)."""
    for name in ("epochs", "batch_size", "batch_entries", "cg_steps", "top_k"):
        cli.check_range(args, name, 1)
    cli.check_range(args, "checkpoint_seconds", 0)
    cli.check_range(args, "n_embeds", 1, MAX_N_EMBEDS)
    cli.check_range(args, "regularization", 0, low_open=True)
    cli.check_range(args, "unobserved_weight", 0)
    cli.check_range(args, "feature_wt_factor", 0, low_open=True)
    cli.check_range(args, "feature_wt_exp", -10, 10)
    cli.check_range(args, "eval_fraction", 0, 1, high_open=True)
    cli.check_range(args, "target_scale", 0, low_open=True)
    cli.check_range(args, "init_scale", 0, low_open=True)
    if getattr(args, "target_cap", None) is not None:
        cli.check_range(args, "target_cap", 0, low_open=True)
    warm_start.check(args)
    if getattr(args, "trainer", "local") == "local":  # a Vertex AI machine is sized elsewhere
        check_memory(args, nrows=0)


def memory_estimate_bytes(args: argparse.Namespace, nrows: int) -> int:
    """Peak bytes of training, roughly: the batched solves ([batch, k, k] systems and their
    factorisations, the padded ratings) and the factor matrices (both sides, with their copies)."""
    k = args.n_embeds
    solves = 3 * args.batch_size * k * k * 4 + 4 * args.batch_entries * k * 4
    return solves + 4 * nrows * k * 4


def check_memory(args: argparse.Namespace, nrows: int) -> None:
    """ValueError when training cannot fit this machine's memory (nrows: users + items)."""
    need, have = memory_estimate_bytes(args, nrows), cli.machine_memory_bytes()
    if have and need > 0.8 * have:
        raise ValueError(
            f"--n_embeds {args.n_embeds} with --batch_size {args.batch_size}"
            + (f" for {nrows:,} users + items" if nrows else "")
            + f" needs about {need / 2**30:.1f} GiB, more than this machine's "
              f"{have / 2**30:.1f} GiB can give; lower --n_embeds or --batch_size")


def run(args: argparse.Namespace) -> dict:
    """Trains WALS from args.input_dir (preproc) into args.output_dir (model); returns a summary."""
    start = time.time()
    validate_args(args)
    if "{trial}" in args.output_dir:  # a Vertex AI tuning trial (pipeline/cloud/vertex_tuning.py)
        args.output_dir = args.output_dir.replace("{trial}", os.environ.get("CLOUD_ML_TRIAL_ID", "0"))
    with _op_determinism():
        return _run(args, start)


@contextlib.contextmanager
def _op_determinism():
    """Deterministic kernels while training (same seed -> same factors on GPU too), then the
    previous setting back: the driver runs other stages in this process afterwards."""
    was_enabled = tf_config.is_op_determinism_enabled()
    tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if not was_enabled:
            tf_config.disable_op_determinism()  # no public API for this yet


def _run(args: argparse.Namespace, start: float) -> dict:
    matrix, metadata = wals_input.load_matrix(args.input_dir, args.batch_size)
    check_memory(args, matrix.nusers + matrix.nitems)
    held = (metrics.split_holdout(matrix.users, args.eval_fraction, args.seed)
            if args.eval_fraction > 0 else np.zeros(matrix.nnz, bool))
    preproc_dir = absolute(args.input_dir)
    config = {"hyperparameters": hyperparameters(args),
              # identity, not location: a copied run dir resumes, another preprocess run does not
              "input": {"preproc_run_id": metadata.get("run_id"), "nusers": matrix.nusers,
                        "nitems": matrix.nitems, "interactions": matrix.nnz,
                        "created": metadata.get("created")}}
    published_dir = args.output_dir
    model_dir, resuming = prepare_model_dir(published_dir, config, args.overwrite)
    if model_dir == published_dir:
        return finished_summary(published_dir, start)

    # Warm start serves the full phase only: the previous model was trained on interactions the
    # eval phase holds out, so a warm eval phase would report optimistic metrics.
    initial, warm = None, None
    if args.warm_start_from:
        initial, warm = warm_start.initial_factors(
            args.warm_start_from, *(read_vocabulary(vocab_path(args.input_dir, name, metadata))
                                    for name in (VOCAB_USERS, VOCAB_ITEMS)),
            args.n_embeds, args.seed, args.init_scale)
    phases, summary_metrics = {}, None
    if held.any():
        train = ~held
        test = (matrix.users[held], matrix.items[held])
        monitor = lambda row_f, col_f: metrics.evaluate(
            metrics.factor_scorer(row_f, col_f), (matrix.users[train], matrix.items[train]),
            test, matrix.nusers, matrix.nitems, args.top_k,
            max_users=PER_EPOCH_EVAL_USERS)[f"ndcg@{args.top_k}"]
        phases["eval"], (row_factors, col_factors) = train_phase(
            "eval", matrix, train, args, model_dir, resuming, monitor)  # cold: see below
        summary_metrics = evaluate_model(row_factors, col_factors, matrix, held, args.top_k)
        summary_metrics["model"] = ("eval phase: trained on the interactions left after "
                                    "holding out the test share")
        write_json(join(model_dir, "metrics.json"), summary_metrics)
        if args.hypertune_metric:
            from trainer.tune import report_hypertune
            report_hypertune(args, summary_metrics)
    if not held.any() or hyperparameters(args)["refit_full"]:
        phases["full"], (row_factors, col_factors) = train_phase(
            "full", matrix, np.ones(matrix.nnz, bool), args, model_dir, resuming, None, initial)
    served = "full" if "full" in phases else "eval"
    write_npy(join(model_dir, "row_factors.npy"), row_factors)
    write_npy(join(model_dir, "col_factors.npy"), col_factors)
    warm_start.save_vocabularies(args.input_dir, metadata, model_dir)
    served_entries = np.ones(matrix.nnz, bool) if served == "full" else ~held
    save_trained_items(model_dir, matrix.users[served_entries], matrix.items[served_entries],
                       matrix.ratings[served_entries], matrix.nusers)
    model = {"n_embeds": args.n_embeds, "nusers": matrix.nusers, "nitems": matrix.nitems,
             "preproc_dir": preproc_dir, "preproc_run_id": metadata.get("run_id"),
             "hyperparameters": hyperparameters(args),
             "trained_on": ("all interactions" if served == "full" else
                            "split: held-out interactions excluded"),
             "served_phase": served, "phases": phases,
             "metrics_from": "eval" if summary_metrics is not None else None,
             "epochs_completed": phases[served]["epochs_completed"],
             "loss_history": phases[served]["loss_history"],
             "epoch_seconds": phases[served]["epoch_seconds"],
             "train_interactions": phases[served]["train_interactions"],
             "heldout_interactions": int(held.sum()),
             "warm_start": warm,
             # fold-in of a visitor known only by contentIds: each counts as a typical rating
             "fold_in_rating": float(np.median(matrix.ratings)) if matrix.nnz else 1.0,
             "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
             "run_id": uuid.uuid4().hex}  # predictions record which model they came from
    faults.point("train:before_publish")
    write_json(join(model_dir, "model.json"), model)  # the marker: written last
    if model_dir != published_dir:
        publish.publish(model_dir, published_dir, "model.json", model["run_id"], keep=("export/",))
    seconds = time.time() - start
    LOG.info("train: %d users x %d items, factors from phase %s (%d interactions), %d "
                 "held out, %d epochs per phase, %.2fs%s", matrix.nusers, matrix.nitems, served,
                 model["train_interactions"], held.sum(), args.epochs, seconds,
                 "" if summary_metrics is None else
                 f", eval ndcg@{args.top_k}={summary_metrics['wals'][f'ndcg@{args.top_k}']:.4f}")
    return {"model_dir": published_dir, "resumed": resuming, "seconds": seconds,
            "loss_history": model["loss_history"], "epoch_seconds": model["epoch_seconds"],
            "metrics": summary_metrics, "nusers": matrix.nusers, "nitems": matrix.nitems,
            "trained_on": model["trained_on"], "served_phase": served,
            "phases": sorted(phases),
            "train_interactions": model["train_interactions"],
            "heldout_interactions": model["heldout_interactions"]}


def train_phase(phase: str, matrix: wals_input.Interactions, train: np.ndarray,
                args: argparse.Namespace, model_dir: str, resuming: bool, monitor,
                initial: tuple | None = None):
    """Trains (or resumes) one phase on the entries where `train` is set, from `initial`
    factors (warm start) or the seeded start.

    Returns (phase summary for model.json, (row_factors, col_factors) as numpy).
    """
    solver = wals.WALS.from_settings(matrix.users[train], matrix.items[train],
                                     matrix.ratings[train], matrix.nusers, matrix.nitems, args,
                                     initial=initial)
    state = TrainState(solver, args.epochs, join(model_dir, "checkpoints", phase),
                       args.checkpoint_seconds)
    if resuming:
        state.restore(phase)
    train_epochs(solver, state, join(model_dir, "logs", phase), monitor, args.top_k, phase)
    summary = {"train_interactions": int(train.sum()),
               "epochs_completed": int(state.epoch.numpy()),
               "loss_history": [float(x) for x in state.loss_history.numpy()],
               "epoch_seconds": [float(x) for x in state.epoch_seconds.numpy()]}
    return summary, (solver.row_factors.numpy(), solver.col_factors.numpy())


class TrainState:
    """Factors + progress, checkpointed (tf.train.CheckpointManager) after the last epoch and
    after any epoch ending `checkpoint_seconds` or more after the previous checkpoint: saving
    the factors every epoch cost ~11 s over 8 epochs at 2M interactions."""

    def __init__(self, solver: wals.WALS, epochs: int, checkpoint_dir: str,
                 checkpoint_seconds: float = 0.0):
        self.checkpoint_seconds, self.last_checkpoint = checkpoint_seconds, time.time()
        self.epoch = tf.Variable(0, dtype=tf.int64, name="epoch")
        self.loss_history = tf.Variable(tf.zeros([epochs], tf.float64), name="loss_history")
        self.epoch_seconds = tf.Variable(tf.zeros([epochs], tf.float64), name="epoch_seconds")
        checkpoint = tf.train.Checkpoint(row_factors=solver.row_factors,
                                         col_factors=solver.col_factors, epoch=self.epoch,
                                         loss_history=self.loss_history,
                                         epoch_seconds=self.epoch_seconds)
        self.manager = tf.train.CheckpointManager(checkpoint, checkpoint_dir, max_to_keep=2)

    def restore(self, phase: str) -> None:
        latest = self.manager.latest_checkpoint
        if latest:  # None when killed before the phase's first epoch ended: start from the seed
            self.manager.checkpoint.restore(latest).assert_existing_objects_matched()
            LOG.info("train[%s]: resumed from %s after epoch %d", phase, latest,
                         int(self.epoch.numpy()))

    def record(self, step: int, loss: float, seconds: float) -> None:
        self.loss_history[step].assign(loss)
        self.epoch_seconds[step].assign(seconds)
        self.epoch.assign(step + 1)
        last = step + 1 == int(self.loss_history.shape[0])
        if last or time.time() - self.last_checkpoint >= self.checkpoint_seconds:
            self.manager.save(checkpoint_number=step + 1)
            self.last_checkpoint = time.time()


def train_epochs(solver: wals.WALS, state: TrainState, log_dir: str, monitor, k: int,
                 phase: str) -> None:
    """Runs the remaining epochs: log line + TensorBoard scalars + checkpoint after each.

    `monitor(row_factors, col_factors) -> held-out NDCG@k`, or None (eval off, full phase).
    """
    epochs = int(state.loss_history.shape[0])
    writer = tf.summary.create_file_writer(log_dir)
    with writer.as_default():
        for step in range(int(state.epoch.numpy()), epochs):
            tick = time.time()
            loss = solver.epoch()
            seconds = time.time() - tick
            _scalar_summary("weighted_loss", loss, step + 1)
            _scalar_summary("epoch_seconds", seconds, step + 1)
            message = (f"train[{phase}]: epoch {step + 1}/{epochs} weighted_loss={loss:.6g} "
                       f"{seconds:.3f}s")
            if monitor is not None:
                ndcg = monitor(solver.row_factors.numpy(), solver.col_factors.numpy())
                _scalar_summary(f"heldout_ndcg@{k}", ndcg, step + 1)
                message += f" heldout ndcg@{k}={ndcg:.4f}"
            LOG.info(message)
            state.record(step, loss, seconds)
            writer.flush()


def evaluate_model(row_factors: np.ndarray, col_factors: np.ndarray,
                   matrix: wals_input.Interactions, held: np.ndarray, k: int) -> dict:
    """metrics.json: the same held-out metrics for WALS and the popularity baseline."""
    train, test = ~held, held
    train_pairs = (matrix.users[train], matrix.items[train])
    test_pairs = (matrix.users[test], matrix.items[test])
    test_ratings = matrix.ratings[test]
    scorers = {
        "wals": (metrics.factor_scorer(row_factors, col_factors),
                 metrics.factor_predictor(row_factors, col_factors)),
        "popularity": (metrics.popularity_scorer(matrix.items[train], matrix.nitems),
                       metrics.item_mean_predictor(matrix.items[train], matrix.ratings[train],
                                                   matrix.nitems)),
    }
    result = {"k": k, "heldout_interactions": int(held.sum())}
    for name, (score, predict) in scorers.items():
        result[name] = metrics.evaluate(score, train_pairs, test_pairs, matrix.nusers,
                                        matrix.nitems, k, label=name)
        result[name]["rmse"] = metrics.rmse(predict, *test_pairs, test_ratings)
    return result


def build_parser() -> argparse.ArgumentParser:
    """The parser of `python -m trainer.task`: paths, the driver's shared flags, the trainer's own."""
    return cli.stage_parser("python -m trainer.task", __doc__.splitlines()[0],
                            {"--input_dir": "preproc dir (preprocess output).",
                             "--output_dir": "model dir to write."}, add_args)


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=cli.LOG_FORMAT)
    try:
        if args.tuning_file:  # tuned values for every flag not given explicitly
            from trainer.tune import apply_tuning
            apply_tuning(args, cli.explicit_dests(parser, sys.argv[1:] if argv is None else argv),
                         args.tuning_file)
        summary = run(args)
    except ValueError as err:
        LOG.error("train: %s", err)
        sys.exit(2)
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
