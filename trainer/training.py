"""The train stage's work: WALS training in phases, checkpoints, metrics, the published model/.

trainer/task.py is the stage's command line (flags, their checks, `run`) and documents the
phases, the output dir rules and the defaults; it imports this module, and so TensorFlow, only
once the flags have passed.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import logging
import time
import uuid

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2
from tensorflow.python.framework import config as tf_config

from stagekit import faults, publish
from stagekit.artifacts import (VOCAB_ITEMS, VOCAB_USERS, absolute, join,
                                read_vocabulary, vocab_path, write_json, write_npy)
from factorization import input as wals_input
from trainer import metrics
from factorization import wals, warm_start
from factorization.fold_in import save_trained_items
from trainer.model_dir import finished_summary, prepare_model_dir
from trainer.flags import check_memory, hyperparameters

LOG = logging.getLogger("trainer.task")

PER_EPOCH_EVAL_USERS = 2000  # per-epoch monitoring only; the final metrics use every user


def run(args: argparse.Namespace, start: float) -> dict:
    """Trains WALS for flags trainer.task.run has checked; returns a summary."""
    with _op_determinism():
        return _run(args, start)


def _scalar_summary(name: str, value: float, step: int) -> None:
    """A TensorBoard scalar via the core op (the tensorboard package is not a dependency)."""
    meta = summary_pb2.SummaryMetadata()
    meta.plugin_data.plugin_name = "scalars"
    tf.summary.write(name, tf.constant(value, tf.float32), step=step, metadata=meta)


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
    entries = slice(None) if train.all() else train  # all: views, not 40 MB of copies at 2M
    solver = wals.WALS.from_settings(matrix.users[entries], matrix.items[entries],
                                     matrix.ratings[entries], matrix.nusers, matrix.nitems, args,
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
    if monitor is not None:  # the per-epoch held-out curve (report.html plots it)
        summary["heldout_ndcg"] = [None if np.isnan(x) else float(x)
                                   for x in state.heldout_ndcg.numpy()]
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
        # held-out NDCG@k after each epoch (eval phase; NaN where not measured)
        self.heldout_ndcg = tf.Variable(np.full(epochs, np.nan), name="heldout_ndcg")
        checkpoint = tf.train.Checkpoint(row_factors=solver.row_factors,
                                         col_factors=solver.col_factors, epoch=self.epoch,
                                         loss_history=self.loss_history,
                                         epoch_seconds=self.epoch_seconds,
                                         heldout_ndcg=self.heldout_ndcg)
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
                state.heldout_ndcg[step].assign(ndcg)
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


def report_hypertune(args: argparse.Namespace, summary_metrics: dict) -> None:
    """The held-out metric, the way Vertex AI hyperparameter tuning reads it."""
    import hypertune

    tag = f"{args.hypertune_metric}_at_{args.top_k}"
    value = summary_metrics["wals"][f"{args.hypertune_metric}@{args.top_k}"]
    hypertune.HyperTune().report_hyperparameter_tuning_metric(
        hyperparameter_metric_tag=tag, metric_value=value, global_step=args.epochs)
    LOG.info("train: reported %s=%.6f to Vertex AI hyperparameter tuning", tag, value)
