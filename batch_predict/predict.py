"""The predict stage's work: trained factors -> top-k lists, targeting lists, similar items,
exports and the SavedModel (batch_predict/run.py is its command line; the docstring there lists
the outputs). This module imports TensorFlow (top-k, outputs, serving): batch_predict.run imports
it only to run the stage.
"""
from __future__ import annotations

import argparse
import logging
import time

import numpy as np

from batch_predict import artifacts as art
from batch_predict import filters
from batch_predict import outputs as out
from batch_predict.artifacts import Direction, entities
from batch_predict.serving import export_saved_model
from batch_predict.topk import recommendation_scorer, similarity_scorer
from stagekit.artifacts import head_lines, join, read_json
from stagekit.publish import REFUSED

log = logging.getLogger("batch_predict.run")

PREVIEW_LINES = 5


def _topk_local(direction: Direction, args, staging: out.Staging, seen: art.SeenMatrix,
                candidate_counts: np.ndarray) -> int:
    scorer = recommendation_scorer(direction.query.factors, direction.candidates.factors,
                                   candidate_counts, direction.excluded, direction.blank)
    name = direction.output_name
    return out.write_topk(scorer.blocks(seen, args.top_k, args.block_size), direction.query.vocab,
                          direction.candidates.vocab, staging.path(out.shard_name(name)),
                          staging.path(out.shard_name(name + "_scores", suffix=".jsonl"))
                          if args.write_scores else None)


def _beam_spec(direction: Direction, args, candidate_counts: np.ndarray) -> dict:
    """Plain values for the Beam job's workers: they read factors and vocabularies themselves."""
    query, candidates = direction.query, direction.candidates
    return {"name": direction.output_name, "records_prefix": query.records_prefix,
            "seen_pattern": join(args.preproc_dir, query.records_prefix + "-*"),
            "nrows": len(query.vocab), "ncols": len(candidates.vocab),
            "block_size": args.block_size, "top_k": args.top_k, "write_scores": args.write_scores,
            "query_factors": join(args.model_dir, query.factors_file),
            "candidate_factors": join(args.model_dir, candidates.factors_file),
            "candidate_counts": candidate_counts.tolist(),
            "excluded": None if direction.excluded is None else direction.excluded.tolist(),
            "blank": None if direction.blank is None else direction.blank.tolist(),
            "query_vocab": query.vocab_file, "candidate_vocab": candidates.vocab_file}


def _run_beam_job(directions: list[Direction], args, staging: out.Staging, counts: dict,
                  summary: dict, lineage: dict, left_out: np.ndarray | None,
                  beam_argv: list[str]) -> bool:
    """One Beam job for every direction; it publishes the staged folder itself as its last step.
    Returns False after a template launch (the job runs later), True once it has published."""
    import apache_beam as beam
    import tensorflow as tf
    from batch_predict.beam_job import build_topk_pipeline
    from stagekit import beam_runner

    specs = [_beam_spec(d, args, counts[d.candidates.name]) for d in directions]
    scratch = staging.dir + "_job"  # dead letters and the refusal: never published
    plan = {"staged": staging.dir, "scratch": scratch, "output_dir": staging.output_dir,
            "run_id": staging.run_id,
            "manifest": {"rows": dict(summary.get("rows", {})), **lineage},
            # the SavedModel is exported by the job's last step, once nothing can refuse any more
            "export": {"preproc_dir": args.preproc_dir, "model_dir": args.model_dir, "top_k": args.top_k,
                       "check_preproc_path": not getattr(args, "ignore_preproc_path", False),
                       "keep_versions": args.keep_versions,
                       "excluded_items": None if left_out is None else left_out.tolist()}
            if "export" in args.outputs else None,
            "bigquery": _bigquery_plan(args, lineage["model_run_id"])}
    options = beam_runner.pipeline_options(beam_argv, input_size=sum(
        beam_runner.input_bytes(spec["seen_pattern"]) for spec in specs))
    if beam_runner.is_template_launch(options):  # its job outlives this process
        from stagekit import lock
        lock.mark_scratch(staging.dir, staging.run_id, launched=True)
    log.info("beam job on %s", beam_runner.describe(options))
    pipeline = beam.Pipeline(runner=beam_runner.runner_for(options), options=options)
    build_topk_pipeline(pipeline, specs, plan)
    try:
        result = pipeline.run()
        if beam_runner.is_template_launch(options):
            log.info("job graph staged; the job publishes %s itself when it ends", staging.output_dir)
            return False
        result.wait_until_finish()
    except BaseException:
        refusal = join(scratch, REFUSED)
        message = read_json(refusal)["error"] if tf.io.gfile.exists(refusal) else None
        for folder in (scratch, staging.dir):
            if tf.io.gfile.exists(folder):
                tf.io.gfile.rmtree(folder)
        if message:
            raise art.ArtifactError(message) from None
        raise
    manifest = read_json(join(staging.output_dir, out.MANIFEST))
    if manifest.get("run_id") != staging.run_id:
        raise RuntimeError(f"the Beam job finished but did not publish {staging.output_dir}")
    summary.setdefault("rows", {}).update({d.output_name: manifest["rows"][d.output_name]
                                           for d in directions})
    if manifest.get("export_dir"):
        summary["export_dir"] = manifest["export_dir"]
    return True


def _bigquery_plan(args, model_run_id: str | None) -> dict | None:
    """What the BigQuery outputs need (plain values): None without --bigquery_dataset."""
    from batch_predict import bigquery

    if not getattr(args, "bigquery_dataset", None):
        return None
    return {"sources": [(source, args.output_dir) for source in
                        bigquery.prediction_sources(args.mode, args.outputs, args.n_similar)]
                       + bigquery.cooc_sources(args.output_dir),
            "dataset": args.bigquery_dataset, "model_run_id": model_run_id,
            "run_date": bigquery.run_date_of(args.bigquery_run_date)}


def _write_bigquery_local(args, model_run_id: str | None, beam_argv: list[str]) -> None:
    """The local engine's BigQuery tables: a Beam pipeline of their own over the published
    files (same runner flags as the Beam engine)."""
    import apache_beam as beam
    from batch_predict.bigquery_write import BigQueryOutputs
    from stagekit import beam_runner

    options = beam_runner.pipeline_options(beam_argv)
    with beam.Pipeline(runner=beam_runner.runner_for(options), options=options) as pipeline:
        _ = (pipeline | "Once" >> beam.Create([None])
             | "BigQueryOutputs" >> BigQueryOutputs(**_bigquery_plan(args, model_run_id)))
    log.info("BigQuery tables written to %s", args.bigquery_dataset)


def _lineage(a) -> dict:
    """Which preprocess run and which training run the predictions come from (manifest.json)."""
    return {"preproc_run_id": a.metadata.get("run_id"), "model_run_id": a.model_info.get("run_id")}


def _timed(summary: dict, name: str, fn, *fn_args):
    started = time.time()
    result = fn(*fn_args)
    seconds = time.time() - started
    summary.setdefault("seconds_by_output", {})[name] = round(seconds, 3)
    if isinstance(result, int) and not isinstance(result, bool):
        summary.setdefault("rows", {})[name] = result
        out.log_written(name, result, seconds)
    return result


def _read_records(a: art.Artifacts, args, directions: list[Direction], recommend: Direction
                  ) -> tuple[dict[str, art.SeenMatrix], dict[str, np.ndarray]]:
    """Reads (and checks) the records the outputs need, before anything is written.

    seen: output name -> what each query row already has (local engine; the export needs the
    users' one); counts: entity name -> records' lengths, i.e. popularity of each candidate
    (users per item; items per user for targeting), which scores cold query rows.
    """
    seen_needed = [d for d in directions if args.engine == "local"]
    if "export" in args.outputs and args.engine == "local" and recommend not in seen_needed:
        seen_needed.append(recommend)  # the Beam engine's job reads it itself (export_model)
    seen = {d.output_name: art.read_seen(a.preproc_dir, d.query.records_prefix,
                                         len(d.query.vocab), len(d.candidates.vocab))
            for d in seen_needed}
    counted = {d.candidates.name: d.candidates for d in directions}
    if {"popular_items", "export"} & set(args.outputs):
        counted["items"] = recommend.candidates
    counts = {name: art.count_per_key(a.preproc_dir, e.records_prefix, len(e.vocab))
              for name, e in counted.items()}
    return seen, counts


def run(args: argparse.Namespace, beam_argv: list[str] | None = None) -> dict:
    """Runs the stage for flags batch_predict.run.run has checked; returns a JSON-able summary
    (rows, paths, seconds, first lines)."""
    started = time.time()
    a = art.load_artifacts(args.preproc_dir, args.model_dir,
                           check_preproc_path=not getattr(args, "ignore_preproc_path", False))
    users, items = entities(a)
    left_out = filters.filtered_items(args, a.vocab_items)  # --exclude_items / --include_items
    recommend = Direction("batch_pred", users, items, excluded=left_out)
    target = Direction("users_for_item", items, users, blank=left_out)
    directions = {"items_for_user": [recommend], "users_for_item": [target],
                  "both": [recommend, target]}[args.mode]
    seen, counts = _read_records(a, args, directions, recommend)
    staging = out.Staging(args.output_dir, args.overwrite)
    summary: dict = {"nusers": a.nusers, "nitems": a.nitems, "engine": args.engine,
                     "mode": args.mode, "top_k": args.top_k, "output_dir": args.output_dir}
    try:
        if args.engine == "local":
            for d in directions:
                _timed(summary, d.output_name, _topk_local, d, args, staging, seen[d.output_name],
                       counts[d.candidates.name])
        # the Beam engine stages these first: its job publishes the folder as its last step
        _write_extras(a, args, staging, summary, counts.get("items"), left_out)
        if "export" in args.outputs and args.engine == "local":
            summary["export_dir"] = _timed(summary, "export", export_saved_model, a,
                                           users.vocab_file, items.vocab_file, seen["batch_pred"],
                                           counts["items"], args.top_k, args.keep_versions,
                                           left_out)
        if args.engine == "beam":
            if not _timed(summary, "beam_job", _run_beam_job, directions, args, staging, counts,
                          summary, _lineage(a), left_out, list(beam_argv or [])):
                return {**summary, "launched": args.output_dir, "first_lines": []}
            summary["files"] = [join(args.output_dir, name) for name in
                                read_json(join(args.output_dir, out.MANIFEST))["files"]]
        else:
            summary["files"] = staging.commit({"rows": summary.get("rows", {}), **_lineage(a)})
            if getattr(args, "bigquery_dataset", None):
                _timed(summary, "bigquery", _write_bigquery_local, args,
                       _lineage(a)["model_run_id"], list(beam_argv or []))
    except BaseException:
        staging.abort()
        raise
    first = sorted(path for path in summary["files"]
                   if path.rsplit("/", 1)[-1].startswith(directions[0].output_name + "-"))
    preview = head_lines(first[0], PREVIEW_LINES) if first else []
    summary["first_lines"] = preview
    summary["seconds"] = round(time.time() - started, 3)
    log.info("done in %.2fs: %s", summary["seconds"], summary.get("rows"))
    for line in preview:
        log.info("sample: %s", line)
    return summary


def _write_extras(a: art.Artifacts, args, staging: out.Staging, summary: dict,
                  item_counts: np.ndarray, left_out: np.ndarray | None) -> None:
    if "similar_items" in args.outputs and args.n_similar > 0:
        scorer = similarity_scorer(a.col_factors, left_out)
        identity = art.SeenMatrix.identity(a.nitems)
        # scores always (not only with --write_scores): nitems x n_similar is small, and the
        # report and the BigQuery table show the similarity next to each similar item
        _timed(summary, "similar_items", out.write_topk,
               scorer.blocks(identity, args.n_similar, args.block_size), a.vocab_items,
               a.vocab_items, staging.path(out.shard_name("similar_items")),
               staging.path(out.shard_name("similar_items_scores", suffix=".jsonl")))
    if "embeddings" in args.outputs:
        for name, vocab, factors in (("item_embeddings", a.vocab_items, a.col_factors),
                                     ("user_embeddings", a.vocab_users, a.row_factors)):
            _timed(summary, name, out.write_embeddings,
                   staging.path(out.shard_name(name, suffix=".json")), vocab, factors)
    if "factors_csv" in args.outputs:
        for name, vocab, factors in (("item_factors", a.vocab_items, a.col_factors),
                                     ("user_factors", a.vocab_users, a.row_factors)):
            _timed(summary, name, out.write_factors_csv, staging.path(name + ".csv"), vocab, factors)
    if "popular_items" in args.outputs:
        _timed(summary, "popular_items", out.write_popular, staging.path("popular_items.txt"),
               a.vocab_items, item_counts)
