"""Weighted alternating least squares (the objective of tf.contrib's WALSModel) in TF2.

Objective, for ratings a_ij observed at (i, j) in O, user factors U [nusers, k] and item
factors V [nitems, k]:

    L = Σ_(i,j)∈O (w0 + c_ij)(a_ij − u_i·v_j)²  +  w0 Σ_(i,j)∉O (u_i·v_j)²
        +  Σ_i λ_i‖u_i‖² + Σ_j λ_j‖v_j‖²

w0 = unobserved_weight, c_ij the observed weight and a_ij the target (factorization/objective.py
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
entries (rows sorted by length, so padding stays small), packed back to back into a few flat
tensors; each half-step is one in-graph `tf.while_loop` over them (one body traced once whatever
the number of batches, up to PARALLEL_BATCHES batches in flight, no Python per batch).
Nothing of size nusers × nitems is ever built. The loss is evaluated for free in
the item half-step: with the new V, each observed entry contributes (w0 + c)(a − p)² − w0·p²,
and w0·Σ_all (u·v)² = w0·⟨UᵀU, VᵀV⟩.

solver="cg" (optional; the default stays exact) replaces each row's solve by `cg_steps`
conjugate-gradient steps on (I_k + Z_iᵀ S² Z_i) y_i = Z_iᵀ b, warm-started from the previous
factors (y = D_i^1/2 Qᵀu), like `implicit`'s ALS. Working in the whitened basis is CG preconditioned by
the exact Gramian: a step costs two passes over Z_i (no k×k matrix per row). On MovieLens, 3
steps land within ~1e-6 (relative) of the exact solution for the median row, ~5e-4 for the worst
one; 6 steps reach float32 precision. Same batches, same code path otherwise.

Speed: benchmarks/trainer_speed.py against implicit (README "Benchmarks" has today's figures).
The exact epoch is bound by batched k×k work (~1.9 G multiply-adds at k=128 on MovieLens against
~0.6 G for 3 CG steps). Measured and not kept: XLA (its CPU Cholesky is ~5× slower; CG alone
gains nothing for 20 s of compiling), tf.linalg.solve instead of Cholesky (slower), elementwise
products instead of matvec matmuls in CG (slower), one unrolled graph per sweep (tracing grew
with the number of batches: 42-52 s at 2M interactions). Faster but process-wide, so left to
the caller: TF intra-op threads = 1 (exact −20% at k=32, −9% at k=128, before the in-graph loop).
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np
import tensorflow as tf

from factorization.objective import (COL_WEIGHT_SCHEMES, SOLVERS, Objective,  # noqa: F401
                               batch_scale, column_weights)

PARALLEL_BATCHES = 8
# Rows with L < SHORT_ROW_FRACTION·k entries use the L×L (Woodbury) form: L²k + L³/3 flops
# against Lk² + k³/3 for the k×k form, equal at L = k (0.5 to 2 measured the same on MovieLens).
SHORT_ROW_FRACTION = 1.0


@dataclasses.dataclass
class SideBatches:
    """One side of the matrix (rows = users, or rows = items) cut into padded solve batches.

    Rows are sorted by length so padding stays small; each batch holds at most `max_rows`
    rows and `max_entries` padded entries (a single longer row gets a batch of its own).
    Padding entries have weight 0 and rating 0, which makes them vanish from both sides of the
    normal equations and from the loss. The batches are packed back to back into flat tensors
    (batch b is entries[entry_starts[b]:entry_starts[b+1]] reshaped [rows_b, widths[b]]), so
    a whole side is a handful of tensors and one in-graph loop, whatever the number of batches.
    """
    n_rows: int
    row_ids: tf.Tensor        # int32 [n_rows] rows in batch order
    cols: tf.Tensor           # int32 [padded entries] column ids of the other side
    ratings: tf.Tensor        # float32 [padded entries]
    weights: tf.Tensor        # float32 [padded entries] c_ij
    row_starts: tf.Tensor     # int32 [n_batches + 1] into row_ids
    entry_starts: tf.Tensor   # int64 [n_batches + 1] into cols / ratings / weights
    widths: tf.Tensor         # int32 [n_batches] padded row length per batch
    # int32 [n_rows]: where row i lands in the batches' concatenated output (a gather back to
    # row order; cheaper than scatter_nd, which runs single-threaded on CPU).
    positions: tf.Tensor

    @property
    def n_batches(self) -> int:
        return int(self.widths.shape[0])

    def tensors(self) -> tuple:
        return (self.row_ids, self.cols, self.ratings, self.weights, self.row_starts,
                self.entry_starts, self.widths, self.positions)


def plan_side(rows: np.ndarray, cols: np.ndarray, ratings: np.ndarray, weights: np.ndarray,
              n_rows: int, max_rows: int, max_entries: int) -> SideBatches:
    """Groups COO entries by row into SideBatches (vectorized apart from a loop over batches)."""
    order = np.lexsort((cols, rows))
    lengths = np.bincount(rows, minlength=n_rows)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    by_length = np.argsort(lengths, kind="stable")
    sorted_lengths = lengths[by_length]
    cuts, begin = [0], 0
    while begin < n_rows:
        # Greedy cut: rows are ascending in length, so the last row sets the padded width.
        widths = np.maximum(sorted_lengths[begin:begin + max_rows], 1)
        fits = np.arange(1, widths.size + 1) * widths <= max_entries
        begin += max(1, int(np.argmin(fits)) if not fits.all() else widths.size)
        cuts.append(begin)
    cuts = np.asarray(cuts)
    batch_widths = sorted_lengths[np.maximum(cuts[1:] - 1, 0)] if n_rows else cuts[:0]
    entry_starts = np.concatenate([[0], np.cumsum(np.diff(cuts) * batch_widths)])  # int64
    # Every padded slot: its row (in batch order) and position within the row; int32 and freed
    # as soon as used (this is the planning's memory peak: ~4 arrays of padded-entry size).
    row_width = np.repeat(batch_widths, np.diff(cuts)).astype(np.int32)  # padded width per row
    slot_row = np.repeat(np.arange(n_rows, dtype=np.int32), row_width)
    slot_pos = np.arange(slot_row.size, dtype=np.int64)
    slot_pos -= np.repeat(np.cumsum(row_width, dtype=np.int64) - row_width, row_width)
    valid = slot_pos < sorted_lengths[slot_row]
    source = starts[by_length[slot_row]]
    del slot_row
    source += slot_pos
    del slot_pos
    source = order[np.where(valid, source, 0)]

    def packed(values, dtype):
        return tf.constant(np.where(valid, values[source], 0).astype(dtype))

    return SideBatches(
        n_rows, tf.constant(by_length, tf.int32), packed(cols, np.int32),
        packed(ratings, np.float32), packed(weights, np.float32),
        tf.constant(cuts, tf.int32), tf.constant(entry_starts, tf.int64),  # > 2³¹ entries ok
        tf.constant(batch_widths, tf.int32),
        tf.constant(np.argsort(by_length, kind="stable"), tf.int32))


def _observed_loss(predicted, ratings, weights, unobserved_weight):
    """Σ over the batch's observed entries of (w0 + c)(a − p)² − w0·p² (padding adds 0)."""
    return tf.reduce_sum((unobserved_weight + weights) * tf.square(ratings - predicted)
                         - unobserved_weight * tf.square(predicted))


def solve_long_rows(whitened, cols, ratings, weights, unobserved_weight, row_scale=None):
    """y = (I_k + ZᵀS²Z)⁻¹ Zᵀb for a batch of rows (batched k×k Cholesky); returns (y, loss).

    A row's own D_i^-1/2 (`row_scale`) scales the k×k system and the k-vectors, not the
    [B, L, k] gathered entries (L ≥ k here, so that is the cheaper side)."""
    gathered = tf.gather(whitened, cols)                               # Z_i    [B, L, k]
    scaled = gathered * tf.sqrt(weights)[..., None]                    # S Z_i
    gram = tf.matmul(scaled, scaled, transpose_a=True)                 # ZᵀS²Z  [B, k, k]
    rhs = tf.matmul(((unobserved_weight + weights) * ratings)[:, None, :], gathered)[:, 0, :]
    if row_scale is not None:
        gram *= row_scale[:, :, None] * row_scale[:, None, :]
        rhs *= row_scale
    lhs = tf.eye(tf.shape(whitened)[1]) + gram
    solution = tf.linalg.cholesky_solve(tf.linalg.cholesky(lhs), rhs[..., None])[..., 0]
    along = solution if row_scale is None else solution * row_scale
    predicted = tf.matmul(gathered, along[..., None])[..., 0]          # Z_i y = X_i u
    return solution, _observed_loss(predicted, ratings, weights, unobserved_weight)


def solve_short_rows(whitened, cols, ratings, weights, unobserved_weight, row_scale=None):
    """The same y via the L×L Woodbury form: only K = Z_i Z_iᵀ and one pass over Z_i."""
    gathered = tf.gather(whitened, cols)                               # Z_i    [B, L, k]
    if row_scale is not None:
        gathered *= row_scale[:, None, :]
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


def solve_rows_cg(whitened, cols, ratings, weights, unobserved_weight, start, steps: int,
                  row_scale=None):
    """`steps` CG steps on (I_k + ZᵀS²Z) y = Zᵀb per row from y = start; returns (y, loss).

    In the whitened basis A_i = I + Z_iᵀS²Z_i, so a step needs two passes over Z_i and no k×k
    matrix (CG preconditioned by the Gramian, warm-started like implicit's). A row's own
    D_i^-1/2 scales the k-vectors on the way in and out, never the [B, L, k] entries.
    """
    gathered = tf.gather(whitened, cols)                               # unscaled Z_i [B, L, k]

    def sum_entries(per_entry):                                        # Z_iᵀ per_entry
        out = tf.matmul(per_entry[:, None, :], gathered)[:, 0, :]
        return out if row_scale is None else out * row_scale

    def along(y):                                                      # Z_i y
        y = y if row_scale is None else y * row_scale
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
    if side.n_batches == 0:  # a side without rows (e.g. nobody to fold in)
        return tf.zeros([0, k], fixed.dtype), tf.constant(0.0, fixed.dtype)

    def solve_batch(b, observed, solved):
        rows = side.row_ids[side.row_starts[b]:side.row_starts[b + 1]]
        entries = slice(side.entry_starts[b], side.entry_starts[b + 1])
        shape = tf.stack([tf.size(rows), side.widths[b]])
        cols, ratings, weights = (tf.reshape(packed[entries], shape)
                                  for packed in (side.cols, side.ratings, side.weights))

        def solve(short: bool):
            return lambda: solve_rows(
                white, cols, ratings, weights, unobserved_weight,
                None if row_regularization is None else tf.gather(row_regularization, rows),
                tf.gather(rotated_previous, rows) if cg_steps else None, cg_steps, short)

        if cg_steps:
            solution, loss = solve(False)()
        else:
            short = tf.cast(side.widths[b], tf.float32) < SHORT_ROW_FRACTION * k
            solution, loss = tf.cond(short, solve(True), solve(False))
        return b + 1, observed + loss, solved.write(b, solution)

    # One loop in the graph (traced once, whatever the number of batches); the executor runs
    # up to PARALLEL_BATCHES independent batches at a time.
    solved = tf.TensorArray(fixed.dtype, size=side.n_batches, infer_shape=False,
                            element_shape=tf.TensorShape([None, k]))
    _, observed, solved = tf.while_loop(
        lambda b, *_: b < side.n_batches, solve_batch,
        (tf.constant(0), tf.constant(0.0, fixed.dtype), solved),
        parallel_iterations=PARALLEL_BATCHES)
    rotated_rows = tf.gather(solved.concat(), side.positions)
    return tf.matmul(rotated_rows, white.basis, transpose_b=True), observed  # u = Q·(uQ)


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
        scaling, factorization/objective.py). initial: (row factors, col factors) to start from (warm
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
        plan = functools.partial(plan_side, ratings=ratings, weights=entry_weights,
                                 max_rows=max_rows, max_entries=max_entries)
        self.user_side = plan(users, items, n_rows=nusers)
        self.item_side = plan(items, users, n_rows=nitems)
        # One graph per sweep: each side is one in-graph loop over its batches, so the trace
        # costs the same for any data size and no Python runs per batch.
        self._epoch = tf.function(self._sweep, autograph=False)

    @classmethod
    def from_settings(cls, users: np.ndarray, items: np.ndarray, ratings: np.ndarray,
                      nusers: int, nitems: int, settings, initial: tuple | None = None) -> "WALS":
        """The solver the trainer flags describe (argparse args or a hyperparameters dict), on
        stored ratings: targets, weights and per-row λ come from `Objective`."""
        get = settings.get if isinstance(settings, dict) else lambda name: getattr(settings, name)
        loss = Objective.from_settings(settings)
        scale = batch_scale(int(get("n_embeds")))
        item_weight = loss.item_weights(np.bincount(items, minlength=nitems))[items]
        targets, weights = loss.targets(ratings, item_weight)
        row_regularization = None
        if loss.reg_scaling != "none":
            row_regularization = (
                loss.row_regularization(np.bincount(users, minlength=nusers), nitems),
                loss.row_regularization(np.bincount(items, minlength=nitems), nusers))
        return cls(users, items, targets, nusers, nitems, int(get("n_embeds")),
                   loss.regularization, loss.unobserved_weight, weights, int(get("seed")),
                   max_rows=scale * int(get("batch_size")),
                   max_entries=scale * int(get("batch_entries")),
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
