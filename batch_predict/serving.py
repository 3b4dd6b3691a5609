"""Servable SavedModel: raw visitorId strings in, top-k contentId strings and scores out.

Layout: <model_dir>/export/<version>/ (TF Serving's model_base_path is <model_dir>/export; each
export adds version max+1, which TF Serving then serves). Inside the graph:
  visitorId --(tf.lookup table over vocab_users, shipped as an asset)--> userId, or "unknown"
  unknown visitors use an extra all-zero user row with no seen items, so like users without
  training data (zero factor) they are scored by item popularity
  scores = user factor . item factors; items the user already has -> -inf (seen items are stored
  as a ragged row_splits/values pair, never dense), and so do items left out by
  --exclude_items / --include_items (a mask); tf.math.top_k (ties: lower itemId first)
  itemId --(table over vocab_items)--> contentId; empty slots (fewer than k admissible items)
  come back as contentId "" with score 0.

Outputs of the `serving_default` signature: contentId string [n, k], score float32 [n, k],
known bool [n] (visitor found in the vocabulary).

The `fold_in` signature serves visitors the model has never seen: `contentIds` string [n, L]
(each row a visitor's items, padded with "") -> contentId string [n, k], score float32 [n, k].
Each row's user factor is the exact least-squares solution with the item factors fixed — the
trainer's own half-step (factorization/wals.py `solve_rows`, same objective, factorization/objective.py),
each given item counting as one typical rating (model.json `fold_in_rating`); unknown and
repeated contentIds are ignored, the given items are never recommended, and a row with no known
item gets the popularity list.

Try it:
  saved_model_cli show --dir MODEL/export/1 --tag_set serve --signature_def serving_default
  saved_model_cli run --dir MODEL/export/1 --tag_set serve --signature_def serving_default \
      --input_exprs 'visitorId=["1234567890", "unknown-visitor"]'
  saved_model_cli run --dir MODEL/export/1 --tag_set serve --signature_def fold_in \
      --input_exprs 'contentIds=[["129036651", "549840379"], ["263192149", ""]]'
Serve it (REST on :8501):
  docker run -p 8501:8501 -v MODEL/export:/models/wals -e MODEL_NAME=wals tensorflow/serving
  curl -d '{"instances": ["1234567890"]}' localhost:8501/v1/models/wals:predict
"""
from __future__ import annotations

import logging
import time
import uuid

import numpy as np
import tensorflow as tf

from batch_predict import artifacts as art
from batch_predict.artifacts import Artifacts, SeenMatrix
from stagekit import faults
from stagekit.artifacts import join
from factorization import wals
from factorization.objective import Objective

log = logging.getLogger(__name__)


class Recommender(tf.Module):
    """Everything needed to answer top-k queries for raw visitor ids, as a tf.Module."""

    def __init__(self, users_vocab_file: str, items_vocab_file: str, row_factors: np.ndarray,
                 col_factors: np.ndarray, seen: SeenMatrix, item_counts: np.ndarray, k: int,
                 excluded_items: np.ndarray | None = None, objective: Objective = Objective(),
                 fold_in_rating: float = 1.0):
        super().__init__()
        self.k = min(k, len(col_factors))
        self.nusers, self.nitems = len(row_factors), len(col_factors)
        self.users_vocab = tf.saved_model.Asset(users_vocab_file)
        self.items_vocab = tf.saved_model.Asset(items_vocab_file)
        self.user_ids = tf.lookup.StaticHashTable(tf.lookup.TextFileInitializer(
            self.users_vocab, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
            tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER), default_value=-1)
        self.item_ids = tf.lookup.StaticHashTable(tf.lookup.TextFileInitializer(
            self.items_vocab, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
            tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER), default_value=-1)
        self.content_ids = tf.lookup.StaticHashTable(tf.lookup.TextFileInitializer(
            self.items_vocab, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
            tf.string, tf.lookup.TextFileIndex.WHOLE_LINE), default_value="")
        # Row nusers is the "unknown visitor": zero factor, nothing seen.
        zero_row = np.zeros((1, row_factors.shape[1]), np.float32)
        self.row_factors = tf.Variable(np.concatenate([row_factors, zero_row]), trainable=False)
        self.col_factors = tf.Variable(col_factors, trainable=False)
        self.seen_row_splits = tf.Variable(np.append(seen.indptr, seen.indptr[-1]), trainable=False)
        self.seen_items = tf.Variable(seen.indices, trainable=False)
        self.item_counts = tf.Variable(item_counts.astype(np.float32), trainable=False)
        mask = np.zeros(len(col_factors), np.float32)  # -inf: never recommended (item filters)
        if excluded_items is not None:
            mask[excluded_items] = -np.inf
        self.item_mask = tf.Variable(mask, trainable=False)
        self._init_fold_in(col_factors, item_counts, objective, fold_in_rating)

    def _init_fold_in(self, col_factors, item_counts, objective: Objective, rating: float):
        """Constants of the fold-in solve: the whitened item factors (computed once here, not per
        request) and each item's target and weight for one typical rating."""
        self.objective = objective
        per_row = objective.reg_scaling != "none"
        white = wals.whiten(tf.constant(col_factors, tf.float32), objective.unobserved_weight,
                            None if per_row else objective.regularization)
        self.fold_basis = tf.Variable(white.basis, trainable=False)
        self.fold_whitened = tf.Variable(white.whitened, trainable=False)
        self.fold_eigenvalues = tf.Variable(white.eigenvalues, trainable=False)
        self.fold_uniform_scale = None if per_row else tf.Variable(white.uniform_scale,
                                                                  trainable=False)
        target, weight = objective.targets(np.full(len(col_factors), rating, np.float32),
                                           objective.item_weights(item_counts))
        self.fold_target = tf.Variable(target, trainable=False)
        self.fold_weight = tf.Variable(weight, trainable=False)

    def _top_k(self, user_factors, pairs):
        """contentId/score of the best k admissible items per row; `pairs` [m, 2] int64 (row,
        itemId) are excluded; rows with an all-zero factor are scored by popularity."""
        scores = tf.matmul(user_factors, self.col_factors, transpose_b=True)
        cold = tf.reduce_all(tf.equal(user_factors, 0.0), axis=1)
        scores = tf.where(cold[:, None], self.item_counts[None, :], scores) + self.item_mask[None, :]
        scores = tf.tensor_scatter_nd_update(
            scores, pairs, tf.fill(tf.shape(pairs)[:1], float("-inf")))
        top_scores, top_items = tf.math.top_k(scores, k=self.k, sorted=True)
        admissible = tf.math.is_finite(top_scores)
        return {"contentId": tf.where(admissible,
                                      self.content_ids.lookup(tf.cast(top_items, tf.int64)), ""),
                "score": tf.where(admissible, top_scores, 0.0)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="visitorId")])
    def serve(self, visitor_ids):
        user_ids = self.user_ids.lookup(visitor_ids)
        known = user_ids >= 0
        rows = tf.where(known, user_ids, self.nusers)
        seen = tf.gather(tf.RaggedTensor.from_row_splits(self.seen_items, self.seen_row_splits),
                         rows)
        pairs = tf.stack([seen.value_rowids(), seen.values], axis=1)  # ragged: never dense
        return {**self._top_k(tf.gather(self.row_factors, rows), pairs), "known": known}

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="contentIds")])
    def fold_in(self, content_ids):
        ids = tf.sort(self.item_ids.lookup(content_ids), axis=1)      # unknown / "" -> -1 first
        repeated = tf.concat([tf.zeros_like(ids[:, :1], tf.bool), ids[:, 1:] == ids[:, :-1]], 1)
        ids = tf.where(repeated, tf.constant(-1, tf.int64), ids)       # each item counts once
        valid = ids >= 0
        cols = tf.cast(tf.where(valid, ids, 0), tf.int32)
        target = tf.where(valid, tf.gather(self.fold_target, cols), 0.0)
        weight = tf.where(valid, tf.gather(self.fold_weight, cols), 0.0)  # 0: padding, vanishes
        # tensors, not the variables: the shared solver tf.functions trace on tensor shapes
        white = wals.Whitening(
            tf.identity(self.fold_basis), tf.identity(self.fold_whitened),
            tf.identity(self.fold_eigenvalues),
            None if self.fold_uniform_scale is None else tf.identity(self.fold_uniform_scale))
        objective = self.objective
        row_regularization = None
        if self.fold_uniform_scale is None:                            # λ·(n_i + w0·n_items)
            n_given = tf.reduce_sum(tf.cast(valid, tf.float32), axis=1)
            row_regularization = objective.regularization * (
                n_given + objective.unobserved_weight * float(self.nitems))
            row_regularization = tf.where(row_regularization > 0, row_regularization,
                                          objective.regularization)  # as Objective does
        rotated, _ = wals.solve_rows(white, cols, target, weight, objective.unobserved_weight,
                                     row_regularization)
        user_factors = tf.matmul(rotated, self.fold_basis, transpose_b=True)
        given = tf.where(valid)                                        # [(row, slot)]
        return self._top_k(user_factors,
                           tf.stack([given[:, 0], tf.gather_nd(ids, given)], axis=1))


def _versions(export_root: str) -> list[int]:
    return sorted(int(name.strip("/")) for name in
                  (tf.io.gfile.listdir(export_root) if tf.io.gfile.isdir(export_root) else [])
                  if name.strip("/").isdigit())


def next_version_dir(export_root: str) -> str:
    return join(export_root, str(max(_versions(export_root), default=0) + 1))


def prune_versions(export_root: str, keep: int) -> list[str]:
    """Deletes the oldest SavedModel versions beyond the newest `keep`; returns what it deleted.
    Runs only after a new version is complete, so a servable version always remains."""
    doomed = [join(export_root, str(v)) for v in _versions(export_root)[:-keep or None]] if keep > 0 else []
    for path in doomed:
        tf.io.gfile.rmtree(path)
    return doomed


def export_saved_model(artifacts: Artifacts, users_vocab_file: str, items_vocab_file: str,
                       seen: SeenMatrix, item_counts: np.ndarray, k: int, keep_versions: int = 0,
                       excluded_items: np.ndarray | None = None) -> str:
    """Writes the servable SavedModel to <model_dir>/export/<next version>; returns its path.

    Saved to a temporary folder first and renamed, so TF Serving never sees a half-written
    version.
    """
    started = time.time()
    info = artifacts.model_info
    module = Recommender(users_vocab_file, items_vocab_file, artifacts.row_factors,
                         artifacts.col_factors, seen, item_counts, k, excluded_items,
                         Objective.from_settings(info.get("hyperparameters", {})),
                         float(info.get("fold_in_rating", 1.0)))
    export_root = join(artifacts.model_dir, "export")
    for stale in tf.io.gfile.glob(join(export_root, ".tmp-*")):  # an export killed half-way
        tf.io.gfile.rmtree(stale)
    tmp_dir = join(export_root, f".tmp-{uuid.uuid4().hex[:12]}")
    tf.saved_model.save(module, tmp_dir, signatures={"serving_default": module.serve,
                                                     "fold_in": module.fold_in})
    final_dir = next_version_dir(export_root)
    faults.point("export:before_rename")
    tf.io.gfile.rename(tmp_dir, final_dir)
    for old in prune_versions(export_root, keep_versions):
        log.info("export: deleted old version %s (--keep_versions %d)", old, keep_versions)
    log.info("export: SavedModel for %d users x %d items (k=%d) at %s in %.2fs",
                 artifacts.nusers, artifacts.nitems, module.k, final_dir, time.time() - started)
    return final_dir


def export_model(preproc_dir: str, model_dir: str, top_k: int, check_preproc_path: bool = True,
                 keep_versions: int = 0, excluded_items: list | None = None) -> str:
    """The SavedModel export from the stage's input folders alone (the Beam job's last step runs
    it on a worker); returns the version folder."""
    a = art.load_artifacts(preproc_dir, model_dir, check_preproc_path=check_preproc_path)
    users, items = art.entities(a)
    seen = art.read_seen(preproc_dir, users.records_prefix, len(users.vocab), len(items.vocab))
    item_counts = art.count_per_key(preproc_dir, items.records_prefix, len(items.vocab))
    return export_saved_model(a, users.vocab_file, items.vocab_file, seen, item_counts, top_k,
                              keep_versions, None if excluded_items is None
                              else np.asarray(excluded_items, np.int64))
