"""Preprocessing stage: Beam + TF Transform from GA sessions (or interactions) to WALS TFRecords.

    read source -> (row batches, rejects, counts)
      -> sum value per (visitorId, contentId), drop sums <= 0
      -> TFT: vocab_users / vocab_items, rating = min(scale * value / median, 1)
      -> one tf.train.Example per item (users_for_item) and per user (items_for_user)
Outputs under OUTPUT_DIR/preproc as fixed in DESIGN.md, plus metadata.json (docs/ARCHITECTURE.md).

Rows travel in columnar batches and the two group-bys shuffle hash shards of whole batches (numpy
sort + split inside a shard) instead of one element per interaction: per-element Python overhead was
what made a straightforward Beam+TFT job ~6x slower than pandas.
`python -m pipeline.preprocess` runs this stage alone.
"""

import argparse
import json
import logging
import os
import sys
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

from pipeline import artifacts, beam_runner, cli, columnar, examples, lock, sample, sources
from pipeline.sources import ga, sql, textio
from pipeline.preprocess_finish import REFUSED, FinishPreprocess, PreprocessError, make_plan
from transforms import preprocessing as pp

LOG = logging.getLogger(__name__)
DEFAULT_INPUT = sample.SAMPLE_PATH
_VALUE_PASSTHROUGH = "value_passthrough"  # raw value carried past TFT to read back the median
_MAX_ROWS_PER_RECORD_BATCH = 200_000


def add_args(parser: argparse.ArgumentParser) -> None:
    """Flags owned by the preprocess stage (not --output_dir nor the shared flags)."""
    g = parser.add_argument_group("preprocess")
    g.add_argument("--source", choices=("bigquery", "ga_export", "interactions"), default="ga_export",
                   help="Where rows come from: bigquery (GA360 tables, queried with the "
                        "--ga_preset SQL), ga_export (NDJSON GA360 session files as written by "
                        "`bq extract`, .gz ok) or interactions (delimited user_id,item_id,rating "
                        "files with a header row).")
    g.add_argument("--input", default=None,
                   help="File or glob (local or gs://) for ga_export / interactions (required for "
                        "interactions; ga_export defaults to the bundled sample, "
                        "pipeline/data/ga_sessions_sample.ndjson.gz).")
    g.add_argument("--ga_preset", choices=ga.PRESETS, default="news",
                   help="GA semantics for bigquery / ga_export. news: item = custom dimension "
                        "--content_dimension of PAGE hits, value = time on page in ms (next PAGE "
                        "hit's time minus this one's, summed per visitor and item). ecommerce: item "
                        "= productSKU of non-impression products, value = detail views + "
                        "--purchase_weight x purchases.")
    g.add_argument("--table", help="BigQuery GA360 table, e.g. project.dataset.ga_sessions_*")
    g.add_argument("--start_date", help="First _TABLE_SUFFIX (bigquery): YYYYMMDD, or with "
                                        "pipeline.run also today, today-N, yesterday (UTC)")
    g.add_argument("--end_date", help="Last _TABLE_SUFFIX (bigquery), same forms as --start_date")
    g.add_argument("--content_dimension", type=int, default=ga.DEFAULT_CONTENT_DIMENSION,
                   help="news preset: index of the hit-level custom dimension holding the "
                        "content id (GA360 has 1..200).")
    g.add_argument("--purchase_weight", type=cli.finite_float, default=ga.DEFAULT_PURCHASE_WEIGHT,
                   help="ecommerce preset: score of one purchase, in product detail views (a "
                        "view scores 1). The default %(default)s counts a purchase as that many "
                        "views, a rarer and stronger preference signal; 0 ignores purchases.")
    g.add_argument("--rating_scale", type=cli.finite_float, default=pp.DEFAULT_RATING_SCALE,
                   help="rating = min(scale * value / median, 1)")
    g.add_argument("--max_rejected_fraction", type=cli.finite_float, default=0.1,
                   help="Fail (after writing rejects) when rejected/input rows exceeds this.")
    g.add_argument("--vocabulary_analyzer", choices=pp.VOCABULARY_ANALYZERS, default="batched",
                   help="TFT analyzer computing vocab_users / vocab_items; both write the same "
                        "files. batched: whole column batches (faster); tft: the stock "
                        "tft.compute_and_apply_vocabulary (one Beam element per distinct id).")
    g.add_argument("--group_shards", type=int, default=8,
                   help="Hash shards for the two shuffles (raise it for big Dataflow jobs).")


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
             | "MergeStats" >> beam.CombineGlobally(sources.merge_stats))
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


def validate_args(args: argparse.Namespace) -> None:
    """Flag checks that need no data (the driver runs them before any stage starts)."""
    cli.check_range(args, "max_rejected_fraction", 0, 1)
    cli.check_range(args, "rating_scale", 0, low_open=True)
    cli.check_range(args, "purchase_weight", 0)
    cli.check_range(args, "content_dimension", 1, sql.MAX_CUSTOM_DIMENSION)
    cli.check_range(args, "group_shards", 1, 4096)
    args = with_default_input(args)
    if args.source == "bigquery":
        sources.source_transform(args)  # validates --table, dates and preset options (no I/O)
    else:
        textio.matching_files(args.input)  # a glob matching nothing is a bad flag (exit 2)


def with_default_input(args: argparse.Namespace) -> argparse.Namespace:
    """The bundled sample for ga_export without --input; interactions files must be named."""
    if args.input or args.source == "bigquery":
        return args
    if args.source == "interactions":
        raise ValueError("--source interactions needs --input FILE_OR_GLOB (a delimited file with a "
                         "user_id,item_id,rating header)")
    return argparse.Namespace(**{**vars(args), "input": DEFAULT_INPUT})


def run(args, beam_argv: list[str]) -> dict:
    """Runs the stage. Returns the metadata.json dict after a local run; after a template launch
    (the job runs later, on Dataflow, and publishes itself) {"launched": ...}."""
    validate_args(args)
    preproc = artifacts.stage_dir(args.output_dir, artifacts.PREPROC)
    args = with_default_input(args)
    source = sources.source_transform(args)  # validates flags and headers before touching the output
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


def main(argv: list[str] | None = None) -> None:
    """`python -m pipeline.preprocess`: this stage alone; exit 0 on success, 1 on failure."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.preprocess",
                                     description=__doc__.split("\n", 1)[0])
    parser.add_argument("--output_dir", default=cli.DEFAULT_OUTPUT_DIR)
    cli.add_shared_args(parser)
    add_args(parser)
    args, beam_argv = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format=cli.LOG_FORMAT)
    try:
        metadata = run(args, beam_argv)
    except (PreprocessError, ValueError, FileNotFoundError) as e:
        LOG.error("preprocess failed: %s", e)
        beam_runner.exit_process(1)
    except BaseException:  # noqa: BLE001 - log it, then still exit without interpreter teardown
        LOG.exception("preprocess failed")
        beam_runner.exit_process(1)
    print(json.dumps(metadata, indent=2, sort_keys=True))
    beam_runner.exit_process(0)


if __name__ == "__main__":
    main(sys.argv[1:])
