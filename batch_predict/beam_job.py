"""The top-k computation as a Beam job over blocks of query rows, for catalogs of tens of millions
of visitors (Dataflow). Same runner flags as preprocessing; the workers load the factors and
vocabularies from the model/preproc dirs themselves (DoFn.setup), so only ids travel.

    <prefix>-* records --ParseSeen--> (row, seen ids) --KeyByBlock--> (block, row+seen)
    every block id 0..nblocks-1 (so rows without a record are still scored)
    --GroupByKey--> one element per block --TopKPerBlock--> output lines --> text shards
    (every direction) --> counts + write completions --> CheckAndPublish
    [--> BigQueryOutputs: the published files as BigQuery tables, batch_predict/bigquery_write.py]

Each block is computed by the same `Scorer.block` as the in-process path with the same block
boundaries, so both paths give identical lines. Records that do not fit the model (ids out of
range, duplicate rows) go to a dead-letter output with a reason. The job finishes itself: its
last step refuses to publish when there are dead letters or missing rows, and otherwise
publishes the staged folder (stagekit/publish.py), so the output does not depend on the
launching process (a Flex Template launcher returns before the job runs).
"""
from __future__ import annotations

import json
import logging

import apache_beam as beam
import numpy as np

from batch_predict import artifacts as art
from batch_predict.outputs import TopKFormatter
from batch_predict.topk import recommendation_scorer
from stagekit import publish
from stagekit.artifacts import head_lines, join, write_json

log = logging.getLogger(__name__)

REJECTED = "rejected"


class ParseSeenFn(beam.DoFn):
    """Serialized tf.train.Example -> (row id, sorted unique seen ids), or a dead letter."""

    def __init__(self, nrows: int, ncols: int, source: str):
        self.nrows, self.ncols, self.source = nrows, ncols, source

    def process(self, record: bytes):
        import tensorflow as tf
        try:
            feature = tf.train.Example.FromString(record).features.feature
            keys = list(feature["key"].int64_list.value)
            indices = np.array(feature["indices"].int64_list.value, dtype=np.int64)
            reason = (f"expected exactly one key, got {len(keys)}" if len(keys) != 1 else
                      art.check_record(keys[0], indices, self.nrows, self.ncols, self.source))
        except Exception as exc:  # noqa: BLE001 - any undecodable record is a dead letter
            keys, reason = [None], f"undecodable record: {type(exc).__name__}: {exc}"
        if reason:
            beam.metrics.Metrics.counter("batch_predict", "rejected").inc()
            yield beam.pvalue.TaggedOutput(REJECTED, json.dumps({"key": keys[0] if keys else None,
                                                                 "reason": reason}))
            return
        beam.metrics.Metrics.counter("batch_predict", "rows_with_seen").inc()
        yield keys[0], np.unique(indices)


class TopKPerBlockFn(beam.DoFn):
    """(block id, [(row, seen ids), ...]) -> one output line per row of the block."""

    def __init__(self, spec: dict):
        self.spec = spec  # plain values only, so the DoFn pickles small

    def setup(self):
        spec = self.spec
        query = art.read_factors(spec["query_factors"])
        candidates = art.read_factors(spec["candidate_factors"])
        optional = {key: None if spec.get(key) is None else np.asarray(spec[key], np.int64)
                    for key in ("excluded", "blank")}
        self.scorer = recommendation_scorer(query, candidates, np.asarray(spec["candidate_counts"]),
                                            optional["excluded"], optional["blank"])
        self.formatter = TopKFormatter(art.read_vocabulary(spec["query_vocab"]),
                                       art.read_vocabulary(spec["candidate_vocab"]),
                                       scores=spec["write_scores"], end="")  # WriteToText adds it
        self.ncandidates = len(self.formatter.candidates)

    def process(self, element):
        block_id, members = element
        start = block_id * self.spec["block_size"]
        stop = min(start + self.spec["block_size"], len(self.scorer.query))
        seen_rows: list[np.ndarray] = [np.zeros(0, np.int64)] * (stop - start)
        for member in members:
            if member is None:
                continue  # the block marker
            row, seen = member
            if len(seen_rows[row - start]):
                beam.metrics.Metrics.counter("batch_predict", "rejected").inc()
                yield beam.pvalue.TaggedOutput(REJECTED, json.dumps(
                    {"key": row, "reason": f"row {row} appears in more than one record"}))
            seen_rows[row - start] = seen
        seen = art.SeenMatrix.from_rows(seen_rows, self.ncandidates).block(0, stop - start)
        block = self.scorer.block(start, stop, seen, self.spec["top_k"])
        beam.metrics.Metrics.counter("batch_predict", "rows_scored").inc(stop - start)
        lines, records = self.formatter.lines(block)  # the same lines as the in-process writer
        yield from lines.to_pylist()
        if records is not None:
            for record in records.to_pylist():
                yield beam.pvalue.TaggedOutput("scores", record)


class ReadSeen(beam.PTransform):
    """Reads `<prefix>-*` shards (gzip detected by the .gz extension) into (row, seen ids)."""

    def __init__(self, pattern: str, nrows: int, ncols: int):
        super().__init__()
        self.pattern, self.nrows, self.ncols = pattern, nrows, ncols

    def expand(self, pbegin):
        return (pbegin
                | "ReadRecords" >> beam.io.ReadFromTFRecord(self.pattern)
                | "Parse" >> beam.ParDo(ParseSeenFn(self.nrows, self.ncols, self.pattern))
                .with_outputs(REJECTED, main="seen"))


class GroupIntoRowBlocks(beam.PTransform):
    """(row, seen) -> (block id, members); every block exists even if none of its rows has a record."""

    def __init__(self, nrows: int, block_size: int):
        super().__init__()
        self.nrows, self.block_size = nrows, block_size

    def expand(self, seen):
        nblocks = -(-self.nrows // self.block_size)
        block_size = self.block_size
        keyed = seen | "KeyByBlock" >> beam.Map(lambda row_seen: (row_seen[0] // block_size, row_seen))
        markers = (seen.pipeline | "BlockIds" >> beam.Create(range(nblocks))
                   | "BlockMarker" >> beam.Map(lambda block: (block, None)))
        return (keyed, markers) | "Union" >> beam.Flatten() | "GroupByBlock" >> beam.GroupByKey()


class TopK(beam.PTransform):
    """One direction (spec): records -> top-k lines (and scores) under the staged folder.

    Returns {"scored": n lines written, "rejected": n dead letters, "written": completion} as
    PCollections, for the finishing step.
    """

    def __init__(self, spec: dict, staged: str, scratch: str):
        super().__init__()
        self.spec, self.staged, self.scratch = spec, staged, scratch

    def expand(self, pbegin):
        spec, name = self.spec, self.spec["name"]
        seen = pbegin | "ReadSeen" >> ReadSeen(spec["seen_pattern"], spec["nrows"], spec["ncols"])
        results = (seen.seen
                   | "GroupIntoRowBlocks" >> GroupIntoRowBlocks(spec["nrows"], spec["block_size"])
                   | "TopKPerBlock" >> beam.ParDo(TopKPerBlockFn(spec))
                   .with_outputs(REJECTED, "scores", main="lines"))
        written = [results.lines | "WriteLines" >> beam.io.WriteToText(join(self.staged, name))]
        if spec["write_scores"]:
            written.append(results.scores | "WriteScores" >> beam.io.WriteToText(
                join(self.staged, name + "_scores"), file_name_suffix=".jsonl"))
        rejected = (seen[REJECTED], results[REJECTED]) | "AllRejected" >> beam.Flatten()
        written.append(rejected | "WriteRejected" >> beam.io.WriteToText(
            join(self.scratch, REJECTED, name)))  # outside the staged folder: never published
        return {"scored": results.lines | "CountScored" >> beam.combiners.Count.Globally(),
                "rejected": rejected | "CountRejected" >> beam.combiners.Count.Globally(),
                "written": written}


def build_topk_pipeline(pipeline: beam.Pipeline, specs: list[dict], plan: dict) -> None:
    """Every direction's top-k, then the finishing step that checks the counts and publishes.

    spec: name, seen_pattern, nrows, ncols, block_size, top_k, write_scores, query_factors,
    candidate_factors, candidate_counts (list), query_vocab, candidate_vocab.
    plan: staged, scratch, output_dir, run_id, manifest (fields for manifest.json), export,
    bigquery (BigQueryOutputs' arguments, or None).
    """
    counts, written = [], []
    for spec in specs:
        name = spec["name"]
        result = pipeline | f"TopK[{name}]" >> TopK(spec, plan["staged"], plan["scratch"])
        for what in ("scored", "rejected"):
            counts.append(result[what] | f"Label[{name}.{what}]" >> beam.Map(
                lambda n, key=f"{name}.{what}": (key, n)))
        written += result["written"]
    all_counts = tuple(counts) | "AllCounts" >> beam.Flatten()
    published = (pipeline
         | "Once" >> beam.Create([None])
         | "CheckAndPublish" >> beam.Map(finish_predictions, plan,
                                         [{key: spec[key] for key in ("name", "records_prefix", "nrows")}
                                          for spec in specs],
                                         beam.pvalue.AsDict(all_counts),
                                         *[beam.pvalue.AsList(done) for done in written]))
    if plan.get("bigquery"):  # read from the published folder, so only after the publish
        from batch_predict.bigquery_write import BigQueryOutputs
        _ = published | "BigQueryOutputs" >> BigQueryOutputs(**plan["bigquery"])


def finish_predictions(_, plan: dict, specs: list[dict], counts: dict, *written) -> None:
    """The job's last step: refuse (dead letters, rows missing), or export the SavedModel (when
    asked) and publish the staged folder. Idempotent: a retried bundle after the publish only
    cleans up."""
    from batch_predict.outputs import MANIFEST, Staging

    if publish.marker_run_id(plan["output_dir"], MANIFEST) == plan["run_id"]:
        publish.remove_tree(plan["scratch"])
        return
    problems = []
    for spec in specs:
        name, rejected = spec["name"], counts[f"{spec['name']}.rejected"]
        if rejected:
            first = _first_line(join(plan["scratch"], REJECTED, name + "-*"))
            problems.append(f"{rejected} {spec['records_prefix']} record(s) do not fit the model, "
                            f"nothing published; first: {first}")
        elif counts[f"{name}.scored"] != spec["nrows"]:
            problems.append(f"beam job scored {counts[f'{name}.scored']} of {spec['nrows']} rows of {name}")
    if problems:
        write_json(join(plan["scratch"], publish.REFUSED), {"error": "; ".join(problems)})
        raise art.ArtifactError("; ".join(problems))
    manifest = {**plan["manifest"], "rows": {**plan["manifest"].get("rows", {}),
                                             **{s["name"]: counts[f"{s['name']}.scored"] for s in specs}}}
    if plan.get("export"):
        from batch_predict.serving import export_model
        manifest["export_dir"] = export_model(**plan["export"])
    Staging.reopen(plan["output_dir"], plan["staged"], plan["run_id"]).commit(manifest)
    publish.remove_tree(plan["scratch"])
    log.info("predictions published to %s", plan["output_dir"])


def _first_line(pattern: str) -> str | None:
    lines = head_lines(pattern, 1)
    return lines[0] if lines else None
