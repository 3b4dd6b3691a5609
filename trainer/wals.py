"""Weighted alternating least squares (the objective of tf.contrib's WALSModel) in TF2.

Objective, for ratings a_ij observed at (i, j) in O, user factors U [nusers, k] and item
factors V [nitems, k]:

    L = Σ_(i,j)∈O (w0 + c_ij)(a_ij − u_i·v_j)²  +  w0 Σ_(i,j)∉O (u_i·v_j)²
        +  Σ_i λ_i‖u_i‖² + Σ_j λ_j‖v_j‖²

w0 = unobserved_weight, c_ij the observed weight and a_ij the target (trainer/objective.py
derives both from the stored ratings), λ_i = λ = regularization, or scaled per row by its
frequency. Writing the unobserved sum as "all pairs minus observed ones", with V fixed every
row u_i has the exact minimiser (the Gramian trick):

    (w0·VᵀV + λ_i I + Σ_j∈O_i c_ij v_j v_jᵀ) u_i = Σ_j∈O_i (w0 + c_ij) a_ij v_j.

Per half-step, w0·VᵀV = Q diag(e) Qᵀ is diagonalised once (`whiten`; k×k) and the fixed side
rotated once, Z = V Q; with D_i = diag(e + λ_i) the row's Gramian part is Q D_i Qᵀ, so a row with
L entries, Z_i = its L rows of Z scaled by D_i^-1/2, S = diag(√c_ij) and b = ((w0 + c_ij) a_ij)_j
becomes

    u_i = Q D_i^-1/2 y_i,    y_i = (I_k + Z_iᵀ S² Z_i)⁻¹ Z_iᵀ b
                                 = Z_iᵀ (b − S (I_L + S Z_i Z_iᵀ S)⁻¹ S Z_i Z_iᵀ b)   (Woodbury),

both exact. Long rows (L ≥ k) take the k×k form, short ones (most items have a handful of
ratings) the L×L form; both gather only Z (one O(k) pass per entry, the short form never
forms k×k matrices), and the observed predictions Z_i y_i come with them for the loss. With one
λ for all rows, Z is scaled once; the final Q is one [n_rows, k] × [k, k] matmul. Fixing U and solving for V is the same
computation on the transposed matrix, so one code path (`SideBatches` + `solve_side`)
serves users and items. Rows are solved in padded batches bounded by a budget of rows ×
entries; nothing of size nusers × nitems is ever built. The loss is evaluated for free in
the item half-step: with the new V, each observed entry contributes (w0 + c)(a − p)² − w0·p²,
and w0·Σ_all (u·v)² = w0·⟨UᵀU, VᵀV⟩.

solver="cg" (optional; the default stays exact) replaces each row's solve by `cg_steps`
conjugate-gradient steps on (I_k + Z_iᵀ S² Z_i) y_i = Z_iᵀ b, warm-started from the previous
factors (y = D_i^1/2 Qᵀu), like `implicit`'s ALS. Working in the whitened basis is CG preconditioned by
the exact Gramian: a step costs two passes over Z_i (no k×k matrix per row). On MovieLens, 3
steps land within ~1e-6 (relative) of the exact solution for the median row, ~5e-4 for the worst
one; 6 steps reach float32 precision. Same batches, same code path otherwise.

Speed (MovieLens small, 2 cores, benchmarks/wals_vs_implicit.py): the exact epoch is bound by
batched k×k work, ~1.9 G multiply-adds at k=128 against ~0.6 G for 3 CG steps, so it cannot
match implicit's CG there; CG does (≈0.8× at k=32, ≈1.0× at k=128). Measured and not kept:
XLA (its CPU Cholesky is ~5× slower; CG alone gains nothing for 20 s of compiling), fewer and
larger exact batches (no gain), tf.linalg.solve instead of Cholesky (slower), elementwise
products instead of matvec matmuls in CG (slower). Faster but process-wide, so left to the
caller: TF intra-op threads = 1 (exact −20% at k=32, −9% at k=128).
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np
import tensorflow as tf

from trainer.objective import COL_WEIGHT_SCHEMES, Objective, column_weights  # noqa: F401 (re-exported)

SOLVERS = ("exact", "cg")
CG_LARGE_BATCH_MIN_K = 64
MAX_GRAPH_BATCHES = 512
# Rows with L < SHORT_ROW_FRACTION·k entries use the L×L (Woodbury) form: L²k + L³/3 flops
# against Lk² + k³/3 for the k×k form, equal at L = k (0.5 to 2 measured the same on MovieLens).
SHORT_ROW_FRACTION = 1.0


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
    # int32 [n_rows]: where row i lands in the batches' concatenated output (a gather back to
    # row order; cheaper than scatter_nd, which runs single-threaded on CPU).
    positions: tf.Tensor | None = None


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
    side.positions = tf.constant(np.argsort(by_length, kind="stable"), tf.int32)
    return side


def _observed_loss(predicted, ratings, weights, unobserved_weight):
    """Σ over the batch's observed entries of (w0 + c)(a − p)² − w0·p² (padding adds 0)."""
    return tf.reduce_sum((unobserved_weight + weights) * tf.square(ratings - predicted)
                         - unobserved_weight * tf.square(predicted))


def _gather_rows(whitened, cols, row_scale):
    """Z_i for a batch: the rows' entries of Z, times each row's own D_i^-1/2 when λ varies."""
    gathered = tf.gather(whitened, cols)
    return gathered if row_scale is None else gathered * row_scale[:, None, :]


@tf.function(reduce_retracing=True)
def solve_long_rows(whitened, cols, ratings, weights, unobserved_weight, row_scale=None):
    """y = (I_k + ZᵀS²Z)⁻¹ Zᵀb for a batch of rows (batched k×k Cholesky); returns (y, loss)."""
    gathered = _gather_rows(whitened, cols, row_scale)                 # Z_i    [B, L, k]
    scaled = gathered * tf.sqrt(weights)[..., None]                    # S Z_i
    lhs = tf.eye(tf.shape(whitened)[1]) + tf.matmul(scaled, scaled, transpose_a=True)
    rhs = tf.matmul(((unobserved_weight + weights) * ratings)[:, None, :], gathered)
    solution = tf.linalg.cholesky_solve(tf.linalg.cholesky(lhs),
                                        tf.linalg.matrix_transpose(rhs))[..., 0]
    predicted = tf.matmul(gathered, solution[..., None])[..., 0]       # Z_i y = X_i u
    return solution, _observed_loss(predicted, ratings, weights, unobserved_weight)


@tf.function(reduce_retracing=True)
def solve_short_rows(whitened, cols, ratings, weights, unobserved_weight, row_scale=None):
    """The same y via the L×L Woodbury form: only K = Z_i Z_iᵀ and one pass over Z_i."""
    gathered = _gather_rows(whitened, cols, row_scale)                 # Z_i    [B, L, k]
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


@tf.function(reduce_retracing=True)
def solve_rows_cg(whitened, cols, ratings, weights, unobserved_weight, start, steps: int,
                  row_scale=None):
    """`steps` CG steps on (I_k + ZᵀS²Z) y = Zᵀb per row from y = start; returns (y, loss).

    In the whitened basis A_i = I + Z_iᵀS²Z_i, so a step needs two passes over Z_i and no k×k
    matrix (CG preconditioned by the Gramian, warm-started like implicit's).
    """
    gathered = _gather_rows(whitened, cols, row_scale)                 # Z_i    [B, L, k]

    def sum_entries(per_entry):                                        # Z_iᵀ per_entry
        return tf.matmul(per_entry[:, None, :], gathered)[:, 0, :]

    def along(y):                                                      # Z_i y
        return tf.matmul(gathered, y[..., None])[..., 0]

    solution, predicted = start, along(start)                          # y, Z_i y
    residual = sum_entries((unobserved_weight + weights) * ratings - weights * predicted) - start
    direction, norm = residual, tf.reduce_sum(tf.square(residual), axis=1)
    for step in range(steps):
        direction_along = along(direction)
        a_direction = direction + sum_entries(weights * direction_along)
        alpha = tf.math.divide_no_nan(norm, tf.reduce_sum(direction * a_direction, axis=1))
        solution += alpha[:, None] * direction
        predicted += alpha[:, None] * direction_along                  # Z_i y, without a pass
        if step + 1 < steps:  # the last step needs no new direction
            residual -= alpha[:, None] * a_direction
            new_norm = tf.reduce_sum(tf.square(residual), axis=1)
            direction = residual + tf.math.divide_no_nan(new_norm, norm)[:, None] * direction
            norm = new_norm
    return solution, _observed_loss(predicted, ratings, weights, unobserved_weight)


@dataclasses.dataclass
class Whitening:
    """The fixed side of a half-step, rotated and scaled once: w0·VᵀV = Q diag(e) Qᵀ, Z = V Q,
    and with one λ for every row also Z·D^-1/2 (D = e + λ), so each row's system is I + ZᵢᵀS²Zᵢ."""
    basis: tf.Tensor                    # Q [k, k]
    whitened: tf.Tensor                 # Z (times D^-1/2 when uniform) [n_fixed, k]
    eigenvalues: tf.Tensor              # e [k]
    uniform_scale: tf.Tensor | None     # D^-1/2 [k] with one λ, else None (per row)

    def row_scale(self, row_regularization: tf.Tensor | None) -> tf.Tensor | None:
        """D_i^-1/2 [B, k] for rows with their own λ_i; None when λ is uniform."""
        if row_regularization is None:
            return None
        return tf.math.rsqrt(self.eigenvalues[None, :] + row_regularization[:, None])


def whiten(fixed: tf.Tensor, unobserved_weight: float, regularization: float | None) -> Whitening:
    """Whitening of `fixed` for λ = `regularization`, or for per-row λ_i (regularization=None)."""
    eigenvalues, basis = tf.linalg.eigh(
        unobserved_weight * tf.matmul(fixed, fixed, transpose_a=True))
    eigenvalues = tf.maximum(eigenvalues, 0.0)   # a PSD matrix's rounding below zero
    rotated = tf.matmul(fixed, basis)
    if regularization is None:
        return Whitening(basis, rotated, eigenvalues, None)
    scale = tf.math.rsqrt(eigenvalues + regularization)
    return Whitening(basis, rotated * scale[None, :], eigenvalues, scale)


def solve_rows(white: Whitening, cols, ratings, weights, unobserved_weight: float,
               row_regularization=None, previous=None, cg_steps: int = 0, short: bool = False):
    """Factors (in the rotated basis, u·Q) and loss of one padded batch of rows.

    u_i = Q D_i^-1/2 y_i; CG warm-starts from y = D_i^1/2 Qᵀ u (`previous`: the rows' u·Q).
    """
    row_scale = white.row_scale(row_regularization)
    out_scale = white.uniform_scale[None, :] if row_scale is None else row_scale
    if cg_steps:
        solution, loss = solve_rows_cg(white.whitened, cols, ratings, weights, unobserved_weight,
                                       previous / out_scale, cg_steps, row_scale)
    else:
        solve = solve_short_rows if short else solve_long_rows
        solution, loss = solve(white.whitened, cols, ratings, weights, unobserved_weight,
                               row_scale)
    return solution * out_scale, loss


def solve_side(fixed: tf.Tensor, side: SideBatches, regularization: float,
                unobserved_weight: float, previous: tf.Tensor | None = None,
                cg_steps: int = 0, row_regularization: tf.Tensor | None = None
                ) -> tuple[tf.Tensor, tf.Tensor]:
    """One half-step: new factors for every row of `side` given the other side's `fixed`.

    Exact unless cg_steps > 0: then `cg_steps` CG steps per row from `previous`.
    `row_regularization` [n_rows] (λ_i per row) replaces `regularization` when given.
    """
    k = fixed.shape[1]
    white = whiten(fixed, unobserved_weight,
                   None if row_regularization is not None else regularization)
    rotated_previous = tf.matmul(previous, white.basis) if cg_steps else None       # u·Q
    solved, observed = [], []
    for row_ids, cols, ratings, weights in zip(side.row_ids, side.cols, side.ratings,
                                               side.weights):
        solution, loss = solve_rows(
            white, cols, ratings, weights, unobserved_weight,
            None if row_regularization is None else tf.gather(row_regularization, row_ids),
            tf.gather(rotated_previous, row_ids) if cg_steps else None, cg_steps,
            short=cols.shape[1] < SHORT_ROW_FRACTION * k)
        solved.append(solution)
        observed.append(loss)
    if not solved:  # a side without rows (e.g. nobody to fold in)
        return tf.zeros([0, k], fixed.dtype), tf.constant(0.0, fixed.dtype)
    rotated_rows = tf.gather(tf.concat(solved, axis=0), side.positions)
    return tf.matmul(rotated_rows, white.basis, transpose_b=True), tf.add_n(observed)  # u = Q·(uQ)


def initial_factors(n_rows: int, k: int, seed: int, stream: int, scale: float = 1.0) -> tf.Tensor:
    """Seeded N(0, (scale/√k)²) factors; stateless so the same seed always gives the same start."""
    return tf.random.stateless_normal([n_rows, k], seed=[seed, stream]) * (scale / np.sqrt(k))


class WALS:
    """WALS on an in-memory COO matrix. `epoch()` = solve users, then items; returns L.

    solver="exact" (default) solves every row exactly; "cg" takes `cg_steps` warm-started
    conjugate-gradient steps per row instead (approximate, cheaper at large k).
    """

    def __init__(self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray,
                 nusers: int, nitems: int, n_embeds: int, regularization: float,
                 unobserved_weight: float, entry_weights: np.ndarray, seed: int,
                 max_rows: int = 1024, max_entries: int = 4096, solver: str = "exact",
                 cg_steps: int = 3, row_regularization: tuple | None = None,
                 init_scale: float = 1.0, initial: tuple | None = None):
        """row_regularization: (λ per user, λ per item) replacing `regularization` (frequency
        scaling, trainer/objective.py). initial: (row factors, col factors) to start from (warm
        start) instead of zeros and seeded N(0, (init_scale/√k)²) item factors."""
        if solver not in SOLVERS:
            raise ValueError(f"unknown solver {solver!r}; expected one of {SOLVERS}")
        if cg_steps < 1:
            raise ValueError("cg_steps must be >= 1")
        if regularization <= 0:
            raise ValueError("regularization must be > 0 so every per-row system is solvable")
        if unobserved_weight < 0 or (entry_weights < 0).any():
            raise ValueError("weights must be >= 0")
        self.regularization = float(regularization)
        self.unobserved_weight = float(unobserved_weight)
        if initial is None:
            initial = (tf.zeros([nusers, n_embeds]),
                       initial_factors(nitems, n_embeds, seed, 1, init_scale))
        self.row_factors = tf.Variable(initial[0], name="row_factors", dtype=tf.float32)
        self.col_factors = tf.Variable(initial[1], name="col_factors", dtype=tf.float32)
        self.row_regularization = (None if row_regularization is None else
                                   tuple(tf.constant(r, tf.float32) for r in row_regularization))
        self.cg_steps = int(cg_steps) if solver == "cg" else 0
        # CG keeps no k×k or L×L system per row, so in the same memory its batches can take
        # twice the rows and entries: measured 10-17% faster at k=128 on MovieLens, but ~10%
        # slower at k=32 (there, more batches in flight parallelise better), hence the bound.
        scale = 2 if self.cg_steps and n_embeds >= CG_LARGE_BATCH_MIN_K else 1
        plan = functools.partial(plan_side, ratings=ratings, weights=entry_weights,
                                 max_rows=scale * max_rows, max_entries=scale * max_entries)
        self.user_side = plan(users, items, n_rows=nusers)
        self.item_side = plan(items, users, n_rows=nitems)
        # One graph per sweep lets TF run independent batches in parallel and skips eager
        # dispatch (~2x faster on small data); the graph unrolls the batch loop, so very large
        # inputs (many batches) run eagerly instead of paying a long trace.
        n_batches = len(self.user_side.cols) + len(self.item_side.cols)
        self._epoch = tf.function(self._sweep) if n_batches <= MAX_GRAPH_BATCHES else self._sweep

    @classmethod
    def from_settings(cls, users: np.ndarray, items: np.ndarray, ratings: np.ndarray,
                      nusers: int, nitems: int, settings, initial: tuple | None = None) -> "WALS":
        """The solver the trainer flags describe (argparse args or a hyperparameters dict), on
        stored ratings: targets, weights and per-row λ come from `Objective`."""
        get = settings.get if isinstance(settings, dict) else lambda name: getattr(settings, name)
        loss = Objective.from_settings(settings)
        item_weight = loss.item_weights(np.bincount(items, minlength=nitems))[items]
        targets, weights = loss.targets(ratings, item_weight)
        row_regularization = None
        if loss.reg_scaling != "none":
            row_regularization = (
                loss.row_regularization(np.bincount(users, minlength=nusers), nitems),
                loss.row_regularization(np.bincount(items, minlength=nitems), nusers))
        return cls(users, items, targets, nusers, nitems, int(get("n_embeds")),
                   loss.regularization, loss.unobserved_weight, weights, int(get("seed")),
                   max_rows=int(get("batch_size")), max_entries=int(get("batch_entries")),
                   solver=get("solver"), cg_steps=int(get("cg_steps")),
                   row_regularization=row_regularization,
                   init_scale=float(get("init_scale") or 1.0), initial=initial)

    def epoch(self) -> float:
        """One full sweep; returns the objective L after it (from the item half-step)."""
        return float(self._epoch())

    def _sweep(self) -> tf.Tensor:
        self.row_factors.assign(self._half_step(self.col_factors, self.row_factors,
                                                self.user_side, 0)[0])
        new_cols, observed = self._half_step(self.row_factors, self.col_factors,
                                             self.item_side, 1)
        self.col_factors.assign(new_cols)
        return self.loss_from_observed(observed)

    def _half_step(self, fixed, previous, side, which: int) -> tuple[tf.Tensor, tf.Tensor]:
        return solve_side(fixed, side, self.regularization, self.unobserved_weight,
                           previous, self.cg_steps,
                           None if self.row_regularization is None else
                           self.row_regularization[which])

    def loss_from_observed(self, observed: tf.Tensor) -> tf.Tensor:
        u, v = self.row_factors, self.col_factors
        row_gram, col_gram = (tf.matmul(u, u, transpose_a=True),
                              tf.matmul(v, v, transpose_a=True))
        all_pairs = tf.reduce_sum(row_gram * col_gram)                 # Σ_all (u·v)²
        if self.row_regularization is None:                            # λ(‖U‖² + ‖V‖²), no pass
            penalty = self.regularization * (tf.linalg.trace(row_gram) + tf.linalg.trace(col_gram))
        else:                                                          # Σ λ_i ‖u_i‖² + Σ λ_j ‖v_j‖²
            penalty = sum(tf.reduce_sum(reg * tf.reduce_sum(tf.square(f), axis=1))
                          for reg, f in zip(self.row_regularization, (u, v)))
        return observed + self.unobserved_weight * all_pairs + penalty
