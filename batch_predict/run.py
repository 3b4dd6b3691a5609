"""Predict stage: trained factors -> recommendations, targeting lists, similar items, exports and
a servable SavedModel, with original ids restored through the TFT vocabularies.

    python -m batch_predict.run --preproc_dir OUTPUT/preproc --model_dir OUTPUT/model \
        --output_dir OUTPUT/predictions [--mode items_for_user|users_for_item|both]
        [--engine local|beam] [--top_k 10] [--n_similar 10] [--write_scores] [--overwrite]
        [--bigquery_dataset PROJECT.DATASET [--bigquery_run_date YYYYMMDD]]

Outputs (predictions/, formats in batch_predict/outputs.py): batch_pred-* (top-k items per
user, already-seen items excluded), users_for_item-* (top-k users per item, --mode), their
*_scores-*.jsonl (--write_scores), similar_items-* with similar_items_scores-*.jsonl (always),
item/user_embeddings-*.json, item/user_factors.csv, popular_items.txt; and the SavedModel in
<model_dir>/export/<version> (batch_predict/serving.py); with --bigquery_dataset, the same outputs
as BigQuery tables (batch_predict/bigquery.py), written once the folder is published. Everything
is checked before anything is written, staged in a temporary folder and moved into place only
when complete.
"""
from __future__ import annotations

import argparse
import logging

from batch_predict import artifacts as art
from batch_predict import bigquery
from batch_predict import filters
from stagekit import cli

# This module is the stage's command line (flags, their checks, `run`); the work, which imports
# TensorFlow, is in batch_predict/predict.py, imported only once the flags have passed.
log = logging.getLogger(__name__)

EXTRAS = ("similar_items", "embeddings", "factors_csv", "popular_items", "export")


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
    group.add_argument("--exclude_items", default=None, metavar="FILE",
                       help="contentIds never to recommend, one a line (local or gs://): expired "
                            "articles, products out of stock. Applies to batch_pred, similar "
                            "items, targeting lists (theirs are empty) and the SavedModel.")
    group.add_argument("--include_items", default=None, metavar="FILE",
                       help="contentIds that alone may be recommended, one a line (local or "
                            "gs://); with --exclude_items, those minus the excluded ones.")
    group.add_argument("--keep_versions", type=int, default=3,
                       help="SavedModel versions kept under model/export/ (the newest; older ones "
                            "are deleted only after a new version is complete); 0 keeps all.")
    group.add_argument("--write_scores", action="store_true",
                       help="Also write batch_pred_scores-*.jsonl / users_for_item_scores-*.jsonl "
                            "with the score of every recommendation and targeted visitor "
                            "(similar_items_scores-*.jsonl is always written).")
    group.add_argument("--bigquery_dataset", default=None, metavar="PROJECT.DATASET",
                       help="Also write the outputs as BigQuery tables in this dataset "
                            "(recommendations, targeting, similar_items, item_embeddings, "
                            "user_embeddings), each partitioned by run_date; a run replaces its "
                            "run date's partition. Turns --write_scores on.")
    group.add_argument("--bigquery_run_date", default=None, metavar="YYYYMMDD",
                       help="run_date of the BigQuery rows and the partition replaced (default: "
                            "today, UTC); with --bigquery_dataset.")
    group.add_argument("--ignore_preproc_path", action="store_true",
                       help="Accept a model whose model.json names another preproc_dir (moved files); "
                            "sizes are still checked.")


def validate_args(args: argparse.Namespace) -> None:
    """Flag values alone (the driver checks every stage's before any stage starts): no files,
    no heavy import."""
    if args.top_k < 1 or args.block_size < 1 or args.n_similar < 0:
        raise ValueError("--top_k and --block_size must be >= 1 and --n_similar >= 0")
    cli.check_range(args, "keep_versions", 0)
    if getattr(args, "bigquery_dataset", None) is not None:
        bigquery.validate_dataset(args.bigquery_dataset)
        bigquery.run_date_of(args.bigquery_run_date)
    elif getattr(args, "bigquery_run_date", None) is not None:
        raise ValueError("--bigquery_run_date needs --bigquery_dataset")


def check_inputs(args: argparse.Namespace) -> None:
    """What the flags name must be there: the --exclude_items / --include_items files."""
    filters.check_files(args)


def check_beam_args(args: argparse.Namespace, beam_argv: list[str]) -> None:
    """What the flags need of the Beam flags: --bigquery_dataset a gs:// --temp_location."""
    if getattr(args, "bigquery_dataset", None):
        bigquery.check_load_location(beam_argv)


def run(args: argparse.Namespace, beam_argv: list[str] | None = None) -> dict:
    """Runs the predict stage; returns a JSON-able summary (rows, paths, seconds, first lines)."""
    validate_args(args)
    check_inputs(args)
    check_beam_args(args, list(beam_argv or []))
    from batch_predict import predict  # TensorFlow: only now

    if getattr(args, "bigquery_dataset", None):
        args.write_scores = True  # the tables' scores come from the *_scores files

    return predict.run(args, beam_argv)


def build_parser() -> argparse.ArgumentParser:
    return cli.stage_parser(
        "python -m batch_predict.run", __doc__,
        {"--preproc_dir": "preproc/ folder (local or gs://).",
         "--model_dir": "model/ folder (local or gs://).",
         "--output_dir": "predictions/ folder to write."},
        add_args)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format=cli.LOG_FORMAT)
    args, beam_argv = build_parser().parse_known_args(argv)
    try:
        summary = run(args, beam_argv)
    except (art.ArtifactError, ValueError) as exc:
        logging.error("error: %s", exc)
        return 2
    print("\n".join(summary["first_lines"]), flush=True)
    return 0


if __name__ == "__main__":
    cli.exit_process(main())
