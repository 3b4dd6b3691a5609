"""A batched vocabulary analyzer for TF Transform: `tft.vocabulary`'s file, without a Beam element
per token.

`tft.compute_and_apply_vocabulary` emits one Beam element per distinct token per batch and runs
them through three per-key shuffles and a global sort; at 100k users that was ~6 of a ~12 s stage
(measured, benchmarks/preprocess.py). This analyzer computes the same vocabulary file with whole
column batches instead:

    per batch:  distinct tokens + counts (tf.unique_with_counts, in the transform graph: only
                the distinct tokens leave TF as Python bytes), split into hash shards
    per shard:  counts summed over batches (one arrow group-by)
    globally:   shards concatenated, sorted by count descending then token descending
                (tft.vocabulary's order), one token per line

It plugs into TFT as a `tft.experimental.ptransform_analyzer` whose output is an asset path, so
`tft.apply_vocabulary` maps ids in the transform graph and the file lands in
transform_fn/assets/<vocab_filename> like a stock vocabulary (`TFTransformOutput.
vocabulary_file_by_name` finds it). Tokens are expected to be non-empty and free of '\\n'/'\\r'
(the sources reject such ids); like tft.vocabulary's text format, any left are not written.
"""
import os

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform import analyzers as tft_analyzers

from stagekit import columnar, textfile

DEFAULT_SHARDS = 8
_TOKEN, _COUNT = "token", "count"
_EMPTY_VOCABULARY_TOKEN = tft_analyzers.get_empy_vocabulary_dummy_value(tf.string)[1]


def _count_batch(batch: tuple, num_shards: int):
    """(shard, table of distinct tokens and their counts in this batch) for each shard hit; the
    batch is (distinct tokens, their counts) as computed in the graph."""
    table = pa.table({_TOKEN: pa.array(np.asarray(batch[0]).ravel(), type=pa.binary()),
                      _COUNT: pa.array(np.asarray(batch[1]).ravel().astype(np.int64))})
    for shard, rows in columnar.shard_indices(columnar.id_shards(table.column(_TOKEN).combine_chunks(),
                                                                 num_shards)):
        yield shard, table.take(rows)


def _sum_shard(shard_and_tables) -> pa.Table:
    _, tables = shard_and_tables
    summed = pa.concat_tables(list(tables)).group_by(_TOKEN, use_threads=False).aggregate(
        [(_COUNT, "sum")])
    return summed.rename_columns([_TOKEN, _COUNT])


def _all_writable(tokens: pa.Array) -> bool:
    """No token empty or holding a line break: one numpy pass over the bytes (the usual case)."""
    if not len(tokens):
        return True
    offsets = np.frombuffer(tokens.buffers()[1], np.int32)[tokens.offset:tokens.offset + len(tokens) + 1]
    if np.diff(offsets).min() == 0:
        return False
    data = np.frombuffer(tokens.buffers()[2], np.uint8)[offsets[0]:offsets[-1]]
    return not ((data == 10) | (data == 13)).any()


def _write_vocabulary(tables: list, path: str) -> np.ndarray:
    """Sorts all tokens like tft.vocabulary and writes them, one per line; returns the path."""
    tokens = pa.array([], pa.binary())
    if tables:
        vocab = pa.concat_tables(tables).sort_by([(_COUNT, "descending"), (_TOKEN, "descending")])
        tokens = vocab.column(_TOKEN).combine_chunks()
        if not _all_writable(tokens):
            unwritable = pc.or_(pc.equal(pc.binary_length(tokens), 0),
                                pc.or_(pc.match_substring(tokens, b"\n"), pc.match_substring(tokens, b"\r")))
            tokens = tokens.filter(pc.invert(unwritable))
    if not len(tokens):  # as tft.vocabulary: an empty vocabulary file cannot initialise a lookup table
        tokens = pa.array([_EMPTY_VOCABULARY_TOKEN], pa.binary())
    tf.io.gfile.makedirs(os.path.dirname(path))
    textfile.write(path, [textfile.concat(tokens, b"\n")])
    return np.array(path)


class BatchedVocabulary(tft_beam.experimental.PTransformAnalyzer):
    """Batches of token arrays -> one element: the path of the written vocabulary file."""

    def __init__(self, vocab_filename: str, num_shards: int = DEFAULT_SHARDS):
        super().__init__()
        self._vocab_filename, self._num_shards = vocab_filename, num_shards

    def expand(self, batches):
        path = os.path.join(self.base_temp_dir, self._vocab_filename)
        return (batches
                | "CountPerBatch" >> beam.FlatMap(_count_batch, self._num_shards)
                | "GroupShards" >> beam.GroupByKey()
                | "SumShard" >> beam.Map(_sum_shard)
                | "Gather" >> beam.combiners.ToList()
                | "SortAndWrite" >> beam.Map(_write_vocabulary, path))


def compute_and_apply_vocabulary(x: tf.Tensor, vocab_filename: str,
                                 num_shards: int = DEFAULT_SHARDS) -> tf.Tensor:
    """Like tft.compute_and_apply_vocabulary(x, vocab_filename=...): int64 ids, -1 if unknown."""
    # Counted per batch in the graph: the analyzer gets each batch's distinct tokens (a tenth of
    # the rows for items) instead of one Python bytes object per row.
    tokens, _, counts = tf.unique_with_counts(tf.reshape(x, [-1]), out_idx=tf.int64)
    (path,) = tft.experimental.ptransform_analyzer(
        [tokens, counts], BatchedVocabulary(vocab_filename, num_shards), [tf.string], [[]],
        # content of the placeholder file TFT traces with before the analysis has run
        output_asset_default_values=[_EMPTY_VOCABULARY_TOKEN], name=f"batched_vocabulary_{vocab_filename}")
    return tft.apply_vocabulary(x, path, default_value=-1)
