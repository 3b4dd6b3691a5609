"""Predict stage: trained factors -> recommendations, targeting lists, similar items, exports and
a servable SavedModel, with original ids restored through the TFT vocabularies.

    python -m batch_predict.run --preproc_dir OUTPUT/preproc --model_dir OUTPUT/model \
        --output_dir OUTPUT/predictions [--mode items_for_user|users_for_item|both]
        [--engine local|beam] [--top_k 10] [--n_similar 10] [--write_scores] [--overwrite]

Outputs (predictions/, formats in batch_predict/outputs.py): batch_pred-* (top-k items per
user, already-seen items excluded), users_for_item-* (top-k users per item, --mode), similar_items-*,
item/user_embeddings-*.json, item/user_factors.csv, popular_items.txt; and the SavedModel in
<model_dir>/export/<version> (batch_predict/serving.py). Everything is checked before anything is
written, staged in a temporary folder and moved into place only when complete.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time

import numpy as np

from batch_predict import artifacts as art
from batch_predict import outputs as out
from batch_predict.topk import recommendation_scorer, similarity_scorer

EXTRAS = ("similar_items", "embeddings", "factors_csv", "popular_items", "export")
PREVIEW_LINES = 5


def _extras(text: str) -> list[str]:
    chosen = [s.strip() for s in text.split(",") if s.strip() and s.strip() != "none"]
    unknown = sorted(set(chosen) - set(EXTRAS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown output(s) {unknown}; choose from {EXTRAS} or none")
    return chosen


def add_args(parser: argparse.ArgumentParser) -> None:
    """Flags the predict stage owns (paths and --top_k/--seed/--overwrite come from the caller)."""
    group = parser.add_argument_group("predict")
    group.add_argument("--mode", choices=["items_for_user", "users_for_item", "both"],
                       default="items_for_user",
                       help="items_for_user: top-k items per visitor (batch_pred-*); "
                            "users_for_item: top-k visitors per item for targeting (users_for_item-*).")
    group.add_argument("--outputs", type=_extras, default=list(EXTRAS),
                       help=f"Comma-separated extras to write besides the top-k lists: {','.join(EXTRAS)} "
                            "(default all; 'none' for none).")
    group.add_argument("--engine", choices=["local", "beam"], default="local",
                       help="local: in-process blocked top-k; beam: a Beam job over blocks of users "
                            "(same runner flags as preprocessing).")
    group.add_argument("--block_size", type=int, default=2048,
                       help="Query rows scored per matrix product (memory ~ block_size x catalog).")
    group.add_argument("--n_similar", type=int, default=10, help="Similar items per item.")
    group.add_argument("--write_scores", action="store_true",
                       help="Also write *_scores-*.jsonl with the score of every recommendation.")
    group.add_argument("--ignore_preproc_path", action="store_true",
                       help="Accept a model whose model.json names another preproc_dir (moved files); "
                            "sizes are still checked.")


class _Side:
    """One direction of the top-k: query rows, candidate columns and the files that go with them."""

    def __init__(self, artifacts: art.Artifacts, users_as_query: bool, vocab_files: dict):
        a = artifacts
        self.query, self.candidates = ((a.row_factors, a.col_factors) if users_as_query
                                       else (a.col_factors, a.row_factors))
        self.query_vocab, self.candidate_vocab = ((a.vocab_users, a.vocab_items) if users_as_query
                                                  else (a.vocab_items, a.vocab_users))
        self.query_vocab_file, self.candidate_vocab_file = (
            (vocab_files[art.VOCAB_USERS], vocab_files[art.VOCAB_ITEMS]) if users_as_query
            else (vocab_files[art.VOCAB_ITEMS], vocab_files[art.VOCAB_USERS]))
        self.seen_prefix = art.ITEMS_FOR_USER if users_as_query else art.USERS_FOR_ITEM
        self.counts_prefix = art.USERS_FOR_ITEM if users_as_query else art.ITEMS_FOR_USER
        self.query_factors_file, self.candidate_factors_file = (
            ("row_factors.npy", "col_factors.npy") if users_as_query
            else ("col_factors.npy", "row_factors.npy"))
        self.output_name = "batch_pred" if users_as_query else "users_for_item"


def _topk_local(side: _Side, a: art.Artifacts, args, staging: out.Staging,
                 seen: art.SeenMatrix, counts: np.ndarray) -> int:
    scorer = recommendation_scorer(side.query, side.candidates, counts)
    return out.write_topk(scorer.blocks(seen, args.top_k, args.block_size), side.query_vocab,
                          side.candidate_vocab, staging.path(out.shard_name(side.output_name)),
                          staging.path(out.shard_name(side.output_name + "_scores", suffix=".jsonl"))
                          if args.write_scores else None)


def _topk_beam(side: _Side, a: art.Artifacts, args, staging: out.Staging,
               counts: np.ndarray, beam_argv: list[str]) -> int:
    from batch_predict.beam_job import run_topk_job
    import tensorflow as tf

    spec = {"seen_pattern": art.join(a.preproc_dir, side.seen_prefix + "-*"),
            "nrows": len(side.query), "ncols": len(side.candidates),
            "block_size": args.block_size, "top_k": args.top_k, "write_scores": args.write_scores,
            "query_factors": art.join(a.model_dir, side.query_factors_file),
            "candidate_factors": art.join(a.model_dir, side.candidate_factors_file),
            "candidate_counts": counts.tolist(),
            "query_vocab": side.query_vocab_file, "candidate_vocab": side.candidate_vocab_file}
    rejected_dir = staging.path("rejected")
    run_topk_job(spec, beam_argv, staging.path(side.output_name),
                 staging.path(side.output_name + "_scores") if args.write_scores else None,
                 art.join(rejected_dir, "rejected"))
    rejected = [line for path in tf.io.gfile.glob(art.join(rejected_dir, "*"))
                for line in tf.io.gfile.GFile(path).read().splitlines()]
    tf.io.gfile.rmtree(rejected_dir)
    if rejected:
        raise art.ArtifactError(f"{len(rejected)} {side.seen_prefix} record(s) do not fit the model, "
                                f"nothing published; first: {rejected[0]}")
    return sum(1 for path in tf.io.gfile.glob(staging.path(side.output_name + "-*"))
               for _ in tf.io.gfile.GFile(path))


def _timed(summary: dict, name: str, fn, *fn_args):
    started = time.time()
    result = fn(*fn_args)
    seconds = time.time() - started
    summary.setdefault("seconds_by_output", {})[name] = round(seconds, 3)
    if isinstance(result, int):
        summary.setdefault("rows", {})[name] = result
        out.log_written(name, result, seconds)
    return result


def _preview(path: str) -> list[str]:
    import tensorflow as tf
    with tf.io.gfile.GFile(path) as f:
        return [line.rstrip("\n") for line, _ in zip(f, range(PREVIEW_LINES))]


def run(args: argparse.Namespace, beam_argv: list[str] | None = None) -> dict:
    """Runs the predict stage; returns a JSON-able summary (rows, paths, seconds, first lines)."""
    started = time.time()
    if args.top_k < 1 or args.block_size < 1 or args.n_similar < 0:
        raise ValueError("--top_k and --block_size must be >= 1 and --n_similar >= 0")
    a = art.load_artifacts(args.preproc_dir, args.model_dir,
                           check_preproc_path=not getattr(args, "ignore_preproc_path", False))
    vocab_files = {name: art.vocabulary_path(args.preproc_dir, name)
                   for name in (art.VOCAB_USERS, art.VOCAB_ITEMS)}
    directions = {"items_for_user": [True], "users_for_item": [False], "both": [True, False]}
    sides = [_Side(a, users_as_query, vocab_files) for users_as_query in directions[args.mode]]
    # Everything below reads and checks all inputs before the staging folder is created.
    item_counts = art.count_per_key(a.preproc_dir, art.USERS_FOR_ITEM, a.nitems)
    user_counts = art.count_per_key(a.preproc_dir, art.ITEMS_FOR_USER, a.nusers)
    seen_items = (art.read_seen(a.preproc_dir, art.ITEMS_FOR_USER, a.nusers, a.nitems)
                  if args.engine == "local" or "export" in args.outputs else None)
    seen_users = (art.read_seen(a.preproc_dir, art.USERS_FOR_ITEM, a.nitems, a.nusers)
                  if args.engine == "local" and args.mode != "items_for_user" else None)
    beam_argv = list(beam_argv or [])
    staging = out.Staging(args.output_dir, args.overwrite)
    summary: dict = {"nusers": a.nusers, "nitems": a.nitems, "engine": args.engine,
                     "mode": args.mode, "top_k": args.top_k, "output_dir": args.output_dir}
    try:
        for side in sides:
            counts = item_counts if side.output_name == "batch_pred" else user_counts
            if args.engine == "beam":
                _timed(summary, side.output_name, _topk_beam, side, a, args, staging, counts,
                       beam_argv)
            else:
                seen = seen_items if side.output_name == "batch_pred" else seen_users
                _timed(summary, side.output_name, _topk_local, side, a, args, staging, seen, counts)
        _write_extras(a, args, staging, summary, item_counts)
        if "export" in args.outputs:
            summary["export_dir"] = _timed(summary, "export", _export, a, vocab_files, seen_items,
                                           item_counts, args.top_k)
        first = sorted(name for name in staging.staged_files()
                       if name.startswith(sides[0].output_name + "-"))
        preview = _preview(staging.path(first[0])) if first else []
        summary["files"] = staging.commit()
    except BaseException:
        staging.abort()
        raise
    summary["first_lines"] = preview
    summary["seconds"] = round(time.time() - started, 3)
    logging.info("batch_predict done in %.2fs: %s", summary["seconds"], summary.get("rows"))
    for line in preview:
        logging.info("batch_predict sample: %s", line)
    return summary


def _export(a: art.Artifacts, vocab_files: dict, seen: art.SeenMatrix, counts: np.ndarray,
            k: int) -> str:
    from batch_predict.serving import export_saved_model
    return export_saved_model(a, vocab_files[art.VOCAB_USERS], vocab_files[art.VOCAB_ITEMS],
                              seen, counts, k)


def _write_extras(a: art.Artifacts, args, staging: out.Staging, summary: dict,
                  item_counts: np.ndarray) -> None:
    if "similar_items" in args.outputs and args.n_similar > 0:
        scorer = similarity_scorer(a.col_factors)
        identity = art.SeenMatrix.identity(a.nitems)
        _timed(summary, "similar_items", out.write_topk,
               scorer.blocks(identity, args.n_similar, args.block_size), a.vocab_items,
               a.vocab_items, staging.path(out.shard_name("similar_items")))
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


def build_parser() -> argparse.ArgumentParser:
    from pipeline.cli import add_shared_args
    parser = argparse.ArgumentParser(prog="python -m batch_predict.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preproc_dir", required=True, help="preproc/ folder (local or gs://).")
    parser.add_argument("--model_dir", required=True, help="model/ folder (local or gs://).")
    parser.add_argument("--output_dir", required=True, help="predictions/ folder to write.")
    add_shared_args(parser)
    add_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args, beam_argv = build_parser().parse_known_args(argv)
    try:
        summary = run(args, beam_argv)
    except (art.ArtifactError, ValueError) as exc:
        logging.error("error: %s", exc)
        return 2
    print("\n".join(summary["first_lines"]), flush=True)
    return 0


if __name__ == "__main__":
    from pipeline.beam_runner import exit_process
    exit_process(main())
