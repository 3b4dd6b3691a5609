"""The preprocess stage's last step, inside its own Beam pipeline: check the counts, write
metadata.json, publish the staged folder (stagekit/publish.py).

It runs once, on a worker, after every output is written, so the published preproc/ is complete
whether or not the process that launched the job is still there (a Flex Template launcher is
not). A refusal (no rows, too many rejects, counts that do not add up) raises PreprocessError
after writing its message to the scratch folder's refused.json, and publishes nothing: the
previous preproc/ stays as it was, and the scratch folder keeps the rejects that explain it.
"""
import datetime
import logging
import time
import uuid

import apache_beam as beam
import tensorflow as tf

from stagekit import artifacts, publish
from pipeline.preprocess.errors import PreprocessError
from pipeline.sources import counts
from transforms import preprocessing as pp

LOG = logging.getLogger("pipeline.preprocess")
REFUSED = publish.REFUSED
MARKER = "metadata.json"  # written last: preproc/ is complete when it is there


def make_plan(args, preproc: str) -> dict:
    """Everything the in-pipeline finishing step needs, as plain values (it runs on a worker)."""
    scratch = artifacts.join(args.output_dir, f"_tmp_preprocess_{uuid.uuid4().hex[:8]}")
    return {"preproc": preproc, "scratch": scratch,
            # the new output until it is published, and TFT's temp files
            "staging": artifacts.join(scratch, artifacts.PREPROC), "tft_temp": artifacts.join(scratch, "tft"),
            "run_id": uuid.uuid4().hex, "started": time.time(),
            "source": args.source, "ga_preset": None if args.source == "interactions" else args.ga_preset,
            "ga_schema": None if args.source == "interactions" else getattr(args, "ga_schema", "ua"),
            "input": args.table if args.source == "bigquery" else args.input,
            "rating_scale": args.rating_scale, "max_rejected_fraction": args.max_rejected_fraction}


class FinishPreprocess(beam.PTransform):
    """The stage's last step, inside its own pipeline: check the counts, write metadata.json,
    publish the staged folder (stagekit/publish.py).

    It runs once, on a worker, after every output is written: the merged stats (which include
    the Example counts of both TFRecord sides) and the completion outputs of the other writers
    are its side inputs. So the output is complete whether or not the process that launched the
    job is still there (a Flex Template launcher is not).
    """

    def __init__(self, plan: dict, stats, written: list):
        super().__init__()
        self._plan, self._stats, self._written = plan, stats, written

    def expand(self, pbegin):
        return (pbegin
                | "Once" >> beam.Create([None])
                | "CheckWriteMetadataPublish" >> beam.Map(
                    finish_stage, self._plan, beam.pvalue.AsSingleton(self._stats),
                    *[beam.pvalue.AsList(done) for done in self._written]))


def finish_stage(_, plan: dict, stats: dict, *written) -> None:
    """Refuses (PreprocessError, its message also in scratch/refused.json) or publishes.

    Idempotent: Dataflow retries a failed bundle, so this may run again after a crash at any
    point, even after the publish completed."""
    if publish.marker_run_id(plan["preproc"], MARKER) == plan["run_id"]:
        publish.remove_tree(plan["scratch"])  # published by an earlier attempt
        return
    try:
        counts.check_counts(plan, stats, "preprocess")
        metadata = _metadata(plan, stats)
    except counts.InputRefused as refusal:
        artifacts.write_json(artifacts.join(plan["scratch"], REFUSED), {"error": str(refusal)})
        raise
    if not tf.io.gfile.exists(artifacts.join(plan["staging"], MARKER)):  # kept from an earlier attempt
        publish.write_marker(plan["staging"], MARKER, metadata)
    publish.publish(plan["staging"], plan["preproc"], MARKER, plan["run_id"])
    publish.remove_tree(plan["scratch"])  # TFT's temp files
    LOG.info("preprocess: %d users x %d items, %d interactions, median value %s, %.1f s -> %s",
             metadata["nusers"], metadata["nitems"], metadata["interactions"],
             metadata["rating"]["median_value"], metadata["seconds"], plan["preproc"])


def _metadata(plan: dict, stats: dict) -> dict:
    staging, preproc = plan["staging"], plan["preproc"]
    sizes, vocab = {}, {}
    for name, key in artifacts.VOCABS.items():
        staged = artifacts.vocab_path(staging, name)
        if not tf.io.gfile.exists(staged):
            raise PreprocessError(f"vocabulary {name} was not written to {staged}")
        sizes[key], vocab[name] = artifacts.count_lines(staged), artifacts.vocab_path(preproc, name)
    for prefix in artifacts.SHARD_PREFIXES:  # a writer's files must still be there to publish
        if not tf.io.gfile.glob(artifacts.join(staging, prefix + "-*")):
            raise PreprocessError(f"no {prefix} shards in {staging}; nothing published")
    nusers, nitems = sizes["nusers"], sizes["nitems"]
    interactions = stats.get("rated_rows", 0)
    if (stats.get("examples.items_for_user"), stats.get("examples.users_for_item")) != (nusers, nitems):
        raise PreprocessError(f"vocabularies ({nusers} users, {nitems} items) disagree with the "
                              f"Examples written ({stats.get('examples.items_for_user')}, "
                              f"{stats.get('examples.users_for_item')}); nothing published")
    return {
        "nusers": nusers, "nitems": nitems, "interactions": interactions,
        "input_rows": stats["input_rows"], "accepted_rows": stats["accepted_rows"],
        "rejected_rows": stats["rejected_rows"],
        "rejected_by_reason": counts.rejected_by_reason(stats),
        "dropped_nonpositive_pairs": stats.get("dropped_nonpositive_pairs", 0),
        "source": plan["source"], "ga_schema": plan.get("ga_schema"), "ga_preset": plan["ga_preset"],
        "input": plan["input"],
        "rating": {"median_value": stats.get("max_median_value"), "scale": plan["rating_scale"],
                   "min": stats.get("min_rating"), "max": stats.get("max_rating"),
                   "mean": stats.get("sum_rating", 0.0) / interactions if interactions else None},
        "vocab_users": artifacts.absolute(vocab[pp.VOCAB_USERS]),
        "vocab_items": artifacts.absolute(vocab[pp.VOCAB_ITEMS]),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        # identifies this preprocess output wherever it is copied; the model records it
        "run_id": plan["run_id"],
        "seconds": round(time.time() - plan["started"], 3),
    }
