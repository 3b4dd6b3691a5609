"""Ranking metrics, RMSE, coverage and the held-out split against hand-computed values."""
import math

import numpy as np
import pytest

from trainer import metrics

SCORES = np.array([[0.9, 0.8, 0.7, 0.6, 0.5],
                   [0.1, 0.2, 0.3, 0.4, 0.5],
                   [0.5, 0.5, 0.5, 0.5, 0.5]], np.float32)


def fixed_scorer(block):
    return SCORES[block]


def test_ranking_metrics_match_hand_computation():
    train = (np.array([0, 1, 2]), np.array([0, 4, 1]))      # seen items are excluded
    test = (np.array([0, 0, 1]), np.array([2, 4, 3]))       # user 2 has nothing held out
    got = metrics.evaluate(fixed_scorer, train, test, nusers=3, nitems=5, k=3, block_size=1)
    # user 0: top 1,2,3 -> hits 0,1,0 of |T|=2; user 1: top 3,2,1 -> hits 1,0,0 of |T|=1.
    ndcg_user0 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert got["precision@3"] == pytest.approx((1 / 3 + 1 / 3) / 2)
    assert got["recall@3"] == pytest.approx((1 / 2 + 1) / 2)
    assert got["map@3"] == pytest.approx(((1 / 2) / 2 + 1) / 2)
    assert got["ndcg@3"] == pytest.approx((ndcg_user0 + 1) / 2)
    assert got["coverage@3"] == pytest.approx(3 / 5)
    assert got["users_evaluated"] == 2
    blocked = metrics.evaluate(fixed_scorer, train, test, 3, 5, k=3, block_size=1024)
    assert blocked == got


def test_top_k_skips_seen_items_and_marks_missing_slots():
    top = metrics.top_k_unseen(SCORES[:1], np.array([0, 0, 0]), np.array([0, 1, 2]), k=3)
    assert top.tolist() == [[3, 4, -1]]


def test_perfect_and_useless_rankings():
    train = (np.array([0]), np.array([4]))
    perfect = metrics.evaluate(lambda b: SCORES[b], train, (np.array([0, 0]), np.array([0, 1])),
                               1, 5, k=2)
    assert perfect["ndcg@2"] == pytest.approx(1.0) and perfect["map@2"] == pytest.approx(1.0)
    useless = metrics.evaluate(lambda b: SCORES[b], train, (np.array([0]), np.array([3])), 1, 5, k=2)
    assert useless["ndcg@2"] == 0.0 and useless["recall@2"] == 0.0


def test_rmse_and_baseline_predictors():
    row = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
    col = np.array([[0.5, 0.5], [1.0, 1.0]], np.float32)
    predict = metrics.factor_predictor(row, col)
    users, items, ratings = np.array([0, 1, 1]), np.array([0, 0, 1]), np.array([0.5, 0.0, 2.0])
    # predictions 0.5, 1.0, 2.0 -> errors 0, 1, 0
    assert metrics.rmse(predict, users, items, ratings, chunk=2) == pytest.approx(math.sqrt(1 / 3))
    mean = metrics.item_mean_predictor(np.array([0, 0]), np.array([0.2, 0.4]), nitems=2)
    assert mean(np.array([0, 0]), np.array([0, 1])).tolist() == pytest.approx([0.3, 0.3])
    popularity = metrics.popularity_scorer(np.array([2, 2, 1]), nitems=3)
    assert popularity(np.array([5, 6])).tolist() == [[0, 1, 2], [0, 1, 2]]


def test_split_holdout_is_seeded_per_user_and_keeps_training_items():
    users = np.repeat(np.arange(4), [8, 1, 2, 10])
    held = metrics.split_holdout(users, 0.25, seed=3)
    assert np.bincount(users[held], minlength=4).tolist() == [2, 0, 0, 2]   # rint(0.5) = 0
    assert np.array_equal(held, metrics.split_holdout(users, 0.25, seed=3))
    assert not np.array_equal(held, metrics.split_holdout(users, 0.25, seed=4))
    assert not metrics.split_holdout(users, 0.0, seed=3).any()
    everything = metrics.split_holdout(users, 0.99, seed=3)
    assert np.bincount(users[~everything], minlength=4).min() == 1
    with pytest.raises(ValueError, match="eval fraction"):
        metrics.split_holdout(users, 1.0, seed=3)


def test_max_users_spreads_over_all_users_not_just_the_first():
    """Per-epoch monitoring evaluates a subset; it must not be only the most active users."""
    nusers, nitems = 10, 4
    users = np.arange(nusers)
    train, test = (users, np.zeros(nusers, np.int64)), (users, np.ones(nusers, np.int64))
    asked = []

    def scorer(block):
        asked.extend(block.tolist())
        return np.tile(np.arange(nitems, 0, -1, dtype=np.float32), (block.size, 1))

    got = metrics.evaluate(scorer, train, test, nusers, nitems, k=2, max_users=4)
    assert got["users_evaluated"] == 4
    assert asked[0] == 0 and asked[-1] == nusers - 1 and len(set(asked)) == 4


def test_fast_scorer_routes_rank_exactly_like_plain_scores():
    """factor_scorer (scores written into the ranking buffer) and popularity_scorer (only the
    head of its ranking is ranked) give the metrics of the same scores passed as plain arrays,
    ties included (popularity has many equal counts)."""
    rng = np.random.default_rng(3)
    nusers, nitems = 300, 150  # not a multiple of the top-k chunk: padding columns in play
    users, items = rng.integers(0, nusers, 6000), (rng.pareto(1.0, 6000) * 5).astype(int) % nitems
    codes = np.unique(users * nitems + items)
    users, items = codes // nitems, codes % nitems
    held = metrics.split_holdout(users, 0.3, 1)
    train, test = (users[~held], items[~held]), (users[held], items[held])
    everything = np.arange(nitems)  # user 0 has seen every item: an empty list, no hits
    train = (np.r_[train[0][train[0] != 0], np.zeros(nitems, int)],
             np.r_[train[1][train[0] != 0], everything])
    row_f = rng.standard_normal((nusers, 8)).astype(np.float32)
    col_f = rng.standard_normal((nitems, 8)).astype(np.float32)
    for fast in (metrics.factor_scorer(row_f, col_f), metrics.popularity_scorer(train[1], nitems)):
        plain = lambda block, fast=fast: np.array(fast(block))  # noqa: E731 (no fast route)
        for k in (5, 200):
            got = metrics.evaluate(fast, train, test, nusers, nitems, k, block_size=64)
            want = metrics.evaluate(plain, train, test, nusers, nitems, k, block_size=64)
            assert got == want
            assert got[f"ndcg@{k}"] > 0


def test_long_evaluations_log_progress(monkeypatch, caplog):
    """A phase running past PROGRESS_SECONDS says how far it is (here: every block)."""
    from stagekit import progress
    monkeypatch.setattr(progress, "PROGRESS_SECONDS", 0.0)
    rng = np.random.default_rng(0)
    users, items = np.repeat(np.arange(50), 4), rng.integers(0, 30, 200)
    codes = np.unique(users * 30 + items)
    users, items = codes // 30, codes % 30
    held = metrics.split_holdout(users, 0.5, 0)
    caplog.set_level("INFO", logger="progress")
    metrics.evaluate(metrics.popularity_scorer(items[~held], 30), (users[~held], items[~held]),
                     (users[held], items[held]), 50, 30, k=3, block_size=10, label="popularity")
    lines = [r.getMessage() for r in caplog.records if r.name == "progress"]
    assert lines and all(line.startswith("eval[popularity]: ") for line in lines)
    assert "10/50 users (20%)" in lines[0]
