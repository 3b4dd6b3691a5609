"""The artifact layout under --output_dir, and the checks that a stage's inputs exist and agree.

Layout (DESIGN.md): root/preproc (preprocess), root/model (train), root/predictions (predict).
Every read goes through tf.io.gfile so the same code works on local paths and gs://.

It is also the one home of the artifact I/O helpers every stage uses (paths, JSON, .npy,
vocabularies, shard lists, the sparse-row TFRecords). It imports numpy, TensorFlow only on first
use (`gfile`) and never Beam or TFT, so the driver's --help and flag checks, which need only the
layout constants, stay cheap.
"""
from __future__ import annotations

import io
import json
import os
import posixpath
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf

PREPROC, TUNING, MODEL, PREDICTIONS = "preproc", "tuning", "model", "predictions"
COOC = "cooc"  # the co-occurrence stage's folder (pipeline/cooc/)
STAGE_ORDER = ("preprocess", "cooc", "tune", "train", "predict")
PRODUCER = {PREPROC: "preprocess", TUNING: "tune", MODEL: "train", PREDICTIONS: "predict"}
ITEMS_FOR_USER, USERS_FOR_ITEM = "items_for_user", "users_for_item"  # one record per user / item
SHARD_PREFIXES = (USERS_FOR_ITEM, ITEMS_FOR_USER)
VOCAB_USERS, VOCAB_ITEMS = "vocab_users", "vocab_items"
VOCABS = {VOCAB_USERS: "nusers", VOCAB_ITEMS: "nitems"}
FACTORS = {"row_factors.npy": "nusers", "col_factors.npy": "nitems"}


def gfile():
    """tf.io.gfile (local paths and gs:// alike), importing TensorFlow on first use: it takes
    seconds, and what needs no file (--help, flag checks) should not pay for it."""
    import tensorflow as tf

    return tf.io.gfile


class StageInputError(RuntimeError):
    """A stage's inputs are missing or do not belong together; the message says what and why."""


def join(root: str, *parts: str) -> str:
    """Joins path parts with '/', which is right for local paths and gs:// alike."""
    return posixpath.join(root.rstrip("/") or "/", *parts) if root else posixpath.join(*parts)


def absolute(path: str) -> str:
    """A local path made absolute (without a trailing '/'); gs:// and other URLs as they are."""
    return path.rstrip("/") if "://" in path else os.path.abspath(path)


def stage_dir(root: str, folder: str) -> str:
    return join(root, folder)


def exists(path: str) -> bool:
    if "://" not in path:  # a local path: what gfile would answer, without importing TensorFlow
        return os.path.exists(path)
    return gfile().exists(path)


# `missing`, where a reader takes it, builds the caller's own exception from the path (each stage
# names its error type and the fix); without it a missing file raises tf's NotFoundError.
MissingError = Callable[[str], Exception]


def _check(path: str, missing: MissingError | None) -> None:
    if missing is not None and not exists(path):
        raise missing(path)


def read_json(path: str, missing: MissingError | None = None) -> dict:
    _check(path, missing)
    with gfile().GFile(path, "r") as f:
        return json.load(f)


def write_json(path: str, payload: dict) -> None:
    with gfile().GFile(path, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True, allow_nan=False)  # strict JSON, always


def read_npy(path: str, missing: MissingError | None = None) -> np.ndarray:
    _check(path, missing)
    with gfile().GFile(path, "rb") as f:  # np.load needs a seekable file: read it whole
        return np.load(io.BytesIO(f.read()), allow_pickle=False)


def write_npy(path: str, array: np.ndarray) -> None:
    with gfile().GFile(path, "wb") as f:
        np.save(f, array)


def replace_dir(new: str, old: str) -> None:
    """Puts folder `new` where folder `old` is, deleting `old` first (local or gs://; on GCS a
    folder rename copies object by object, so it is not atomic there)."""
    if gfile().exists(old):
        gfile().rmtree(old)
    gfile().rename(new, old)


def iter_lines(pattern: str, limit: int | None = None):
    """The lines (without newline) of the files matching pattern, in name order; the first
    `limit` of them when given. Lazy: a caller may stop early without reading the rest."""
    for path in sorted(gfile().glob(pattern)):
        with gfile().GFile(path, "r") as f:
            for line in f:
                if limit is not None:
                    if limit <= 0:
                        return
                    limit -= 1
                yield line.rstrip("\n")


def head_lines(pattern: str, n: int) -> list[str]:
    """The first n lines of the files matching pattern, in name order (fewer if they are shorter)."""
    return list(iter_lines(pattern, n))


def shards(folder: str, prefix: str, missing: MissingError | None = None) -> list[str]:
    """The shards folder/prefix-* sorted; `missing(pattern)` is raised when there are none."""
    pattern = join(folder, prefix + "-*")
    files = sorted(gfile().glob(pattern))
    if not files and missing is not None:
        raise missing(pattern)
    return files


def vocab_path(preproc: str, name: str, metadata: dict | None = None) -> str:
    """The vocabulary file: this preproc dir's transform_fn/assets/<name>, else metadata's recorded path.

    transform_fn/assets/<name> is where tft.WriteTransformFn puts a text vocabulary (it is what
    tft.TFTransformOutput.vocabulary_file_by_name finds), without importing TFT. The folder's own
    copy wins so that a copied or moved run never reads the vocabulary of the place it came from.
    """
    own = join(preproc, "transform_fn", "assets", name)
    recorded = (metadata or {}).get(name)
    if recorded and not gfile().exists(own) and gfile().exists(recorded):
        return recorded
    return own


def read_vocabulary(path: str) -> list[str]:
    """One original id per line; the line position is the integer id."""
    with gfile().GFile(path, "rb") as f:
        lines = f.read().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [line.decode("utf-8") for line in lines]


def count_lines(path: str, chunk_bytes: int = 16 << 20) -> int:
    """Lines of a text file, as TFTransformOutput.vocabulary_size_by_name counts them, but by
    counting newlines in big chunks instead of iterating lines in Python (~0.5 s at 100k)."""
    lines, last = 0, b"\n"
    with gfile().GFile(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return lines + (last != b"\n")


def tfrecord_dataset(files: list[str]) -> tf.data.Dataset:
    """The records of TFRecord files in the given order; a file ending in .gz is read as GZIP."""
    import tensorflow as tf

    compression = ["GZIP" if path.endswith(".gz") else "" for path in files]
    if len(set(compression)) <= 1:  # the usual case: one native reader over all files
        return tf.data.TFRecordDataset(files, compression_type=compression[0] if files else "")
    return tf.data.Dataset.from_tensor_slices((files, compression)).flat_map(
        lambda path, kind: tf.data.TFRecordDataset(path, compression_type=kind))


def sparse_row_batches(files: list[str], batch_size: int = 4096, with_values: bool = False
                       ) -> Iterator[tuple[np.ndarray, tf.RaggedTensor, tf.RaggedTensor | None, str]]:
    """Parses users_for_item / items_for_user Examples (DESIGN.md record format) file by file.

    Yields (keys int64 [B], indices RaggedTensor [B, None], values RaggedTensor or None, path of
    the shard) per batch; the path lets callers name the shard holding a bad record. `values` is
    parsed only when asked for (most readers need only which ids a row has).
    """
    import tensorflow as tf

    spec = {"key": tf.io.FixedLenFeature([1], tf.int64), "indices": tf.io.RaggedFeature(tf.int64)}
    if with_values:
        spec["values"] = tf.io.RaggedFeature(tf.float32)
    for path in files:
        for batch in tfrecord_dataset([path]).batch(batch_size):
            parsed = tf.io.parse_example(batch, spec)
            yield parsed["key"][:, 0].numpy(), parsed["indices"], parsed.get("values"), path


def npy_shape(path: str) -> tuple[int, ...]:
    """Reads only the header of a .npy file (no need to load the factors to check their size)."""
    with gfile().GFile(path, "rb") as f:
        major, _ = np.lib.format.read_magic(f)
        read_header = (np.lib.format.read_array_header_1_0 if major == 1
                       else np.lib.format.read_array_header_2_0)
        shape, _, _ = read_header(f)
    return shape


def _missing(what: str, path: str, folder: str) -> StageInputError:
    return StageInputError(f"{what} not found at {path}; it is written by the "
                           f"'{PRODUCER[folder]}' stage (run it first, e.g. --stages {PRODUCER[folder]})")


def _required_json(what: str, path: str, folder: str) -> dict:
    return read_json(path, missing=lambda p: _missing(what, p, folder))


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
        shards(preproc, prefix,
               missing=lambda pattern: _missing(f"{prefix} TFRecord shards", pattern, PREPROC))
    for name, key in VOCABS.items():
        path = vocab_path(preproc, name, metadata)
        if not gfile().exists(path):
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
        if not gfile().exists(path):
            raise _missing(f"factor matrix {filename}", path, MODEL)
        shape = npy_shape(path)
        if len(shape) != 2 or shape[0] != metadata[key]:
            raise StageInputError(f"{path} has shape {shape}, expected ({metadata[key]}, n_embeds) "
                                  "for this preproc folder; re-run 'train' (with --overwrite)")
    return model_json


def check_stage_inputs(stage: str, root: str) -> None:
    """Raises StageInputError naming what is missing for `stage` and which stage produces it."""
    if stage in ("preprocess", "cooc"):
        return  # their input (--source/--input) is validated by the stage itself
    metadata = check_preproc(root)
    if stage == "predict":
        check_model(root, metadata)
