"""The preprocess stage's Beam + TF Transform job (pipeline/preprocess/command.py is its command line).

    read source -> (row batches, rejects, counts)
      -> sum value per (visitorId, contentId), drop sums <= 0
      -> TFT: vocab_users / vocab_items, rating = min(scale * value / median, 1)
      -> one tf.train.Example per item (users_for_item) and per user (items_for_user)
Outputs under OUTPUT_DIR/preproc as fixed in DESIGN.md, plus metadata.json (docs/ARCHITECTURE.md).

Rows travel in columnar batches and the two group-bys shuffle hash shards of whole batches (numpy
sort + split inside a shard) instead of one element per interaction: per-element Python overhead was
what made a straightforward Beam+TFT job ~6x slower than pandas.
This module imports Beam, TensorFlow and TFT: pipeline.preprocess imports it only to run the job.
"""

import json
import logging
import os
import time
import uuid

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils
from tfx_bsl.public import tfxio
from tfx_bsl.tfxio import tensor_representation_util

from stagekit import artifacts, beam_runner, columnar, lock
from pipeline.preprocess import examples
from pipeline.preprocess.errors import PreprocessError
from pipeline.preprocess.finish import REFUSED, FinishPreprocess, make_plan
from pipeline.sources import sql
from pipeline.sources.read import merge_stats, source_transform
from transforms import preprocessing as pp

LOG = logging.getLogger("pipeline.preprocess")
_VALUE_PASSTHROUGH = "value_passthrough"  # raw value carried past TFT to read back the median
_MAX_ROWS_PER_RECORD_BATCH = 200_000


RAW_ARROW_SCHEMA = pa.schema([
    (pp.VISITOR_ID, pa.list_(pa.binary())), (pp.CONTENT_ID, pa.list_(pa.binary())),
    (pp.VALUE, pa.list_(pa.float32())), (_VALUE_PASSTHROUGH, pa.list_(pa.float32()))])


# --- stage 1: sum per (visitor, content) -------------------------------------------------------

def _shard_row_batch(batch: pa.RecordBatch, num_shards: int):
    # Shard by visitor: every (visitor, content) pair lands whole in one shard.
    shard = columnar.id_shards(batch.column(pp.VISITOR_ID), num_shards)
    for shard_id, rows in columnar.shard_indices(shard):
        yield shard_id, batch.take(rows)


def _sum_shard(shard_and_parts):
    """Sums one shard per pair (arrow group-by); yields RecordBatches for TFT and a stats dict."""
    _, parts = shard_and_parts
    sums = pa.Table.from_batches(list(parts)).group_by(
        [pp.VISITOR_ID, pp.CONTENT_ID], use_threads=False).aggregate([(pp.VALUE, "sum")])
    kept = sums.filter(pc.greater(sums.column(pp.VALUE + "_sum"), 0.0))
    yield beam.pvalue.TaggedOutput("stats", {
        "pairs_before_filter": sums.num_rows, "dropped_nonpositive_pairs": sums.num_rows - kept.num_rows})
    values = kept.column(pp.VALUE + "_sum").combine_chunks()
    visitors = kept.column(pp.VISITOR_ID).combine_chunks()
    contents = kept.column(pp.CONTENT_ID).combine_chunks()
    for start in range(0, kept.num_rows, _MAX_ROWS_PER_RECORD_BATCH):
        part = slice(start, start + _MAX_ROWS_PER_RECORD_BATCH)
        value = columnar.list_column(values[part].cast(pa.float32()))  # passed through, shared
        yield pa.RecordBatch.from_arrays([
            columnar.list_column(visitors[part]), columnar.list_column(contents[part]), value, value],
            schema=RAW_ARROW_SCHEMA)


class SumPerPair(beam.PTransform):
    """Row batches -> arrow RecordBatches of summed (visitorId, contentId, value), value > 0."""

    def __init__(self, num_shards: int):
        super().__init__()
        self._num_shards = num_shards

    def expand(self, row_batches):
        summed = (row_batches
                  | "ShardByVisitor" >> beam.FlatMap(_shard_row_batch, self._num_shards)
                  | "GroupShards" >> beam.GroupByKey()
                  | "SumShard" >> beam.FlatMap(_sum_shard).with_outputs("stats", main="batches"))
        return summed.batches, summed.stats


# --- stage 3: group into one Example per key, write TFRecords ----------------------------------

def _transformed_columns(transformed) -> dict[str, np.ndarray]:
    record_batch, _ = transformed
    return {name: record_batch.column(name).flatten().to_numpy(zero_copy_only=False)
            for name in (pp.USER_ID, pp.ITEM_ID, pp.RATING)}


def _shard_by_key(columns: dict, key: str, num_shards: int):
    for shard_id, rows in columnar.shard_indices(columns[key] % num_shards):
        yield shard_id, {name: values[rows] for name, values in columns.items()}


def _write_shard(shard_and_parts, key: str, index: str, file_prefix: str):
    """Writes one TFRecord file per shard (temp name, then rename: a retried bundle rewrites the
    same complete file) and returns how many Examples it holds."""
    shard_id, parts = shard_and_parts
    parts = list(parts)
    columns = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    path = f"{file_prefix}-{shard_id:05d}"  # only non-empty shards exist, so no "-of-N"
    folder, name = file_prefix.rsplit("/", 1)
    temp_path = f"{folder}/.tmp-{uuid.uuid4().hex[:8]}-{name}-{shard_id:05d}"  # never matches name-*
    count = 0
    with tf.io.TFRecordWriter(temp_path) as writer:
        for record in examples.serialized_examples(columns[key], columns[index], columns[pp.RATING]):
            writer.write(record)
            count += 1
    tf.io.gfile.rename(temp_path, path, overwrite=True)
    return count


class WriteSparseRows(beam.PTransform):
    """Transformed columns -> TFRecords of one Example per `key` id listing its `index` ids.

    Used for both sides: (key=itemId, index=userId) is users_for_item, the swap items_for_user.
    Shards are by key id, so every key's Example is built whole inside one shard. Returns a
    one-element stats PCollection with the number of Examples written.
    """

    def __init__(self, key: str, index: str, file_prefix: str, num_shards: int):
        super().__init__()
        self._key, self._index = key, index
        self._file_prefix, self._num_shards = file_prefix, num_shards

    def expand(self, columns):
        stat_name = f"examples.{self._file_prefix.rsplit('/', 1)[-1]}"
        return (columns
                | "ShardByKey" >> beam.FlatMap(_shard_by_key, self._key, self._num_shards)
                | "GroupShards" >> beam.GroupByKey()
                | "WriteShard" >> beam.Map(_write_shard, self._key, self._index, self._file_prefix)
                | "Count" >> beam.CombineGlobally(sum)
                | "AsStats" >> beam.Map(lambda n: {stat_name: n}))


def _rating_stats(transformed, scale: float) -> dict:
    """Rating min/max/sum per batch and the learned median read back from an unclamped row."""
    record_batch, _ = transformed
    ratings = record_batch.column(pp.RATING).flatten().to_numpy()
    values = record_batch.column(_VALUE_PASSTHROUGH).flatten().to_numpy()
    stats = {"rated_rows": len(ratings)}
    if len(ratings):
        stats.update(min_rating=float(ratings.min()), max_rating=float(ratings.max()),
                     sum_rating=float(ratings.sum(dtype=np.float64)))
        median = pp.learned_median(values, ratings, scale)
        if median is not None:
            stats["max_median_value"] = median  # every batch reads back the same float32
    return stats


# --- the pipeline ------------------------------------------------------------------------------

def build_pipeline(pipeline: beam.Pipeline, source: beam.PTransform, args, plan: dict) -> None:
    """Wires the whole stage, top to bottom: results land under plan["staging"], and the last
    step (`FinishPreprocess`) checks them, writes metadata.json and publishes them."""
    staging, temp_dir = plan["staging"], plan["tft_temp"]
    read = pipeline | "Read" >> source
    rejects_written = (read.rejected | "RejectToJson" >> beam.Map(json.dumps, sort_keys=True)
                       | "WriteRejects" >> beam.io.WriteToText(artifacts.join(staging, "rejected")))
    raw_batches, sum_stats = read.rows | "SumPerPair" >> SumPerPair(args.group_shards)

    raw_schema = schema_utils.schema_from_feature_spec(pp.RAW_FEATURE_SPEC)
    adapter_config = tfxio.TensorAdapterConfig(
        RAW_ARROW_SCHEMA, tensor_representation_util.InferTensorRepresentationsFromSchema(raw_schema))
    with tft_beam.Context(temp_dir=temp_dir, passthrough_keys={_VALUE_PASSTHROUGH}):
        (transformed, _), transform_fn = (
            (raw_batches, adapter_config)
            | "AnalyzeAndTransform" >> tft_beam.AnalyzeAndTransformDataset(
                pp.make_preprocessing_fn(args.rating_scale, args.vocabulary_analyzer,
                                         args.group_shards),
                output_record_batches=True))
        transform_fn_written = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(staging)
        raw_metadata_written = (
            dataset_metadata.DatasetMetadata(raw_schema)
            | "WriteRawMetadata" >> tft_beam.WriteMetadata(
                artifacts.join(staging, tft.TFTransformOutput.RAW_METADATA_DIR), pipeline))

    columns = transformed | "ToColumns" >> beam.Map(_transformed_columns)
    users_for_item = columns | "UsersForItem" >> WriteSparseRows(
        pp.ITEM_ID, pp.USER_ID, artifacts.join(staging, "users_for_item"), args.group_shards)
    items_for_user = columns | "ItemsForUser" >> WriteSparseRows(
        pp.USER_ID, pp.ITEM_ID, artifacts.join(staging, "items_for_user"), args.group_shards)
    rating_stats = transformed | "RatingStats" >> beam.Map(_rating_stats, args.rating_scale)

    stats = ((read.stats, sum_stats, rating_stats, users_for_item, items_for_user)
             | "AllStats" >> beam.Flatten()
             | "MergeStats" >> beam.CombineGlobally(merge_stats))
    _ = pipeline | "Finish" >> FinishPreprocess(
        plan, stats, [rejects_written, transform_fn_written, raw_metadata_written])


def check_output_dir(preproc: str, overwrite: bool) -> None:
    """Refuses a non-empty preproc dir unless overwrite; deletes nothing yet: the pipeline replaces
    it only once the new output is complete."""
    if tf.io.gfile.exists(preproc) and tf.io.gfile.listdir(preproc):
        if not overwrite:
            complete = tf.io.gfile.exists(artifacts.join(preproc, "metadata.json"))
            raise PreprocessError(
                f"{preproc} is not empty" + ("" if complete else
                                             " (an interrupted or failed run: no metadata.json)")
                + "; pass --overwrite to replace it entirely or choose another --output_dir")
    if overwrite:  # scratch folders of dead runs (a finished run removes its own)
        for stale in tf.io.gfile.glob(artifacts.join(os.path.dirname(preproc.rstrip("/")),
                                                     "_tmp_preprocess_*")):
            if lock.scratch_is_dead(stale):
                tf.io.gfile.rmtree(stale)


def run(args, beam_argv: list[str]) -> dict:
    """Runs the job for flags pipeline.preprocess.run has checked (and given their default
    --input). Returns the metadata.json dict after a local run; after a template launch (the job
    runs later, on Dataflow, and publishes itself) {"launched": ...}."""
    preproc = artifacts.stage_dir(args.output_dir, artifacts.PREPROC)
    source = source_transform(args)  # validates flags and headers before touching the output
    options = beam_runner.pipeline_options(
        beam_argv, input_size=0 if args.source == "bigquery" else beam_runner.input_bytes(args.input))
    if args.source == "bigquery":
        sql.check_bigquery_ready(options)
    check_output_dir(preproc, args.overwrite)
    plan = make_plan(args, preproc)
    lock.mark_scratch(plan["scratch"], plan["run_id"], launched=beam_runner.is_template_launch(options))
    LOG.info("preprocess: source=%s input=%s runner=%s", args.source, plan["input"],
             beam_runner.describe(options))
    pipeline = beam.Pipeline(runner=beam_runner.runner_for(options), options=options)
    build_pipeline(pipeline, source, args, plan)
    pipeline_started = time.time()
    try:
        with beam_runner.without_state_cache(), beam_runner.streamed_stage_inputs():
            result = pipeline.run()
            if beam_runner.is_template_launch(options):
                LOG.info("preprocess: job graph staged; the job publishes %s itself when it ends", preproc)
                return {"launched": preproc, "run_id": plan["run_id"]}
            result.wait_until_finish()
    except BaseException:
        refusal = artifacts.join(plan["scratch"], REFUSED)
        if tf.io.gfile.exists(refusal):  # refused in the pipeline: keep the rejects for the user
            raise PreprocessError(artifacts.read_json(refusal)["error"]) from None
        if tf.io.gfile.exists(plan["scratch"]):
            tf.io.gfile.rmtree(plan["scratch"])
        raise
    LOG.info("preprocess: Beam+TFT pipeline finished in %.1f s", time.time() - pipeline_started)
    metadata = artifacts.read_json(artifacts.join(preproc, "metadata.json"))
    if metadata.get("run_id") != plan["run_id"]:
        raise PreprocessError(f"the pipeline finished but {preproc} was not published by it")
    LOG.info("preprocess: %d input rows = %d accepted + %d rejected %s", metadata["input_rows"],
             metadata["accepted_rows"], metadata["rejected_rows"], metadata["rejected_by_reason"])
    return metadata


