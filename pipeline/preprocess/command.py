"""Preprocessing stage: Beam + TF Transform from GA sessions (or interactions) to WALS TFRecords.

    python -m pipeline.preprocess [--source ...] [--input ...] [--output_dir output]

This module is the stage's command line: its flags, their checks and `run`, which imports the job
itself (pipeline/preprocess/job.py: Beam, TensorFlow, TFT) only once the flags have passed, so
--help, a bad flag and the driver's parser cost no heavy import. The job writes OUTPUT_DIR/preproc
as fixed in DESIGN.md, plus metadata.json (docs/ARCHITECTURE.md).
`python -m pipeline.preprocess` runs this stage alone (pipeline/preprocess/__main__.py).
"""

import argparse
import logging

from stagekit import cli
from pipeline.sources import flags as source_flags
from pipeline.sources.counts import InputRefused
from pipeline.sources.flags import check_inputs, with_default_input  # noqa: F401 (the stage's inputs)
from transforms.options import DEFAULT_RATING_SCALE, VOCABULARY_ANALYZERS

LOG = logging.getLogger(__name__)


def add_args(parser: argparse.ArgumentParser) -> None:
    """The source flags (pipeline/sources/flags.py) and the preprocess stage's own (not
    --output_dir nor the shared flags)."""
    source_flags.add_args(parser)
    g = parser.add_argument_group("preprocess")
    g.add_argument("--rating_scale", type=cli.finite_float, default=DEFAULT_RATING_SCALE,
                   help="rating = min(scale * value / median, 1)")
    g.add_argument("--vocabulary_analyzer", choices=VOCABULARY_ANALYZERS, default="batched",
                   help="TFT analyzer computing vocab_users / vocab_items; both write the same "
                        "files. batched: whole column batches (faster); tft: the stock "
                        "tft.compute_and_apply_vocabulary (one Beam element per distinct id).")
    g.add_argument("--group_shards", type=int, default=8,
                   help="Hash shards for the two shuffles (raise it for big Dataflow jobs).")


def validate_args(args: argparse.Namespace) -> None:
    """Flag values alone (the driver checks every stage's before any stage starts): no files,
    no heavy import."""
    source_flags.validate_args(args)
    cli.check_range(args, "rating_scale", 0, low_open=True)
    cli.check_range(args, "group_shards", 1, 4096)


def run(args, beam_argv: list[str]) -> dict:
    """Runs the stage. Returns the metadata.json dict after a local run; after a template launch
    (the job runs later, on Dataflow, and publishes itself) {"launched": ...}."""
    validate_args(args)
    check_inputs(args)
    from pipeline.preprocess import job as preprocess_job  # Beam, TensorFlow and TFT: only now

    return preprocess_job.run(with_default_input(args), beam_argv)


def print_query(args) -> None:
    """--print_query: the stage's SQL (checked flags first) alone on stdout."""
    validate_args(args)
    source_flags.print_query(args)


def main(argv: list[str] | None = None) -> None:
    """`python -m pipeline.preprocess`: this stage alone; exit 0 on success, 1 on failure."""
    cli.beam_stage_main("preprocess", __doc__.split("\n", 1)[0], [add_args], run,
                        (InputRefused, ValueError, FileNotFoundError), argv,
                        print_query=print_query)
