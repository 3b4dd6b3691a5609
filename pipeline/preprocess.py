"""Preprocessing stage: Beam + TF Transform from GA sessions (or interactions) to WALS TFRecords.

    python -m pipeline.preprocess [--source ...] [--input ...] [--output_dir output]

This module is the stage's command line: its flags, their checks and `run`, which imports the job
itself (pipeline/preprocess_job.py: Beam, TensorFlow, TFT) only once the flags have passed, so
--help, a bad flag and the driver's parser cost no heavy import. The job writes OUTPUT_DIR/preproc
as fixed in DESIGN.md, plus metadata.json (docs/ARCHITECTURE.md).
`python -m pipeline.preprocess` runs this stage alone.
"""

import argparse
import logging
import sys

from pipeline import cli, sample
from pipeline.sources import ga, sql
from transforms.options import DEFAULT_RATING_SCALE, VOCABULARY_ANALYZERS

LOG = logging.getLogger(__name__)
DEFAULT_INPUT = sample.SAMPLE_PATH


class PreprocessError(RuntimeError):
    """The stage refused or failed for a reason the message explains (exit code 1)."""


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
    g.add_argument("--rating_scale", type=cli.finite_float, default=DEFAULT_RATING_SCALE,
                   help="rating = min(scale * value / median, 1)")
    g.add_argument("--max_rejected_fraction", type=cli.finite_float, default=0.1,
                   help="Fail (after writing rejects) when rejected/input rows exceeds this.")
    g.add_argument("--vocabulary_analyzer", choices=VOCABULARY_ANALYZERS, default="batched",
                   help="TFT analyzer computing vocab_users / vocab_items; both write the same "
                        "files. batched: whole column batches (faster); tft: the stock "
                        "tft.compute_and_apply_vocabulary (one Beam element per distinct id).")
    g.add_argument("--group_shards", type=int, default=8,
                   help="Hash shards for the two shuffles (raise it for big Dataflow jobs).")



def validate_args(args: argparse.Namespace) -> None:
    """Flag values alone (the driver checks every stage's before any stage starts): no files,
    no heavy import. A bigquery source's --table, dates and preset options are values too."""
    cli.check_range(args, "max_rejected_fraction", 0, 1)
    cli.check_range(args, "rating_scale", 0, low_open=True)
    cli.check_range(args, "purchase_weight", 0)
    cli.check_range(args, "content_dimension", 1, sql.MAX_CUSTOM_DIMENSION)
    cli.check_range(args, "group_shards", 1, 4096)
    args = with_default_input(args)
    if args.source == "bigquery":
        sql.query_for(args)  # raises naming a bad --table, date or preset option


def check_inputs(args: argparse.Namespace) -> None:
    """What the flags name must be there: --input must match files (local or gs://, so through
    Beam's file systems; a glob matching nothing is a bad flag, exit 2)."""
    args = with_default_input(args)
    if args.source != "bigquery":
        from pipeline.sources import textio

        textio.matching_files(args.input)


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
    check_inputs(args)
    from pipeline import preprocess_job  # Beam, TensorFlow and TFT: only now

    return preprocess_job.run(with_default_input(args), beam_argv)


def main(argv: list[str] | None = None) -> None:
    """`python -m pipeline.preprocess`: this stage alone; exit 0 on success, 1 on failure."""
    cli.beam_stage_main("preprocess", __doc__.split("\n", 1)[0], [add_args], run,
                        (PreprocessError, ValueError, FileNotFoundError), argv)


if __name__ == "__main__":
    main(sys.argv[1:])
