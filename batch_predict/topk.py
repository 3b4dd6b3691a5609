"""Blocked top-k scoring with exclusion of already-seen candidates: the one solver behind
recommendations (users -> items), targeting (items -> users) and similar items (items -> items).

For query rows Q (e.g. user factors, [nq, f]) and candidates C (e.g. item factors, [nc, f]):

    score(q, c) = Q[q] . C[c]                       (one BLAS matmul per block of query rows)
    score(q, c) = -inf   if c in seen[q]            (sparse scatter: only the seen pairs are touched)
    score(q, c) = -inf   if c is excluded globally  (e.g. items without a usable factor)
    cold rows (Q[q] == 0, i.e. no training data) score every candidate by `cold_scores`
        instead (popularity), so they get the popular unseen items rather than arbitrary ties
    top_k(q) = the k largest scores, best first; equal scores -> the lower candidate id first
        (tf.math.top_k's documented tie rule), which makes the output deterministic.

Entries scoring -inf are never recommended: a row with fewer than k admissible candidates
(k larger than the catalog, or most of it already seen) gets a shorter list, possibly empty.
Memory is O(block_size * nc); the nq x nc matrix is never built.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np
import tensorflow as tf

from batch_predict.artifacts import SeenMatrix


@dataclasses.dataclass
class TopKBlock:
    """Top-k of query rows [start, start + len(ids)); -inf scores mark empty slots."""
    start: int
    ids: np.ndarray     # int64 [b, k_eff]
    scores: np.ndarray  # float32 [b, k_eff]

    def rows(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(query id, candidate ids, scores) per row with the empty slots dropped."""
        valid = np.isfinite(self.scores)
        for offset in range(len(self.ids)):
            keep = valid[offset]
            yield self.start + offset, self.ids[offset][keep], self.scores[offset][keep]


def top_k_block(query_block: np.ndarray, candidates_t: np.ndarray, seen_rows: np.ndarray,
                seen_cols: np.ndarray, k: int, start: int = 0,
                cold_scores: np.ndarray | None = None,
                excluded: np.ndarray | None = None) -> TopKBlock:
    """Top-k for one block of query rows.

    query_block: float32 [b, f]; candidates_t: float32 [f, nc] (transposed, C-contiguous);
    (seen_rows, seen_cols): local row and candidate id of every pair to exclude.
    """
    ncandidates = candidates_t.shape[1]
    k_eff = min(k, ncandidates)
    if k_eff <= 0 or len(query_block) == 0:
        empty = np.zeros((len(query_block), 0))
        return TopKBlock(start, empty.astype(np.int64), empty.astype(np.float32))
    scores = query_block @ candidates_t
    if cold_scores is not None:
        cold = ~query_block.any(axis=1)
        if cold.any():
            scores[cold] = cold_scores
    if excluded is not None and len(excluded):
        scores[:, excluded] = -np.inf
    scores[seen_rows, seen_cols] = -np.inf
    values, ids = tf.math.top_k(scores, k=k_eff, sorted=True)
    return TopKBlock(start, ids.numpy().astype(np.int64), values.numpy())


@dataclasses.dataclass
class Scorer:
    """Query/candidate factors plus what to exclude: everything a block computation needs."""
    query: np.ndarray        # float32 [nq, f]
    candidates: np.ndarray   # float32 [nc, f]
    cold_scores: np.ndarray | None = None  # float32 [nc], used for all-zero query rows
    excluded: np.ndarray | None = None     # int64 candidate ids never to return

    def __post_init__(self):
        self.query = np.ascontiguousarray(self.query, dtype=np.float32)
        self.candidates_t = np.ascontiguousarray(self.candidates.T, dtype=np.float32)
        if self.cold_scores is not None:
            self.cold_scores = np.asarray(self.cold_scores, dtype=np.float32)

    def block(self, start: int, stop: int, seen_pairs: tuple[np.ndarray, np.ndarray],
              k: int) -> TopKBlock:
        """Top-k of query rows [start, stop); seen_pairs = (row - start, candidate id) arrays."""
        return top_k_block(self.query[start:stop], self.candidates_t, *seen_pairs, k,
                           start, self.cold_scores, self.excluded)

    def blocks(self, seen: SeenMatrix, k: int, block_size: int) -> Iterator[TopKBlock]:
        """Top-k of every query row, one block of `block_size` rows at a time, in row order."""
        for start in range(0, len(self.query), block_size):
            stop = min(start + block_size, len(self.query))
            yield self.block(start, stop, seen.block(start, stop), k)


def recommendation_scorer(query: np.ndarray, candidates: np.ndarray,
                          candidate_counts: np.ndarray) -> Scorer:
    """Users -> items (or items -> users): cold rows fall back to the most frequent candidates."""
    return Scorer(query, candidates, cold_scores=candidate_counts.astype(np.float32))


def similarity_scorer(factors: np.ndarray) -> Scorer:
    """Items -> items by cosine similarity. Items with an all-zero factor have no direction:
    they get no similar items and are never listed as similar (pair with SeenMatrix.identity
    so that an item never lists itself)."""
    norms = np.linalg.norm(factors, axis=1, keepdims=True)
    unit = np.divide(factors, norms, out=np.zeros_like(factors, dtype=np.float32), where=norms > 0)
    no_direction = np.flatnonzero(norms[:, 0] == 0)
    return Scorer(unit, unit, cold_scores=np.full(len(factors), -np.inf, np.float32),
                  excluded=no_direction)
