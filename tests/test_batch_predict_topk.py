"""The blocked top-k solver: exact selection (chunk prefilter included), ties, padding, -inf."""
import numpy as np
import tensorflow as tf

from batch_predict.artifacts import SeenMatrix
from batch_predict.topk import CHUNK, Scorer, top_k_rows


def stable_topk(scores, k):
    """Reference: sort every row by (-score, column)."""
    order = np.lexsort((np.broadcast_to(np.arange(scores.shape[1]), scores.shape), -scores), axis=1)
    return np.take_along_axis(scores, order[:, :k], axis=1), order[:, :k]


def test_chunk_prefilter_is_exact_with_many_ties_and_masked_rows():
    rng = np.random.default_rng(7)
    scores = rng.integers(0, 4, size=(300, 256)).astype(np.float32)  # heavy ties
    scores[rng.random(scores.shape) < 0.5] = -np.inf
    scores[3] = -np.inf                                            # nothing admissible
    scores[4, :250] = -np.inf                                      # fewer than k admissible
    for k in (1, 5, 16):
        values, ids = top_k_rows(scores.copy(), k, chunk=4)        # 64 chunks >= 4k: prefilter
        expected_values, expected_ids = stable_topk(scores, k)
        np.testing.assert_array_equal(values, expected_values)
        finite = np.isfinite(expected_values)
        np.testing.assert_array_equal(ids[finite], expected_ids[finite])
        full = tf.math.top_k(scores, k).indices.numpy()
        np.testing.assert_array_equal(ids[finite], full[finite])


def test_scorer_pads_the_catalog_and_never_returns_padding_or_seen():
    rng = np.random.default_rng(8)
    nitems = 5 * CHUNK + 3  # padded to 6 chunks: prefilter on for k=1, off for k=2
    query = rng.standard_normal((50, 3)).astype(np.float32)
    items = rng.standard_normal((nitems, 3)).astype(np.float32)
    items[7] = items[8]     # two identical items: an exact tie, lower id first
    seen = SeenMatrix.from_rows([rng.choice(nitems, 20, replace=False) for _ in range(50)], nitems)
    scores = query @ items.T
    for u in range(50):
        scores[u, seen.row(u)] = -np.inf
    for k in (1, 2, nitems + 5):
        blocks = list(Scorer(query, items).blocks(seen, k, block_size=16))
        assert [b.start for b in blocks] == [0, 16, 32, 48]
        got = [list(ids) for b in blocks for _, ids, _ in b.rows()]
        _, expected = stable_topk(scores, min(k, nitems))
        for u in range(50):
            want = [j for j in expected[u] if np.isfinite(scores[u, j])]
            assert got[u] == want, (k, u)
            assert all(j < nitems for j in got[u])
