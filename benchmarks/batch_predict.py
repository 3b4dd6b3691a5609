"""Benchmark: blocked top-k with exclusion (batch_predict.topk) vs a NumPy argpartition reference.

    python benchmarks/batch_predict.py            # 100k users x 10k items x 32 factors, top-10
    python -m benchmarks.batch_predict --users 20000

Synthetic factors and ~10 seen items per user. Both sides compute the same score blocks (NumPy
BLAS matmul, same block size, seen items set to -inf) and differ in how the top k are selected:
the engine's chunk-max prefilter + tf.math.top_k on the shortlist (batch_predict/topk.py) vs
np.argpartition over the whole row + sort of the k winners (reference). Results must be identical (same ids, same order; ties -> lower id first
on both sides). The two run alternately block by block, so that the load of other processes
hits both alike. Prints users/s for both and the ratio; the target is >= 1.0x.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from batch_predict.artifacts import SeenMatrix  # noqa: E402
from batch_predict.topk import Scorer  # noqa: E402


def synthetic(users: int, items: int, factors: int, seen_per_user: int, seed: int):
    rng = np.random.default_rng(seed)
    query = rng.standard_normal((users, factors), dtype=np.float32)
    candidates = rng.standard_normal((items, factors), dtype=np.float32)
    lengths = rng.integers(0, 2 * seen_per_user + 1, size=users)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    indices = rng.integers(0, items, size=indptr[-1]).astype(np.int64)  # duplicates are harmless
    return query, candidates, SeenMatrix(indptr, indices, items)


class NumpyReference:
    """Same blocks, np.argpartition for the k best, then those k sorted by (-score, id)."""

    def __init__(self, query, candidates, seen, k, block_size):
        self.query, self.seen, self.k = query, seen, k
        self.candidates_t = np.ascontiguousarray(candidates.T)
        self.buffer = np.empty((block_size, len(candidates)), np.float32)

    def block(self, start: int, stop: int) -> np.ndarray:
        scores = np.matmul(self.query[start:stop], self.candidates_t, out=self.buffer[:stop - start])
        rows, cols = self.seen.block(start, stop)
        scores[rows, cols] = -np.inf
        best = np.argpartition(scores, -self.k, axis=1)[:, -self.k:]
        best_scores = np.take_along_axis(scores, best, axis=1)
        order = np.lexsort((best, -best_scores), axis=1)
        return np.take_along_axis(best, order, axis=1)


def compare(query, candidates, seen, k, block_size):
    """Runs both block by block, alternating, so that load from other processes on the machine
    hits both alike; returns (engine ids, reference ids, engine seconds, reference seconds)."""
    engine = Scorer(query, candidates)
    reference = NumpyReference(query, candidates, seen, k, block_size)
    ours, theirs, our_seconds, their_seconds = [], [], 0.0, 0.0
    for start in range(0, len(query), block_size):
        stop = min(start + block_size, len(query))
        started = time.perf_counter()
        theirs.append(reference.block(start, stop))
        middle = time.perf_counter()
        ours.append(engine.block(start, stop, seen.block(start, stop), k).ids)
        our_seconds += time.perf_counter() - middle
        their_seconds += middle - started
    return np.concatenate(ours), np.concatenate(theirs), our_seconds, their_seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--factors", type=int, default=32)
    parser.add_argument("--top_k", type=int, default=10)
    parser.add_argument("--seen_per_user", type=int, default=10)
    parser.add_argument("--block_size", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    query, candidates, seen = synthetic(args.users, args.items, args.factors,
                                        args.seen_per_user, args.seed)
    compare(query[:256], candidates, seen, args.top_k, 128)  # warm-up: TF kernels, BLAS threads
    ours, reference, our_seconds, reference_seconds = compare(query, candidates, seen, args.top_k,
                                                              args.block_size)
    identical = np.array_equal(ours, reference)
    print(f"batch_predict top-{args.top_k} with exclusion: {args.users} users x {args.items} items "
          f"x {args.factors} factors, {len(seen.indices)} seen pairs, block {args.block_size}")
    print(f"  numpy argpartition reference: {reference_seconds:7.2f} s  "
          f"{args.users / reference_seconds:10.0f} users/s")
    print(f"  batch_predict engine        : {our_seconds:7.2f} s  "
          f"{args.users / our_seconds:10.0f} users/s")
    print(f"  speed-up vs reference: {reference_seconds / our_seconds:.2f}x (target >= 1.0x); "
          f"identical results: {identical}")
    assert identical, f"{int((ours != reference).any(axis=1).sum())} users differ from the reference"
    return 0


if __name__ == "__main__":
    sys.exit(main())
