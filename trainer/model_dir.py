"""Where a model is trained and how it replaces the previous one (the output-dir rules of
trainer/task.py): a resumable scratch folder named after the run's settings, published over the
model dir only when complete, keeping the SavedModel versions under export/."""
from __future__ import annotations

import hashlib
import json
import logging
import time

import tensorflow as tf

from stagekit.artifacts import join, read_json, write_json

LOG = logging.getLogger("trainer.task")
RUN_CONFIG = "run_config.json"


def prepare_model_dir(model_dir: str, config: dict, overwrite: bool) -> tuple[str, bool]:
    """Applies the output-dir rules of the module docstring; returns (work dir, resuming).

    The model is trained where it can be resumed but not served: `work_dir` (a scratch folder
    beside model_dir named after the settings, so a killed run's rerun finds it and resumes), and
    published over model_dir only when complete (stagekit/publish.py), keeping its SavedModel
    versions. A model_dir already holding this very model (same settings and input, complete) is
    left as it is: rerunning a finished model is a no-op.
    """
    work = work_dir(model_dir, config)
    prefix = work.rsplit("_", 1)[0] + "_"
    for stale in tf.io.gfile.glob(prefix + "*"):  # this model dir's scratch of other settings
        if stale.rstrip("/") != work:
            tf.io.gfile.rmtree(stale)
    exists = tf.io.gfile.isdir(model_dir) and bool(tf.io.gfile.listdir(model_dir))
    if exists and not overwrite:
        config_path = join(model_dir, RUN_CONFIG)
        previous = read_json(config_path) if tf.io.gfile.exists(config_path) else None
        if previous == config and tf.io.gfile.exists(join(model_dir, "model.json")):
            LOG.info("train: %s already holds this model (same settings and input)", model_dir)
            if tf.io.gfile.exists(work):  # left by a run killed after its publish
                tf.io.gfile.rmtree(work)
            return model_dir, True  # nothing to redo: the served files are never rewritten
        if previous is None and not _only_exports(model_dir):
            raise ValueError(f"{model_dir} is not empty and has no {RUN_CONFIG}; "
                             "pass --overwrite to replace it")
        if previous is not None and previous != config:
            differing = sorted(key for part in ("hyperparameters", "input")
                               for key in set(config[part]) | set(previous.get(part, {}))
                               if config[part].get(key) != previous.get(part, {}).get(key))
            raise ValueError(f"{model_dir} holds a model trained with different settings "
                             f"({', '.join(differing) or 'format'}); pass --overwrite to replace "
                             "it or choose another --output_dir")
    config_path = join(work, RUN_CONFIG)
    if tf.io.gfile.exists(config_path) and read_json(config_path) == config:
        LOG.info("train: resuming the interrupted run in %s", work)
        return work, True
    if tf.io.gfile.exists(work):
        tf.io.gfile.rmtree(work)
    tf.io.gfile.makedirs(work)
    write_json(config_path, config)
    return work, False


def _parent(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[0] if "/" in path.rstrip("/") else "."


def _only_exports(model_dir: str) -> bool:
    """A model dir holding only SavedModel versions (its model was replaced by a failed run)."""
    return {name.rstrip("/") for name in tf.io.gfile.listdir(model_dir)} <= {"export"}


def work_dir(model_dir: str, config: dict) -> str:
    """_tmp_train_<model dir name>_<settings hash> beside the model dir: a sweep training several
    model dirs side by side never touches another's scratch."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    name = model_dir.rstrip("/").rsplit("/", 1)[-1].replace("_", "-")
    return join(_parent(model_dir), f"_tmp_train_{name}_{digest}")


def finished_summary(model_dir: str, start: float) -> dict:
    """The summary of a model that is already complete with these very settings."""
    model = read_json(join(model_dir, "model.json"))
    metrics_path = join(model_dir, "metrics.json")
    summary_metrics = read_json(metrics_path) if model.get("metrics_from") and \
        tf.io.gfile.exists(metrics_path) else None
    return {"model_dir": model_dir, "resumed": True, "seconds": time.time() - start,
            "loss_history": model["loss_history"], "epoch_seconds": model["epoch_seconds"],
            "metrics": summary_metrics, "nusers": model["nusers"], "nitems": model["nitems"],
            "trained_on": model["trained_on"], "served_phase": model["served_phase"],
            "phases": sorted(model["phases"]), "train_interactions": model["train_interactions"],
            "heldout_interactions": model["heldout_interactions"]}
