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

The selection is exact but cheap: factorization/ranking.py's chunk prefilter (`top_k_rows`).

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
from factorization.ranking import CHUNK, aligned_empty, top_k_rows  # noqa: F401 (re-exported)


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
                excluded: np.ndarray | None = None,
                buffer: np.ndarray | None = None,
                ncandidates: int | None = None) -> TopKBlock:
    """Top-k for one block of query rows.

    query_block: float32 [b, f]; candidates_t: float32 [f, nc] (transposed, C-contiguous), whose
    columns from `ncandidates` on are padding (never returned);
    (seen_rows, seen_cols): local row and candidate id of every pair to exclude;
    buffer: optional aligned float32 [>= b, nc] scratch space reused across blocks.
    """
    nrows, ncolumns = len(query_block), candidates_t.shape[1]
    ncandidates = ncolumns if ncandidates is None else ncandidates
    k_eff = min(k, ncandidates)
    if k_eff <= 0 or nrows == 0:
        empty = np.zeros((nrows, 0))
        return TopKBlock(start, empty.astype(np.int64), empty.astype(np.float32))
    if buffer is None or len(buffer) < nrows:
        buffer = aligned_empty((nrows, ncolumns))
    scores = np.matmul(query_block, candidates_t, out=buffer[:nrows])
    if cold_scores is not None:
        cold = ~query_block.any(axis=1)
        if cold.any():
            scores[cold, :ncandidates] = cold_scores
    scores[:, ncandidates:] = -np.inf
    if excluded is not None and len(excluded):
        scores[:, excluded] = -np.inf
    scores[seen_rows, seen_cols] = -np.inf
    values, ids = top_k_rows(scores, k_eff)
    return TopKBlock(start, ids, values)


@dataclasses.dataclass
class Scorer:
    """Query/candidate factors plus what to exclude: everything a block computation needs."""
    query: np.ndarray        # float32 [nq, f]
    candidates: np.ndarray   # float32 [nc, f]
    cold_scores: np.ndarray | None = None  # float32 [nc], used for all-zero query rows
    excluded: np.ndarray | None = None     # int64 candidate ids never to return
    blank_queries: np.ndarray | None = None  # int64 query ids whose lists stay empty (filters)

    def __post_init__(self):
        self.query = np.ascontiguousarray(self.query, dtype=np.float32)
        self.ncandidates = len(self.candidates)
        # Pad the catalog to whole prefilter chunks (the padding scores -inf).
        ncolumns = -(-self.ncandidates // CHUNK) * CHUNK
        self.candidates_t = np.zeros((self.candidates.shape[1], ncolumns), np.float32)
        self.candidates_t[:, :self.ncandidates] = self.candidates.T
        if self.cold_scores is not None:
            self.cold_scores = np.asarray(self.cold_scores, dtype=np.float32)
        self._buffer: np.ndarray | None = None  # scores of one block, reused

    def block(self, start: int, stop: int, seen_pairs: tuple[np.ndarray, np.ndarray],
              k: int) -> TopKBlock:
        """Top-k of query rows [start, stop); seen_pairs = (row - start, candidate id) arrays."""
        if self._buffer is None or len(self._buffer) < stop - start:
            self._buffer = aligned_empty((stop - start, self.candidates_t.shape[1]))
        block = top_k_block(self.query[start:stop], self.candidates_t, *seen_pairs, k,
                            start, self.cold_scores, self.excluded, self._buffer,
                            self.ncandidates)
        if self.blank_queries is not None and len(self.blank_queries):
            blank = self.blank_queries[(self.blank_queries >= start) & (self.blank_queries < stop)]
            if not block.scores.flags.writeable:
                block.scores = block.scores.copy()
            block.scores[blank - start] = -np.inf  # rows() then yields them empty
        return block

    def blocks(self, seen: SeenMatrix, k: int, block_size: int) -> Iterator[TopKBlock]:
        """Top-k of every query row, one block of `block_size` rows at a time, in row order."""
        for start in range(0, len(self.query), block_size):
            stop = min(start + block_size, len(self.query))
            yield self.block(start, stop, seen.block(start, stop), k)


def recommendation_scorer(query: np.ndarray, candidates: np.ndarray, candidate_counts: np.ndarray,
                          excluded: np.ndarray | None = None,
                          blank_queries: np.ndarray | None = None) -> Scorer:
    """Users -> items (or items -> users): cold rows fall back to the most frequent candidates.
    `excluded` candidates are never returned; `blank_queries` rows get empty lists (the item
    filters: an excluded item is never recommended, nor targeted)."""
    return Scorer(query, candidates, cold_scores=candidate_counts.astype(np.float32),
                  excluded=excluded, blank_queries=blank_queries)


def similarity_scorer(factors: np.ndarray, excluded: np.ndarray | None = None) -> Scorer:
    """Items -> items by cosine similarity. Items with an all-zero factor have no direction:
    they get no similar items and are never listed as similar (pair with SeenMatrix.identity
    so that an item never lists itself); `excluded` items are never listed as similar either."""
    norms = np.linalg.norm(factors, axis=1, keepdims=True)
    unit = np.divide(factors, norms, out=np.zeros_like(factors, dtype=np.float32), where=norms > 0)
    no_direction = np.flatnonzero(norms[:, 0] == 0)
    if excluded is not None:
        no_direction = np.union1d(no_direction, excluded)
    return Scorer(unit, unit, cold_scores=np.full(len(factors), -np.inf, np.float32),
                  excluded=no_direction)
