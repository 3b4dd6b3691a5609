"""The co-occurrence (PMI) similar-items job as small composite PTransforms (issue 13, part 1).

    row batches (pipeline.sources: visitorId, contentId, value)
      | ItemsPerGroup(cap)          -> (group, its distinct items, capped)    one per group
      | CountCooccurrences()        -> pair counts, item counts, group count
      | ScorePairs(shift, min_count) -> (item, (neighbour, SPPMI)) both ways
      | TopSimilar(n)               -> (item, [(neighbour, score), ...] best first)

The math (PMI, the shift, the cap) is stated once in transforms/cooccurrence.py. Groups are
visitors over the input's window (`--cooc_scope visitor`) or sessions (`session`). Rows whose value is not positive count
as no interaction, as in preprocess (pairs summed to <= 0 are dropped there). With
`--cooc_scope session` the GA sources key rows by visitor and session (ga.session_interactions,
and the same key in the BigQuery preset query).
"""
from __future__ import annotations

import datetime
import json
import logging
import time
import uuid

import apache_beam as beam

from stagekit import artifacts, beam_runner, lock, publish
from pipeline.sources import counts, sql
from pipeline.sources.read import merge_stats, source_transform
from pipeline.sources.rows import ROW_SCHEMA
from transforms import cooccurrence

LOG = logging.getLogger("pipeline.cooc")


class CoocError(counts.InputRefused):
    """The stage refused or failed for a reason the message explains (exit code 1)."""


_GROUP, _ITEM, _VALUE = (field.name for field in ROW_SCHEMA)


def _group_item_pairs(batch):
    """(visitorId, contentId) of each row of an arrow batch with a positive value."""
    groups, items, values = (batch.column(name).to_pylist() for name in (_GROUP, _ITEM, _VALUE))
    return [(group, item) for group, item, value in zip(groups, items, values) if value > 0]


class ItemsPerGroup(beam.PTransform):
    """Row batches -> (group, sorted distinct items, at most `cap`)."""

    def __init__(self, cap: int = cooccurrence.DEFAULT_CAP):
        super().__init__()
        self._cap = cap

    def expand(self, row_batches):
        return (row_batches
                | "GroupItemPairs" >> beam.FlatMap(_group_item_pairs)
                | "GroupByGroup" >> beam.GroupByKey()
                | "CapItems" >> beam.MapTuple(
                    lambda group, items: (group, cooccurrence.capped_items(group, items, self._cap))))


class CountCooccurrences(beam.PTransform):
    """(group, items) -> {"pairs": ((a, b), n_ab), "items": (item, n_item), "groups": G}."""

    def expand(self, groups):
        lists = groups | "Items" >> beam.Values()
        return {
            "pairs": (lists
                      | "Pairs" >> beam.FlatMap(lambda items: ((pair, 1) for pair in
                                                              cooccurrence.item_pairs(items)))
                      | "SumPairs" >> beam.CombinePerKey(sum)),
            "items": (lists
                      | "EachItem" >> beam.FlatMap(lambda items: ((item, 1) for item in items))
                      | "SumItems" >> beam.CombinePerKey(sum)),
            "groups": lists | "CountGroups" >> beam.combiners.Count.Globally(),
        }


def _scored_both_ways(pair_count, item_counts: dict, groups: int, shift: float, min_count: int):
    (a, b), count = pair_count
    score = cooccurrence.sppmi(count, item_counts[a], item_counts[b], groups, shift, min_count)
    if score is not None:
        yield a, (b, score)
        yield b, (a, score)


class ScorePairs(beam.PTransform):
    """The counts -> (item, (neighbour, SPPMI)) for each kept pair, in both directions. The item
    counts travel as a side input (one entry per item: the catalog, not the interactions)."""

    def __init__(self, shift: float = cooccurrence.DEFAULT_SHIFT,
                 min_count: int = cooccurrence.DEFAULT_MIN_COUNT):
        super().__init__()
        self._shift, self._min_count = shift, min_count

    def expand(self, counts):
        return counts["pairs"] | "SPPMI" >> beam.FlatMap(
            _scored_both_ways, beam.pvalue.AsDict(counts["items"]),
            beam.pvalue.AsSingleton(counts["groups"]), self._shift, self._min_count)


class TopSimilar(beam.PTransform):
    """(item, (neighbour, score)) -> (item, the n best (neighbour, score)), best first, equal
    scores -> lower id first."""

    def __init__(self, n: int):
        super().__init__()
        self._n = n

    def expand(self, scored):
        return (scored
                | "TopPerItem" >> beam.combiners.Top.PerKey(self._n, key=cooccurrence.ranking_key))


def similar_items_line(item_and_neighbours) -> str:
    """`contentId<TAB>contentId1,contentId2,...` (best first), the similar_items-* format."""
    item, neighbours = item_and_neighbours
    return "\t".join([item.decode("utf-8"), ",".join(n.decode("utf-8") for n, _ in neighbours)])


def similar_items_scores_line(item_and_neighbours) -> str:
    """`{"id", "ids", "scores"}` (best first, same order as similar_items_line), the shape of the
    predict stage's similar_items_scores-*.jsonl. Scores rounded to 6 decimals: float32-like
    precision, short lines, and a non-increasing list stays non-increasing."""
    item, neighbours = item_and_neighbours
    return json.dumps({"id": item.decode("utf-8"),
                       "ids": [n.decode("utf-8") for n, _ in neighbours],
                       "scores": [round(float(score), 6) for _, score in neighbours]})


# --- the stage's job ---------------------------------------------------------------------------

MARKER = "manifest.json"  # written last: cooc/ is complete when it is there


def make_plan(args, final: str) -> dict:
    """What the in-pipeline finishing step needs, as plain values (it runs on a worker)."""
    scratch = artifacts.join(args.output_dir, f"_tmp_cooc_{uuid.uuid4().hex[:8]}")
    return {"final": final, "scratch": scratch, "staging": artifacts.join(scratch, "cooc"),
            "run_id": uuid.uuid4().hex, "started": time.time(), "source": args.source,
            "input": args.table if args.source == "bigquery" else args.input,
            "max_rejected_fraction": args.max_rejected_fraction,
            "settings": {"scope": args.cooc_scope, "max_items": args.cooc_max_items,
                         "pmi_shift": args.pmi_shift, "pmi_min_count": args.pmi_min_count,
                         "top_n": args.cooc_top_n, "embedding_dim": args.pmi_embedding_dim},
            "seed": args.seed}


def build_pipeline(pipeline: beam.Pipeline, source: beam.PTransform, args, plan: dict) -> None:
    """The whole stage, top to bottom; the last step checks the counts and publishes."""
    staging = plan["staging"]
    read = pipeline | "Read" >> source
    rejects_written = (read.rejected | "RejectToJson" >> beam.Map(json.dumps, sort_keys=True)
                       | "WriteRejects" >> beam.io.WriteToText(artifacts.join(staging, "rejected")))
    groups = read.rows | "ItemsPerGroup" >> ItemsPerGroup(args.cooc_max_items)
    counts = groups | "Count" >> CountCooccurrences()
    scored = counts | "Score" >> ScorePairs(args.pmi_shift, args.pmi_min_count)
    similar = scored | "Top" >> TopSimilar(args.cooc_top_n)
    item_ids = counts["items"] | "ItemIds" >> beam.Keys()
    lines_written = (similar | "Lines" >> beam.Map(similar_items_line)
                     | "WriteSimilar" >> beam.io.WriteToText(
                         artifacts.join(staging, "pmi_similar_items")))
    scores_written = (similar | "ScoresLines" >> beam.Map(similar_items_scores_line)
                      | "WriteSimilarScores" >> beam.io.WriteToText(
                          artifacts.join(staging, "pmi_similar_items_scores"),
                          file_name_suffix=".jsonl"))
    stats = read.stats | "MergeStats" >> beam.CombineGlobally(merge_stats)
    listed = similar | "CountListed" >> beam.combiners.Count.Globally()
    pairs = counts["pairs"] | "CountPairs" >> beam.combiners.Count.Globally()
    _ = (pipeline | "Once" >> beam.Create([None])
         | "CheckPublish" >> beam.Map(
             finish_stage, plan, beam.pvalue.AsSingleton(stats),
             beam.pvalue.AsSingleton(counts["groups"]), beam.pvalue.AsSingleton(pairs),
             beam.pvalue.AsSingleton(listed), beam.pvalue.AsList(item_ids),
             beam.pvalue.AsList(scored), beam.pvalue.AsList(rejects_written),
             beam.pvalue.AsList(lines_written), beam.pvalue.AsList(scores_written)))


def finish_stage(_, plan: dict, stats: dict, groups: int, pairs: int, listed: int,
                 item_ids: list, scored: list, *written) -> None:
    """Refuses (counts that do not add up, too many rejects, nothing read) or publishes cooc/.
    Idempotent, like preprocess's: a retried bundle finds its own marker and stops."""
    if publish.marker_run_id(plan["final"], MARKER) == plan["run_id"]:
        publish.remove_tree(plan["scratch"])
        return
    try:
        counts.check_counts(plan, {**stats, "rated_rows": groups}, "cooc")
    except counts.InputRefused as refusal:
        artifacts.write_json(artifacts.join(plan["scratch"], publish.REFUSED), {"error": str(refusal)})
        raise
    manifest = {"run_id": plan["run_id"], "source": plan["source"], "input": plan["input"],
                "input_rows": stats["input_rows"], "accepted_rows": stats["accepted_rows"],
                "rejected_rows": stats["rejected_rows"],
                "rejected_by_reason": {k.split(".", 1)[1]: v for k, v in sorted(stats.items())
                                       if k.startswith("rejected.")},
                "groups": groups, "pairs": pairs, "items_with_similar": listed,
                **plan["settings"],
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "seconds": round(time.time() - plan["started"], 3)}
    if not artifacts.exists(artifacts.join(plan["staging"], MARKER)):
        if plan["settings"]["embedding_dim"]:
            write_embeddings(plan, item_ids, scored)
        publish.write_marker(plan["staging"], MARKER, manifest)
    publish.publish(plan["staging"], plan["final"], MARKER, plan["run_id"])
    publish.remove_tree(plan["scratch"])
    LOG.info("cooc: %d groups, %d co-occurring pairs, %d items with similar items, %.1f s -> %s",
             groups, pairs, listed, manifest["seconds"], plan["final"])


EMBEDDINGS = "pmi_item_embeddings.json"


def write_embeddings(plan: dict, item_ids: list, scored: list) -> None:
    """The PMI matrix factorised by WALS (factorization/pmi_embeddings.py), as JSON lines."""
    from stagekit.textfile import write_embeddings as write_json_lines
    from factorization.pmi_embeddings import pmi_embeddings  # TensorFlow: on this worker only
    ids, factors, _ = pmi_embeddings(item_ids, scored, plan["settings"]["embedding_dim"],
                                     plan["seed"])
    write_json_lines(artifacts.join(plan["staging"], EMBEDDINGS),
                     [item.decode("utf-8") for item in ids], factors)


def run(args, beam_argv: list[str]) -> dict:
    """Runs the job for checked flags (with their default --input); returns manifest.json."""
    final = artifacts.stage_dir(args.output_dir, artifacts.COOC)
    source = source_transform(args, session_key=args.cooc_scope == "session")
    options = beam_runner.pipeline_options(
        beam_argv, input_size=0 if args.source == "bigquery" else beam_runner.input_bytes(args.input))
    if args.source == "bigquery":
        sql.check_bigquery_ready(options)
    if artifacts.exists(final) and artifacts.gfile().listdir(final) and not args.overwrite:
        raise CoocError(f"{final} is not empty; pass --overwrite to replace it (only once "
                              "the new output is complete) or choose another --output_dir")
    plan = make_plan(args, final)
    launched = beam_runner.is_template_launch(options)
    lock.mark_scratch(plan["scratch"], plan["run_id"], launched=launched)
    LOG.info("cooc: source=%s input=%s runner=%s", args.source, plan["input"],
             beam_runner.describe(options))
    pipeline = beam.Pipeline(runner=beam_runner.runner_for(options), options=options)
    build_pipeline(pipeline, source, args, plan)
    try:
        with beam_runner.without_state_cache(), beam_runner.streamed_stage_inputs():
            result = pipeline.run()
            if launched:  # the job runs later (Dataflow) and publishes cooc/ itself at its end
                LOG.info("cooc: job graph staged; the job publishes %s itself when it ends", final)
                return {"launched": final, "run_id": plan["run_id"]}
            result.wait_until_finish()
    except BaseException:
        refusal = artifacts.join(plan["scratch"], publish.REFUSED)
        if artifacts.exists(refusal):  # refused in the pipeline: keep the rejects for the user
            raise CoocError(artifacts.read_json(refusal)["error"]) from None
        if artifacts.exists(plan["scratch"]):
            publish.remove_tree(plan["scratch"])
        raise
    manifest = artifacts.read_json(artifacts.join(final, MARKER))
    if manifest.get("run_id") != plan["run_id"]:
        raise CoocError(f"the pipeline finished but {final} was not published by it")
    LOG.info("cooc: %d input rows = %d accepted + %d rejected %s", manifest["input_rows"],
             manifest["accepted_rows"], manifest["rejected_rows"], manifest["rejected_by_reason"])
    return manifest
