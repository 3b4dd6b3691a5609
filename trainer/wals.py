"""Weighted alternating least squares (the objective of tf.contrib's WALSModel) in TF2.

Objective, for ratings a_ij observed at (i, j) in O, user factors U [nusers, k] and item
factors V [nitems, k]:

    L = Σ_(i,j)∈O (w0 + r_i·c_j)(a_ij − u_i·v_j)²  +  w0 Σ_(i,j)∉O (u_i·v_j)²  +  λ(‖U‖² + ‖V‖²)

w0 = unobserved_weight, λ = regularization, r_i = 1 (row weights) and c_j the column weight
of item j (`column_weights`). Writing the unobserved sum as "all pairs minus observed ones",
with V fixed every row u_i has the exact minimiser (the Gramian trick):

    (G + Σ_j∈O_i c_ij v_j v_jᵀ) u_i = Σ_j∈O_i (w0 + c_ij) a_ij v_j,    G = w0·VᵀV + λI,

where c_ij = r_i·c_j. Per half-step, G = C Cᵀ (Cholesky) is factored once and the fixed side
is whitened once, Z = V C⁻ᵀ, so a row with L entries, Z_i = its L rows of Z, S = diag(√c_ij)
and b = ((w0 + c_ij) a_ij)_j becomes

    u_i = C⁻ᵀ y_i,    y_i = (I_k + Z_iᵀ S² Z_i)⁻¹ Z_iᵀ b
                          = Z_iᵀ (b − S (I_L + S Z_i Z_iᵀ S)⁻¹ S Z_i Z_iᵀ b)    (Woodbury),

both exact. Long rows (L ≥ k) take the k×k form, short ones (most items have a handful of
ratings) the L×L form; both gather only Z (one O(k) pass per entry, the short form never
forms k×k matrices), and the observed predictions Z_i y_i come with them for the loss. The
final C⁻ᵀ is one [n_rows, k] × [k, k] matmul. Fixing U and solving for V is the same
computation on the transposed matrix, so one code path (`SideBatches` + `_solve_side`)
serves users and items. Rows are solved in padded batches bounded by a budget of rows ×
entries; nothing of size nusers × nitems is ever built. The loss is evaluated for free in
the item half-step: with the new V, each observed entry contributes (w0 + c)(a − p)² − w0·p²,
and w0·Σ_all (u·v)² = w0·⟨UᵀU, VᵀV⟩.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np
import tensorflow as tf

COL_WEIGHT_SCHEMES = ("none", "linear", "log")
MAX_GRAPH_BATCHES = 512
# Rows with L < SHORT_ROW_FRACTION·k entries use the L×L (Woodbury) form: L²k + L³/3 flops
# against Lk² + k³/3 for the k×k form, equal at L = k (0.5 to 2 measured the same on MovieLens).
SHORT_ROW_FRACTION = 1.0


def column_weights(counts: np.ndarray, scheme: str, factor: float, exponent: float) -> np.ndarray:
    """Per-item observed weight c_j from its number of ratings n_j (tensorflow-recommendation-wals).

    none: c_j = 1;  linear: c_j = factor / n_j;  log: c_j = (1 / n_j) ** exponent.
    Items without ratings get 0 (they have no observed entries anyway).
    """
    counts = np.asarray(counts, dtype=np.float64)
    inverse = np.divide(1.0, counts, out=np.zeros_like(counts), where=counts > 0)
    if scheme == "none":
        return np.ones_like(counts, dtype=np.float32)
    if scheme == "linear":
        return (factor * inverse).astype(np.float32)
    if scheme == "log":
        weights = np.zeros_like(counts)
        np.power(inverse, exponent, out=weights, where=counts > 0)
        return weights.astype(np.float32)
    raise ValueError(f"unknown col_weights scheme {scheme!r}; expected one of {COL_WEIGHT_SCHEMES}")


@dataclasses.dataclass
class SideBatches:
    """One side of the matrix (rows = users, or rows = items) cut into padded solve batches.

    Rows are sorted by length so padding stays small; each batch holds at most `max_rows`
    rows and `max_entries` padded entries (a single longer row gets a batch of its own).
    Padding entries have weight 0 and rating 0, which makes them vanish from both sides of the
    normal equations and from the loss.
    """
    n_rows: int
    row_ids: list[tf.Tensor]   # int32 [B]
    cols: list[tf.Tensor]      # int32 [B, L] column ids of the other side
    ratings: list[tf.Tensor]   # float32 [B, L]
    weights: list[tf.Tensor]   # float32 [B, L] c_ij


def plan_side(rows: np.ndarray, cols: np.ndarray, ratings: np.ndarray, weights: np.ndarray,
              n_rows: int, max_rows: int, max_entries: int) -> SideBatches:
    """Groups COO entries by row into SideBatches (vectorized apart from a loop over batches)."""
    order = np.lexsort((cols, rows))
    rows, cols, ratings, weights = rows[order], cols[order], ratings[order], weights[order]
    lengths = np.bincount(rows, minlength=n_rows)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    by_length = np.argsort(lengths, kind="stable")
    side = SideBatches(n_rows, [], [], [], [])
    begin = 0
    while begin < n_rows:
        # Greedy cut: rows are ascending in length, so the last row sets the padded width.
        widths = np.maximum(lengths[by_length[begin:begin + max_rows]], 1)
        fits = np.arange(1, widths.size + 1) * widths <= max_entries
        end = begin + max(1, int(np.argmin(fits)) if not fits.all() else widths.size)
        batch = by_length[begin:end]
        width = int(lengths[batch].max()) if batch.size else 0
        position = np.arange(width)
        valid = position[None, :] < lengths[batch][:, None]
        flat = np.where(valid, starts[batch][:, None] + position[None, :], 0)
        side.row_ids.append(tf.constant(batch, tf.int32))
        side.cols.append(tf.constant(np.where(valid, cols[flat], 0), tf.int32))
        side.ratings.append(tf.constant(np.where(valid, ratings[flat], 0), tf.float32))
        side.weights.append(tf.constant(np.where(valid, weights[flat], 0), tf.float32))
        begin = end
    return side


def _observed_loss(predicted, ratings, weights, unobserved_weight):
    """Σ over the batch's observed entries of (w0 + c)(a − p)² − w0·p² (padding adds 0)."""
    return tf.reduce_sum((unobserved_weight + weights) * tf.square(ratings - predicted)
                         - unobserved_weight * tf.square(predicted))


@tf.function(reduce_retracing=True)
def solve_long_rows(whitened, cols, ratings, weights, unobserved_weight):
    """y = (I_k + ZᵀS²Z)⁻¹ Zᵀb for a batch of rows (batched k×k Cholesky); returns (y, loss)."""
    gathered = tf.gather(whitened, cols)                               # Z_i    [B, L, k]
    scaled = gathered * tf.sqrt(weights)[..., None]                    # S Z_i
    lhs = tf.eye(tf.shape(whitened)[1]) + tf.matmul(scaled, scaled, transpose_a=True)
    rhs = tf.matmul(((unobserved_weight + weights) * ratings)[:, None, :], gathered)
    solution = tf.linalg.cholesky_solve(tf.linalg.cholesky(lhs),
                                        tf.linalg.matrix_transpose(rhs))[..., 0]
    predicted = tf.matmul(gathered, solution[..., None])[..., 0]       # Z_i y = X_i u
    return solution, _observed_loss(predicted, ratings, weights, unobserved_weight)


@tf.function(reduce_retracing=True)
def solve_short_rows(whitened, cols, ratings, weights, unobserved_weight):
    """The same y via the L×L Woodbury form: only K = Z_i Z_iᵀ and one pass over Z_i."""
    gathered = tf.gather(whitened, cols)                               # Z_i    [B, L, k]
    kernel = tf.matmul(gathered, gathered, transpose_b=True)           # K      [B, L, L]
    scale = tf.sqrt(weights)                                           # diag S [B, L]
    target = (unobserved_weight + weights) * ratings                   # b
    capacitance = tf.eye(tf.shape(cols)[1]) + scale[:, :, None] * kernel * scale[:, None, :]
    kernel_target = tf.matmul(kernel, target[..., None])[..., 0]       # K b
    correction = tf.linalg.cholesky_solve(tf.linalg.cholesky(capacitance),
                                          (scale * kernel_target)[..., None])[..., 0]
    mixed = target - scale * correction                                # y = Z_iᵀ mixed
    solution = tf.matmul(mixed[:, None, :], gathered)[:, 0, :]
    predicted = tf.matmul(kernel, mixed[..., None])[..., 0]            # Z_i y = K mixed
    return solution, _observed_loss(predicted, ratings, weights, unobserved_weight)


def _solve_side(fixed: tf.Tensor, side: SideBatches, regularization: float,
                unobserved_weight: float) -> tuple[tf.Tensor, tf.Tensor]:
    """One half-step: new factors for every row of `side` given the other side's `fixed`."""
    k = fixed.shape[1]
    gramian = unobserved_weight * tf.matmul(fixed, fixed, transpose_a=True) \
        + regularization * tf.eye(k, dtype=fixed.dtype)
    chol_inv = tf.linalg.triangular_solve(tf.linalg.cholesky(gramian), tf.eye(k))  # C⁻¹
    whitened = tf.matmul(fixed, chol_inv, transpose_b=True)                          # Z
    solved, observed = [], []
    for cols, ratings, weights in zip(side.cols, side.ratings, side.weights):
        solve = solve_short_rows if cols.shape[1] < SHORT_ROW_FRACTION * k else solve_long_rows
        solution, loss = solve(whitened, cols, ratings, weights, unobserved_weight)
        solved.append(solution)
        observed.append(loss)
    row_ids = tf.concat(side.row_ids, axis=0)[:, None]
    whitened_rows = tf.scatter_nd(row_ids, tf.concat(solved, axis=0), [side.n_rows, k])
    return tf.matmul(whitened_rows, chol_inv), tf.add_n(observed)                 # u = C⁻ᵀ y


def initial_factors(n_rows: int, k: int, seed: int, stream: int) -> tf.Tensor:
    """Seeded N(0, 1/k) factors; stateless so the same seed always gives the same start."""
    return tf.random.stateless_normal([n_rows, k], seed=[seed, stream]) / np.sqrt(k)


class WALS:
    """Exact WALS on an in-memory COO matrix. `epoch()` = solve users, then items; returns L."""

    def __init__(self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray,
                 nusers: int, nitems: int, n_embeds: int, regularization: float,
                 unobserved_weight: float, entry_weights: np.ndarray, seed: int,
                 max_rows: int = 1024, max_entries: int = 4096):
        if regularization <= 0:
            raise ValueError("regularization must be > 0 so every per-row system is solvable")
        if unobserved_weight < 0 or (entry_weights < 0).any():
            raise ValueError("weights must be >= 0")
        self.regularization = float(regularization)
        self.unobserved_weight = float(unobserved_weight)
        self.row_factors = tf.Variable(tf.zeros([nusers, n_embeds]), name="row_factors")
        self.col_factors = tf.Variable(initial_factors(nitems, n_embeds, seed, 1),
                                       name="col_factors")
        plan = functools.partial(plan_side, ratings=ratings, weights=entry_weights,
                                 max_rows=max_rows, max_entries=max_entries)
        self.user_side = plan(users, items, n_rows=nusers)
        self.item_side = plan(items, users, n_rows=nitems)
        # One graph per sweep lets TF run independent batches in parallel and skips eager
        # dispatch (~2x faster on small data); the graph unrolls the batch loop, so very large
        # inputs (many batches) run eagerly instead of paying a long trace.
        n_batches = len(self.user_side.cols) + len(self.item_side.cols)
        self._epoch = tf.function(self._sweep) if n_batches <= MAX_GRAPH_BATCHES else self._sweep

    def epoch(self) -> float:
        """One full sweep; returns the objective L after it (from the item half-step)."""
        return float(self._epoch())

    def _sweep(self) -> tf.Tensor:
        new_rows, _ = _solve_side(self.col_factors, self.user_side, self.regularization,
                                  self.unobserved_weight)
        self.row_factors.assign(new_rows)
        new_cols, observed = _solve_side(self.row_factors, self.item_side,
                                         self.regularization, self.unobserved_weight)
        self.col_factors.assign(new_cols)
        return self.loss_from_observed(observed)

    def loss_from_observed(self, observed: tf.Tensor) -> tf.Tensor:
        u, v = self.row_factors, self.col_factors
        all_pairs = tf.reduce_sum(tf.matmul(u, u, transpose_a=True)
                                  * tf.matmul(v, v, transpose_a=True))
        norms = tf.reduce_sum(tf.square(u)) + tf.reduce_sum(tf.square(v))
        return observed + self.unobserved_weight * all_pairs + self.regularization * norms
