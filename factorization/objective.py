"""What WALS fits: the training target and weights derived from the stored ratings.

The stored rating r_ij (preprocess: min(0.3 · value / median, 1)) becomes a target a_ij and an
observed weight c_ij (the solver minimises Σ_O (w0 + c_ij)(a_ij − u_i·v_j)² + w0 Σ_∉O (u_i·v_j)²
+ Σ_i λ_i‖u_i‖² + Σ_j λ_j‖v_j‖², factorization/wals.py):

    rating_target "rating": a_ij = min(s · r_ij, cap),  c_ij = c_j
    rating_target "binary": a_ij = 1,                   c_ij = c_j · s · r_ij
        (Hu, Koren and Volinsky 2008: preference 1 with confidence w0 + α·r, α = s)

with s = target_scale, c_j the item's column weight (`column_weights`), and per-row
regularization λ_i = λ (reg_scaling "none") or λ · (n_i + w0 · n_other) ("frequency": n_i the
row's observed entries, n_other the other side's size; Rendle et al. 2021, "Revisiting the
Performance of iALS on Item Recommendation Benchmarks", and their reference code).

One `Objective` serves training, the trainer's fold-in, batch fold-in and the SavedModel's
`fold_in` signature, so all of them solve the same least squares.
"""
from __future__ import annotations

import dataclasses

import numpy as np

SOLVERS = ("exact", "cg")  # factorization/wals.py's row solvers (named here: no TensorFlow)
BATCH_REFERENCE_K = 128  # --batch_size / --batch_entries are per solve at this k (wals.py)


def batch_scale(k: int) -> int:
    """A batch's work and memory go as entries × k: below k=128 a batch takes 128/k times the
    --batch_size rows and --batch_entries entries (MovieLens, k=32: CG epoch 22 ms, not 31)."""
    return max(1, BATCH_REFERENCE_K // k)

COL_WEIGHT_SCHEMES = ("none", "linear", "log")
RATING_TARGETS = ("rating", "binary")
REG_SCALINGS = ("none", "frequency")


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


@dataclasses.dataclass(frozen=True)
class Objective:
    """The loss's settings (trainer flags of the same names). The defaults here are what a model
    trained before a setting existed used (model.json without the key); the trainer's flags carry
    the current defaults."""
    regularization: float = 5.0
    unobserved_weight: float = 1.0
    reg_scaling: str = "none"
    col_weights: str = "log"
    feature_wt_factor: float = 130.0
    feature_wt_exp: float = 0.1
    rating_target: str = "rating"
    target_scale: float = 1.0
    target_cap: float | None = None

    def __post_init__(self):
        if self.rating_target not in RATING_TARGETS:
            raise ValueError(f"unknown rating_target {self.rating_target!r}; "
                             f"expected one of {RATING_TARGETS}")
        if self.reg_scaling not in REG_SCALINGS:
            raise ValueError(f"unknown reg_scaling {self.reg_scaling!r}; "
                             f"expected one of {REG_SCALINGS}")
        if self.col_weights not in COL_WEIGHT_SCHEMES:
            raise ValueError(f"unknown col_weights scheme {self.col_weights!r}")

    @classmethod
    def from_settings(cls, settings) -> "Objective":
        """From argparse args or a hyperparameters dict (model.json); absent keys keep defaults
        (models trained before a setting existed used its default)."""
        get = settings.get if isinstance(settings, dict) else lambda name: getattr(settings, name, None)
        found = {f.name: get(f.name) for f in dataclasses.fields(cls)}
        return cls(**{name: value for name, value in found.items() if value is not None})

    def item_weights(self, item_counts: np.ndarray) -> np.ndarray:
        """c_j for every item, from its number of training entries."""
        return column_weights(item_counts, self.col_weights, self.feature_wt_factor,
                              self.feature_wt_exp)

    def targets(self, ratings: np.ndarray, item_weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(a, c) per entry from stored ratings and each entry's item weight c_j."""
        ratings = np.asarray(ratings, np.float32)
        if self.rating_target == "binary":
            return (np.ones_like(ratings),
                    (item_weight * np.float32(self.target_scale) * ratings).astype(np.float32))
        scaled = ratings * np.float32(self.target_scale)
        if self.target_cap is not None:
            scaled = np.minimum(scaled, np.float32(self.target_cap))
        return scaled.astype(np.float32), np.asarray(item_weight, np.float32)

    def row_regularization(self, row_lengths: np.ndarray, n_other: int) -> np.ndarray | None:
        """λ_i per row, or None when every row has the same λ (the cheaper solve)."""
        if self.reg_scaling == "none":
            return None
        scaled = self.regularization * (np.asarray(row_lengths, np.float64)
                                        + self.unobserved_weight * n_other)
        # an empty row with w0 = 0 would get λ_i = 0 (a singular system): plain λ instead
        return np.where(scaled > 0, scaled, self.regularization).astype(np.float32)
