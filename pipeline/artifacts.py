"""The artifact layout under --output_dir, and the checks that a stage's inputs exist and agree.

Layout (DESIGN.md): root/preproc (preprocess), root/model (train), root/predictions (predict).
Every read goes through tf.io.gfile so the same code works on local paths and gs://.
"""
from __future__ import annotations

import json
import posixpath

import numpy as np
import tensorflow as tf

PREPROC, MODEL, PREDICTIONS = "preproc", "model", "predictions"
STAGE_ORDER = ("preprocess", "train", "predict")
PRODUCER = {PREPROC: "preprocess", MODEL: "train", PREDICTIONS: "predict"}
SHARD_PREFIXES = ("users_for_item", "items_for_user")
VOCABS = {"vocab_users": "nusers", "vocab_items": "nitems"}
FACTORS = {"row_factors.npy": "nusers", "col_factors.npy": "nitems"}


class StageInputError(RuntimeError):
    """A stage's inputs are missing or do not belong together; the message says what and why."""


def join(root: str, *parts: str) -> str:
    """Joins path parts with '/', which is right for local paths and gs:// alike."""
    return posixpath.join(root.rstrip("/") or "/", *parts) if root else posixpath.join(*parts)


def stage_dir(root: str, folder: str) -> str:
    return join(root, folder)


def exists(path: str) -> bool:
    return tf.io.gfile.exists(path)


def read_json(path: str) -> dict:
    with tf.io.gfile.GFile(path, "r") as f:
        return json.load(f)


def shards(folder: str, prefix: str) -> list[str]:
    return sorted(tf.io.gfile.glob(join(folder, prefix + "-*")))


def vocab_path(preproc: str, name: str, metadata: dict | None = None) -> str:
    """The vocabulary file: metadata's recorded path if it still exists, else transform_fn/assets."""
    recorded = (metadata or {}).get(name)
    if recorded and tf.io.gfile.exists(recorded):
        return recorded
    return join(preproc, "transform_fn", "assets", name)


def count_lines(path: str) -> int:
    with tf.io.gfile.GFile(path, "rb") as f:
        return sum(1 for _ in f)


def npy_shape(path: str) -> tuple[int, ...]:
    """Reads only the header of a .npy file (no need to load the factors to check their size)."""
    with tf.io.gfile.GFile(path, "rb") as f:
        major, _ = np.lib.format.read_magic(f)
        read_header = (np.lib.format.read_array_header_1_0 if major == 1
                       else np.lib.format.read_array_header_2_0)
        shape, _, _ = read_header(f)
    return shape


def _missing(what: str, path: str, folder: str) -> StageInputError:
    return StageInputError(f"{what} not found at {path}; it is written by the "
                           f"'{PRODUCER[folder]}' stage (run it first, e.g. --stages {PRODUCER[folder]})")


def _required_json(what: str, path: str, folder: str) -> dict:
    if not tf.io.gfile.exists(path):
        raise _missing(what, path, folder)
    return read_json(path)


def check_preproc(root: str) -> dict:
    """Checks root/preproc is complete and self-consistent; returns its metadata.json."""
    preproc = stage_dir(root, PREPROC)
    meta_path = join(preproc, "metadata.json")
    metadata = _required_json("preprocessing metadata", meta_path, PREPROC)
    for key in ("nusers", "nitems"):
        if not isinstance(metadata.get(key), int) or metadata[key] <= 0:
            raise StageInputError(f"{meta_path}: '{key}' must be a positive integer, got "
                                  f"{metadata.get(key)!r}; re-run the 'preprocess' stage")
    for prefix in SHARD_PREFIXES:
        if not shards(preproc, prefix):
            raise _missing(f"{prefix} TFRecord shards", join(preproc, prefix + "-*"), PREPROC)
    for name, key in VOCABS.items():
        path = vocab_path(preproc, name, metadata)
        if not tf.io.gfile.exists(path):
            raise _missing(f"vocabulary {name}", path, PREPROC)
        size = count_lines(path)
        if size != metadata[key]:
            raise StageInputError(f"{path} has {size} entries but {meta_path} says {key}="
                                  f"{metadata[key]}: the preproc folder mixes two runs; re-run 'preprocess'")
    return metadata


def check_model(root: str, metadata: dict) -> dict:
    """Checks root/model has model.json and factors matching the preproc sizes; returns model.json."""
    model = stage_dir(root, MODEL)
    model_json_path = join(model, "model.json")
    model_json = _required_json("model description", model_json_path, MODEL)
    for key in ("nusers", "nitems"):
        if model_json.get(key) != metadata[key]:
            raise StageInputError(
                f"{model_json_path} was trained on {key}={model_json.get(key)} but "
                f"{join(root, PREPROC, 'metadata.json')} has {key}={metadata[key]}: the model belongs to "
                "another preprocessing run; re-run 'train' (with --overwrite)")
    for filename, key in FACTORS.items():
        path = join(model, filename)
        if not tf.io.gfile.exists(path):
            raise _missing(f"factor matrix {filename}", path, MODEL)
        shape = npy_shape(path)
        if len(shape) != 2 or shape[0] != metadata[key]:
            raise StageInputError(f"{path} has shape {shape}, expected ({metadata[key]}, n_embeds) "
                                  "for this preproc folder; re-run 'train' (with --overwrite)")
    return model_json


def check_stage_inputs(stage: str, root: str) -> None:
    """Raises StageInputError naming what is missing for `stage` and which stage produces it."""
    if stage == "preprocess":
        return  # its input (--source/--input) is validated by the stage itself
    metadata = check_preproc(root)
    if stage == "predict":
        check_model(root, metadata)
