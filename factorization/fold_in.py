"""Fold-in: user factors for visitors the model was not trained on, item factors fixed.

Each visitor's factor is the exact least-squares solution of the training objective with V fixed
(factorization/wals.py, the user half-step restricted to these rows): the same `solve_side`, targets,
weights and λ (factorization/objective.py), so a folded-in visitor is scored exactly as one more
half-step of training would score them. The SavedModel's `fold_in` signature solves the same
system inside the graph (batch_predict/serving.py); `batch_predict.fold_in` uses this one.
"""
from __future__ import annotations

import io

import numpy as np
import tensorflow as tf

from stagekit.artifacts import exists, join
from factorization import wals
from factorization.objective import Objective

TRAINED_ITEMS = "trained_items.npz"  # in the model dir: which items each user was trained on


def save_trained_items(model_dir: str, users: np.ndarray, items: np.ndarray,
                       ratings: np.ndarray, nusers: int) -> None:
    """CSR (indptr, indices, stored ratings) of the served factors' training entries: batch
    fold-in tells from it which visitors have new items, and solves on old + new ones."""
    order = np.lexsort((items, users))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(users, minlength=nusers))])
    buffer = io.BytesIO()
    np.savez(buffer,  # uncompressed: zlib cost 3 s at 2M interactions
             indptr=indptr.astype(np.int64),
                        indices=items[order].astype(np.int32),
                        ratings=ratings[order].astype(np.float32))
    with tf.io.gfile.GFile(join(model_dir, TRAINED_ITEMS), "wb") as f:
        f.write(buffer.getvalue())


def load_trained_entries(model_dir: str, default_rating: float
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(user, item, stored rating) of every training entry, or None for models written before
    the file (`default_rating` for files written before ratings were kept)."""
    path = join(model_dir, TRAINED_ITEMS)
    if not exists(path):
        return None
    with tf.io.gfile.GFile(path, "rb") as f:
        saved = np.load(io.BytesIO(f.read()), allow_pickle=False)
        indptr, indices = saved["indptr"], saved["indices"].astype(np.int64)
        ratings = (saved["ratings"] if "ratings" in saved.files
                   else np.full(indices.size, default_rating, np.float32))
    return np.repeat(np.arange(len(indptr) - 1), np.diff(indptr)), indices, ratings


def fold_in_factors(col_factors: np.ndarray, rows: np.ndarray, items: np.ndarray,
                    ratings: np.ndarray, n_rows: int, objective: Objective,
                    item_counts: np.ndarray, max_rows: int = 1024,
                    max_entries: int = 4096) -> np.ndarray:
    """float32 [n_rows, k]: row r's factor from its entries (rows == r: items, stored ratings).

    item_counts: each item's number of training entries (its column weight c_j). Rows without
    entries get a zero factor (callers score those by popularity).
    """
    nitems = len(col_factors)
    rows, items = np.asarray(rows, np.int64), np.asarray(items, np.int64)
    targets, weights = objective.targets(ratings, objective.item_weights(item_counts)[items])
    side = wals.plan_side(rows, items, targets, weights, n_rows, max_rows, max_entries)
    row_regularization = objective.row_regularization(np.bincount(rows, minlength=n_rows), nitems)
    half_step = tf.function(lambda: wals.solve_side(  # one graph: the batch loop runs in TF
        tf.constant(col_factors, tf.float32), side, objective.regularization,
        objective.unobserved_weight,
        row_regularization=None if row_regularization is None else tf.constant(row_regularization)),
        autograph=False)
    return half_step()[0].numpy()
