"""Exact top-k of each row of a score matrix, fast on CPU: the one selection behind held-out
evaluation (trainer/metrics.py) and batch prediction (batch_predict/topk.py).

Candidates are cut into chunks of CHUNK columns; the k chunks with the largest maxima (ties ->
lower chunk first) hold the top k, so tf.math.top_k runs on those k * CHUNK scores only. (Every
element above the k-th largest x_k lies in a chunk whose max is > x_k, at most k - 1 of them;
the elements equal to x_k that are needed are the lowest ids, found in the lowest-numbered
chunks with max == x_k, and enough of those are taken.) Equal scores -> the lower column first
(tf.math.top_k's documented tie rule), which makes the output deterministic.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf


# TF aliases (instead of copying) host memory handed over through DLPack only when it is aligned
# like its own allocations; a copy of a 2048 x 10k block would cost about as much as the top-k.
_TF_ALIGNMENT = 64


def aligned_empty(shape: tuple[int, int], alignment: int = _TF_ALIGNMENT) -> np.ndarray:
    """An uninitialised float32 C-contiguous array whose data starts on an `alignment` boundary."""
    nbytes = int(np.prod(shape)) * 4
    raw = np.empty(nbytes + alignment, dtype=np.uint8)
    offset = (-raw.ctypes.data) % alignment
    return raw[offset:offset + nbytes].view(np.float32).reshape(shape)


def _as_tensor(scores: np.ndarray) -> tf.Tensor:
    if scores.flags.c_contiguous and scores.ctypes.data % _TF_ALIGNMENT == 0:
        return tf.experimental.dlpack.from_dlpack(scores.__dlpack__())  # zero-copy
    return tf.convert_to_tensor(scores)


CHUNK = 64  # columns per chunk of the top-k prefilter


def top_k_rows(scores: np.ndarray, k: int, chunk: int = CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """(values, column ids) of the k largest scores of each row, best first, ties -> lower id.

    Same result as tf.math.top_k(scores, k); uses the chunk prefilter of the module docstring
    when the row length is a multiple of `chunk` and the prefilter keeps at most 1/4 of it.
    """
    nrows, ncols = scores.shape
    nchunks = ncols // chunk
    if ncols % chunk or nchunks < 4 * k:
        values, ids = tf.math.top_k(_as_tensor(scores), k=k, sorted=True)
        return values.numpy(), ids.numpy().astype(np.int64)
    values, ids = _prefiltered_top_k(_as_tensor(scores), k, chunk)
    return values.numpy(), ids.numpy()


@tf.function(reduce_retracing=True, autograph=False)
def _prefiltered_top_k(scores, k: int, chunk: int):
    """The chunk prefilter as one graph (one dispatch per block; TF's reductions and top_k run
    on all cores)."""
    nrows, ncols = tf.shape(scores)[0], tf.shape(scores)[1]
    chunks = tf.reshape(scores, [nrows, ncols // chunk, chunk])
    best_chunks = tf.sort(tf.math.top_k(tf.reduce_max(chunks, axis=2), k=k).indices, axis=1)
    shortlist = tf.reshape(tf.gather(chunks, best_chunks, batch_dims=1), [nrows, k * chunk])
    # shortlist columns ascend with the original ids, so top_k's tie rule still means lower id.
    values, positions = tf.math.top_k(shortlist, k=k, sorted=True)
    ids = tf.gather(best_chunks, positions // chunk, batch_dims=1) * chunk + positions % chunk
    return values, tf.cast(ids, tf.int64)


def padded_scores(nrows: int, ncols: int) -> np.ndarray:
    """An aligned float32 [nrows, ncols rounded up to whole chunks] buffer, padding at -inf."""
    buffer = aligned_empty((nrows, -(-ncols // CHUNK) * CHUNK))
    buffer[:, ncols:] = -np.inf
    return buffer
