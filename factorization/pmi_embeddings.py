"""Item embeddings from the SPPMI matrix (items × items), by the project's own WALS solver.

The cooc stage's kept pairs form a symmetric sparse matrix M (M_ab = SPPMI(a, b), both ways).
WALS (factorization/wals.py, the same code path as training, items as rows and as columns) fits
U Vᵀ ≈ M with every observed entry at weight 1 + w0 and every other pair at w0 (their PMI is 0 or
below the shift: "not associated"), one λ for all rows. Row factors U are the embeddings; items
without any kept pair get a zero vector (no direction), which the similar-items scorers skip.
"""
from __future__ import annotations

import numpy as np

from factorization import wals

REGULARIZATION = 0.1
UNOBSERVED_WEIGHT = 0.1
EPOCHS = 10


def pmi_embeddings(items: list[bytes], scored: list, dim: int, seed: int = 42,
                   epochs: int = EPOCHS) -> tuple[list[bytes], np.ndarray, wals.WALS]:
    """(item ids sorted, float32 [n_items, dim] embeddings, the fitted solver) from `scored`:
    (item, (neighbour, sppmi)) entries, both directions of each kept pair."""
    ids = sorted(set(items))
    index = {item: position for position, item in enumerate(ids)}
    rows = np.fromiter((index[a] for a, _ in scored), np.int64, len(scored))
    cols = np.fromiter((index[b] for _, (b, _s) in scored), np.int64, len(scored))
    values = np.fromiter((s for _, (_b, s) in scored), np.float32, len(scored))
    solver = wals.WALS(rows, cols, values, len(ids), len(ids), dim, REGULARIZATION,
                       UNOBSERVED_WEIGHT, np.ones(len(scored), np.float32), seed)
    for _ in range(epochs):
        solver.epoch()
    return ids, solver.row_factors.numpy(), solver
