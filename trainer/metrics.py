"""Held-out evaluation: top-k ranking metrics, RMSE, coverage, and a popularity baseline.

Every recommender is scored through one function, `evaluate(score_users, ...)`, where
`score_users(user_ids) -> float32 [len(user_ids), nitems]` gives scores for a block of users,
so WALS, `implicit` (benchmark) and popularity are ranked identically. Users are processed in
blocks so memory is bounded by block × nitems. For each user with at least one held-out item,
training ("seen") items are excluded, the top k remaining items are taken, and with
hit_r = 1 if the item at rank r (0-based) is held out, T the held-out set:

    precision@k = Σ hit_r / k                recall@k = Σ hit_r / |T|
    AP@k        = Σ_r hit_r · precision@(r+1) / min(k, |T|)
    NDCG@k      = Σ_r hit_r / log2(r + 2)  /  Σ_{r < min(k, |T|)} 1 / log2(r + 2)

(the definitions of `implicit.evaluation.ranking_metrics_at_k` for MAP and NDCG), each averaged
over evaluated users. Catalog coverage = distinct recommended items / nitems. RMSE is over the
held-out ratings.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from stagekit.progress import Progress


ScoreFn = Callable[[np.ndarray], np.ndarray]
RANKING_METRICS = ("ndcg", "map", "recall", "precision")  # each @k, from `evaluate`
MAX_BLOCK_SCORES = 1 << 24  # users per block shrink so a block's score matrix stays ~128 MB


def split_holdout(users: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of held-out entries: a seeded share of each user's interactions.

    A user with n interactions gives round(fraction · n) of them, but always keeps at least
    one for training (users with one interaction are never evaluated).
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"eval fraction must be in [0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(users.size), users))          # shuffled within each user
    counts = np.bincount(users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(users.size, np.int64)
    rank[order] = np.arange(users.size) - starts[users[order]]
    n_held = np.minimum(np.rint(fraction * counts), np.maximum(counts - 1, 0))
    return rank < n_held[users]


def csr_rows(rows: np.ndarray, cols: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, indices) of a 0/1 matrix given by COO coordinates."""
    order = np.lexsort((cols, rows))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n_rows))])
    return indptr, cols[order]


def _gather_rows(indptr: np.ndarray, indices: np.ndarray, block: np.ndarray):
    """(local row, col) of every entry of the rows in `block` (vectorized CSR slicing)."""
    lengths = indptr[block + 1] - indptr[block]
    local = np.repeat(np.arange(block.size), lengths)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return local, indices[np.repeat(indptr[block], lengths) + offsets]


def top_k_unseen(scores: np.ndarray | None, seen_rows: np.ndarray, seen_cols: np.ndarray,
                 k: int, buffer: np.ndarray | None = None, nrows: int | None = None,
                 ncols: int | None = None) -> np.ndarray:
    """Top-k columns per row best first (ties: lower column first), seen ones excluded; -1 where
    fewer than k remain (factorization/ranking.py's exact chunked top-k). `buffer`: a reusable
    ranking.padded_scores buffer; scores=None: its first nrows rows already hold the scores."""
    from factorization.ranking import CHUNK, padded_scores, top_k_rows  # TF: only when ranking
    if scores is not None:
        nrows, ncols = scores.shape
        if buffer is None or len(buffer) < nrows or buffer.shape[1] != -(-ncols // CHUNK) * CHUNK:
            buffer = padded_scores(nrows, ncols)
        buffer[:nrows, :ncols] = scores
    elif buffer is None or nrows is None or ncols is None:
        raise ValueError("scores=None needs the buffer holding them, nrows and ncols")
    buffer = buffer[:nrows]
    buffer[seen_rows, seen_cols] = -np.inf
    top_scores, top = top_k_rows(buffer, min(k, ncols))
    return np.where(top_scores == -np.inf, -1, top)


def ranking_scores(hits: np.ndarray, n_held: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per-user precision/recall/AP/NDCG from the 0/1 hit matrix [U, k] (rank order).

    k is the list length actually recommended: callers cap it at the catalog size, so a k above
    the number of items does not count impossible slots as misses.
    """
    hits = hits.astype(np.float64)
    discounts = 1.0 / np.log2(np.arange(k) + 2.0)
    ideal = np.cumsum(discounts)[np.minimum(n_held, k) - 1]
    precision_at = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    return {
        "precision": hits.sum(1) / k,
        "recall": hits.sum(1) / n_held,
        "map": (hits * precision_at).sum(1) / np.minimum(n_held, k),
        "ndcg": (hits * discounts).sum(1) / ideal,
    }


def evaluate(score_users: ScoreFn, train: tuple[np.ndarray, np.ndarray],
             test: tuple[np.ndarray, np.ndarray], nusers: int, nitems: int, k: int,
             block_size: int = 1024, max_users: int | None = None,
             prefix: str = "", label: str = "") -> dict[str, float]:
    """precision/recall/map/ndcg@k and coverage of `score_users` on the held-out `test`.

    train / test are (user ids, item ids) COO pairs. `max_users` evaluates only the first
    that many test users, spread evenly over the user ids (cheap per-epoch monitoring; user ids are
    in vocabulary order, most active first, so the first ones alone would be biased); keys are
    prefixed with `prefix`; `label` names the scorer in progress lines (every 10 s).
    """
    block_size = max(1, min(block_size, MAX_BLOCK_SCORES // max(nitems, 1)))
    train_ptr, train_items = csr_rows(*train, nusers)
    test_ptr, test_items = csr_rows(*test, nusers)
    n_test = np.diff(test_ptr)
    eval_users = np.flatnonzero(n_test)
    if max_users is not None and eval_users.size > max_users:
        eval_users = eval_users[np.linspace(0, eval_users.size - 1, max_users).astype(np.int64)]
    totals = {name: 0.0 for name in RANKING_METRICS}
    recommended_items = np.zeros(nitems, bool)
    from factorization.ranking import padded_scores  # TensorFlow: only when ranking
    buffer = padded_scores(min(block_size, max(eval_users.size, 1)), nitems)
    progress = Progress(f"eval[{label}]" if label else "eval", eval_users.size, "users")
    for begin in range(0, eval_users.size, block_size):
        block = eval_users[begin:begin + block_size]
        seen_rows, seen_cols = _gather_rows(train_ptr, train_items, block)
        top = _block_top_k(score_users, block, seen_rows, seen_cols, k, nitems, buffer)
        progress.update(begin + block.size)
        held_rows, held_cols = _gather_rows(test_ptr, test_items, block)
        held_codes = held_rows.astype(np.int64) * nitems + held_cols
        top_codes = np.arange(block.size)[:, None].astype(np.int64) * nitems + top
        hits = np.isin(top_codes, held_codes) & (top >= 0)
        width = top.shape[1]
        for name, values in ranking_scores(hits, n_test[block], width).items():
            totals[name] += float(values.sum())
        recommended_items[top[top >= 0]] = True
    count = max(eval_users.size, 1)
    result = {f"{prefix}{name}@{k}": total / count for name, total in totals.items()}
    result[f"{prefix}coverage@{k}"] = float(recommended_items.sum()) / max(nitems, 1)
    result[f"{prefix}users_evaluated"] = int(eval_users.size)
    return result


def _block_top_k(score_users: ScoreFn, block, seen_rows, seen_cols, k: int, nitems: int,
                 buffer: np.ndarray) -> np.ndarray:
    """top_k_unseen of one block of users, by the cheapest route the scorer offers."""
    if hasattr(score_users, "shortlist"):  # same ranking for everyone: only its head matters
        candidates = score_users.shortlist(k + int(np.bincount(seen_rows).max(initial=0)))
        position = np.full(nitems, -1)
        position[candidates] = np.arange(candidates.size)
        keep = position[seen_cols] >= 0
        top = top_k_unseen(np.asarray(score_users(block))[:, candidates], seen_rows[keep],
                           position[seen_cols[keep]], k)
        return np.where(top >= 0, candidates[top], -1)
    if hasattr(score_users, "into"):  # scores straight into the buffer: no [block, nitems] copy
        score_users.into(block, buffer)
        return top_k_unseen(None, seen_rows, seen_cols, k, buffer, block.size, nitems)
    return top_k_unseen(score_users(block), seen_rows, seen_cols, k, buffer)


def rmse(predict: Callable[[np.ndarray, np.ndarray], np.ndarray], users: np.ndarray,
         items: np.ndarray, ratings: np.ndarray, chunk: int = 1 << 20) -> float:
    """Root mean squared error of predict(users, items) on the held-out ratings, chunked."""
    if ratings.size == 0:
        return float("nan")
    squared = 0.0
    for begin in range(0, ratings.size, chunk):
        part = slice(begin, begin + chunk)
        squared += float(np.sum((predict(users[part], items[part]) - ratings[part]) ** 2))
    return float(np.sqrt(squared / ratings.size))


class factor_scorer:  # noqa: N801 (a ScoreFn, named like the other scorers)
    """u·v for a block of users; `into` writes them straight into evaluate's ranking buffer.
    Both go through one padded Vᵀ, so both give the same floats (and the same ties)."""

    def __init__(self, row_factors: np.ndarray, col_factors: np.ndarray):
        self.row_factors = np.asarray(row_factors, np.float32)
        self.col_factors = np.asarray(col_factors, np.float32)
        self._padded_t = None

    def _candidates_t(self, width: int) -> np.ndarray:
        if self._padded_t is None or self._padded_t.shape[1] != width:
            self._padded_t = np.zeros((self.col_factors.shape[1], width), np.float32)
            self._padded_t[:, :len(self.col_factors)] = self.col_factors.T
        return self._padded_t

    def __call__(self, block: np.ndarray) -> np.ndarray:
        nitems = len(self.col_factors)
        return (self.row_factors[block] @ self._candidates_t(nitems))[:, :nitems]

    def into(self, block: np.ndarray, out: np.ndarray) -> None:
        """Scores into out[:len(block)] (its columns past nitems are padding, left at -inf)."""
        np.matmul(self.row_factors[block], self._candidates_t(out.shape[1]), out=out[:len(block)])
        out[:len(block), len(self.col_factors):] = -np.inf


def factor_predictor(row_factors: np.ndarray, col_factors: np.ndarray):
    return lambda u, i: np.einsum("nk,nk->n", row_factors[u], col_factors[i])


class popularity_scorer:  # noqa: N801 (a ScoreFn, named like the other scorers)
    """Same score for every user: the item's number of training interactions. A user's top k
    unseen items are among the first k + (their seen count) of one ranking, so evaluate ranks
    only that `shortlist`."""

    def __init__(self, train_items: np.ndarray, nitems: int):
        self.popularity = np.bincount(train_items, minlength=nitems).astype(np.float32)
        self.ranking = np.lexsort((np.arange(nitems), -self.popularity))  # ties: lower id first

    def __call__(self, block: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.popularity, (block.size, self.popularity.size))

    def shortlist(self, width: int) -> np.ndarray:
        return self.ranking[:width]


def item_mean_predictor(train_items: np.ndarray, train_ratings: np.ndarray, nitems: int):
    """Popularity baseline's rating prediction: item's mean training rating (global mean if none)."""
    counts = np.bincount(train_items, minlength=nitems)
    sums = np.bincount(train_items, weights=train_ratings, minlength=nitems)
    global_mean = float(train_ratings.mean()) if train_ratings.size else 0.0
    means = np.where(counts > 0, sums / np.maximum(counts, 1), global_mean)
    return lambda u, i: means[i]
