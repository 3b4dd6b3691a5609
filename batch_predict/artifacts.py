"""Reading the preproc and model artifacts batch prediction needs, with consistency checks.

Everything goes through tf.io.gfile so local paths and gs:// behave alike. Every mismatch between
model, vocabularies and preproc metadata raises `ArtifactError` before any output is written.
"""
from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from stagekit.artifacts import (ITEMS_FOR_USER, USERS_FOR_ITEM, VOCAB_ITEMS, VOCAB_USERS,  # noqa: F401
                                absolute, exists, join, read_json, read_npy, read_vocabulary, shards,
                                sparse_row_batches, vocab_path)

log = logging.getLogger(__name__)


class ArtifactError(ValueError):
    """Model, vocabularies or preproc files are missing or do not belong together."""


def _missing_file(path: str) -> ArtifactError:
    return ArtifactError(f"missing file {path}")


def record_files(preproc_dir: str, prefix: str) -> list[str]:
    """The TFRecord shards `<preproc_dir>/<prefix>-*` (possibly .gz), sorted."""
    return shards(preproc_dir, prefix, missing=lambda _: ArtifactError(
        f"no {prefix}-* shards in {preproc_dir}"))


def vocabulary_path(preproc_dir: str, name: str) -> str:
    """Path of a TFT vocabulary (vocab_users / vocab_items) written by the preprocess stage."""
    path = vocab_path(preproc_dir, name)
    if not exists(path):
        raise ArtifactError(f"vocabulary {name!r} not found under {preproc_dir}/transform_fn/assets")
    return path


@dataclasses.dataclass
class SeenMatrix:
    """Which candidates each query row already has, in CSR form (never dense).

    Row r's candidates are indices[indptr[r]:indptr[r + 1]], sorted ascending.
    """
    indptr: np.ndarray   # int64 [nrows + 1]
    indices: np.ndarray  # int64 [nnz]
    ncols: int

    @property
    def nrows(self) -> int:
        return len(self.indptr) - 1

    def row(self, r: int) -> np.ndarray:
        return self.indices[self.indptr[r]:self.indptr[r + 1]]

    def block(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """(local row, col) pairs of rows [start, stop), for scattering into a score block."""
        lo, hi = self.indptr[start], self.indptr[stop]
        local_rows = np.repeat(np.arange(stop - start), np.diff(self.indptr[start:stop + 1]))
        return local_rows, self.indices[lo:hi]

    def column_counts(self) -> np.ndarray:
        return np.bincount(self.indices, minlength=self.ncols).astype(np.int64)

    @classmethod
    def from_rows(cls, rows: list[np.ndarray], ncols: int) -> "SeenMatrix":
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        indices = np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, np.int64)
        return cls(indptr, indices, ncols)

    @classmethod
    def from_pairs(cls, rows: np.ndarray, cols: np.ndarray, nrows: int, ncols: int) -> "SeenMatrix":
        """From (row, col) pairs in any order; the same pair twice counts once."""
        codes = np.unique(np.asarray(rows, np.int64) * ncols + np.asarray(cols, np.int64))
        indptr = np.concatenate([[0], np.cumsum(np.bincount(codes // ncols, minlength=nrows))])
        return cls(indptr.astype(np.int64), codes % ncols, ncols)

    @classmethod
    def identity(cls, n: int) -> "SeenMatrix":
        """Each row 'has' itself: used to keep an item out of its own similar-items list."""
        return cls(np.arange(n + 1, dtype=np.int64), np.arange(n, dtype=np.int64), n)


def check_record(key: int, indices: np.ndarray, nrows: int, ncols: int, where: str) -> str | None:
    """Reason a record does not fit a nrows x ncols model, or None when it fits."""
    if not 0 <= key < nrows:
        return f"key {key} outside [0, {nrows}) in {where}"
    if len(indices) and (indices.min() < 0 or indices.max() >= ncols):
        return f"index outside [0, {ncols}) for key {key} in {where}"
    return None


def read_seen(preproc_dir: str, prefix: str, nrows: int, ncols: int) -> SeenMatrix:
    """Reads `<prefix>-*` shards into a CSR SeenMatrix; rows without a record stay empty."""
    started = time.time()
    keys, lengths, values = [], [], []
    for batch_keys, indices, _, path in sparse_row_batches(record_files(preproc_dir, prefix)):
        batch_lengths = indices.row_lengths().numpy()
        batch_values = indices.values.numpy()
        bad_key = (batch_keys < 0) | (batch_keys >= nrows)
        bad_value = np.repeat(np.arange(len(batch_keys)), batch_lengths)[
            (batch_values < 0) | (batch_values >= ncols)]
        if bad_key.any() or len(bad_value):
            first = int(np.flatnonzero(bad_key)[0]) if bad_key.any() else int(bad_value[0])
            raise ArtifactError(f"{prefix} does not match the model: " + check_record(
                int(batch_keys[first]), indices[first].numpy(), nrows, ncols, path))
        keys.append(batch_keys)
        lengths.append(batch_lengths)
        values.append(batch_values)
    empty = [np.zeros(0, np.int64)]
    keys = np.concatenate(keys or empty)
    records_per_key = np.bincount(keys, minlength=nrows)
    if (records_per_key > 1).any():
        raise ArtifactError(f"{prefix}: key {int(np.argmax(records_per_key))} appears in "
                            "more than one record")
    seen = SeenMatrix.from_pairs(np.repeat(keys, np.concatenate(lengths or empty)),
                                 np.concatenate(values or empty), nrows, ncols)
    log.info("read %s: %d of %d rows present, %d entries in %.2fs", prefix, len(keys), nrows,
                 len(seen.indices), time.time() - started)
    return seen


def count_per_key(preproc_dir: str, prefix: str, nkeys: int) -> np.ndarray:
    """Number of entries of each record in `<prefix>-*` (e.g. users per item = popularity)."""
    started = time.time()
    counts = np.zeros(nkeys, dtype=np.int64)
    for keys, indices, _, path in sparse_row_batches(record_files(preproc_dir, prefix)):
        if len(keys) and (keys.min() < 0 or keys.max() >= nkeys):
            raise ArtifactError(f"{prefix}: key outside [0, {nkeys}) in {path}")
        counts[keys] = indices.row_lengths().numpy()
    log.info("counted %s: %d entries over %d keys in %.2fs", prefix, int(counts.sum()), nkeys,
             time.time() - started)
    return counts


@dataclasses.dataclass
class Artifacts:
    """Factors, vocabularies and metadata of one trained model, checked to belong together."""
    preproc_dir: str
    model_dir: str
    row_factors: np.ndarray  # float32 [nusers, k], user factors
    col_factors: np.ndarray  # float32 [nitems, k], item factors
    vocab_users: list[str]
    vocab_items: list[str]
    model_info: dict
    metadata: dict

    @property
    def nusers(self) -> int:
        return len(self.vocab_users)

    @property
    def nitems(self) -> int:
        return len(self.vocab_items)


def read_factors(path: str) -> np.ndarray:
    """A factor matrix (model/row_factors.npy or col_factors.npy) as float32."""
    return read_npy(path, missing=_missing_file).astype(np.float32, copy=False)



def load_artifacts(preproc_dir: str, model_dir: str, check_preproc_path: bool = True) -> Artifacts:
    """Loads and cross-checks model.json, factors, metadata.json and both vocabularies."""
    model_info = read_json(join(model_dir, "model.json"), missing=_missing_file)
    metadata = read_json(join(preproc_dir, "metadata.json"), missing=_missing_file)
    row_factors, col_factors = (read_factors(join(model_dir, name))
                                for name in ("row_factors.npy", "col_factors.npy"))
    vocab_users = read_vocabulary(vocabulary_path(preproc_dir, VOCAB_USERS))
    vocab_items = read_vocabulary(vocabulary_path(preproc_dir, VOCAB_ITEMS))

    problems = []
    trained_on, this_run = model_info.get("preproc_run_id"), metadata.get("run_id")
    if trained_on and this_run:  # both recorded: identity decides, wherever the files now are
        if trained_on != this_run:
            problems.append(f"model was trained on another preprocess run (run_id {trained_on}) "
                            f"than the one in {preproc_dir} (run_id {this_run}); retrain")
    elif (check_preproc_path and model_info.get("preproc_dir")
          and absolute(model_info["preproc_dir"]) != absolute(preproc_dir)):
        problems.append(f"model was trained on {model_info['preproc_dir']}, not {preproc_dir} "
                        "(pass --ignore_preproc_path if the files were moved)")
    if row_factors.ndim != 2 or col_factors.ndim != 2 or row_factors.shape[1] != col_factors.shape[1]:
        problems.append(f"factor shapes {row_factors.shape} and {col_factors.shape} do not pair up")
    sizes = {"nusers": [("vocab_users lines", len(vocab_users)), ("row_factors rows", len(row_factors)),
                        ("model.json nusers", model_info.get("nusers")),
                        ("metadata.json nusers", metadata.get("nusers"))],
             "nitems": [("vocab_items lines", len(vocab_items)), ("col_factors rows", len(col_factors)),
                        ("model.json nitems", model_info.get("nitems")),
                        ("metadata.json nitems", metadata.get("nitems"))]}
    for what, found in sizes.items():
        if len({n for _, n in found if n is not None}) > 1:
            problems.append(f"{what} disagree: " + ", ".join(f"{s}={n}" for s, n in found))
    if model_info.get("n_embeds") not in (None, row_factors.shape[-1]):
        problems.append(f"model.json n_embeds={model_info['n_embeds']} but factors have "
                        f"{row_factors.shape[-1]} columns")
    if not (np.isfinite(row_factors).all() and np.isfinite(col_factors).all()):
        problems.append("factors contain NaN or infinity")
    for name, vocab in ((VOCAB_USERS, vocab_users), (VOCAB_ITEMS, vocab_items)):
        if len(set(vocab)) != len(vocab):
            problems.append(f"{name} has duplicate ids")
    if problems:
        raise ArtifactError(f"model {model_dir} does not match preproc {preproc_dir}: "
                            + "; ".join(problems))
    return Artifacts(preproc_dir, model_dir, row_factors, col_factors, vocab_users, vocab_items,
                     model_info, metadata)


@dataclasses.dataclass
class Entity:
    """Users or items: their factors, vocabulary and the records keyed by them."""
    name: str
    factors: np.ndarray
    vocab: list[str]
    vocab_file: str
    factors_file: str    # name inside the model dir
    records_prefix: str  # preproc records keyed by this entity, listing the other side


@dataclasses.dataclass
class Direction:
    """One top-k output: for each query row, the best candidates it does not have yet."""
    output_name: str
    query: Entity
    candidates: Entity
    excluded: np.ndarray | None = None  # candidates never returned (item filters)
    blank: np.ndarray | None = None     # query rows left with an empty list (item filters)


def entities(a: Artifacts) -> tuple[Entity, Entity]:
    users = Entity("users", a.row_factors, a.vocab_users, vocabulary_path(a.preproc_dir, VOCAB_USERS),
                   "row_factors.npy", ITEMS_FOR_USER)
    items = Entity("items", a.col_factors, a.vocab_items, vocabulary_path(a.preproc_dir, VOCAB_ITEMS),
                   "col_factors.npy", USERS_FOR_ITEM)
    return users, items
