"""python -m pipeline.report: rebuilds a run's pages from its artifacts."""
from __future__ import annotations

import argparse
import logging

from stagekit.cli import LOG_FORMAT

log = logging.getLogger("pipeline.report")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.report",
        description="Rebuilds report.html (and similar_items.html) from a run's artifacts.")
    parser.add_argument("--output_dir", default="output", help="Root of the run's artifacts.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    from stagekit.artifacts import gfile
    from pipeline.report.page import write_report
    from pipeline.report.run_data import collect_run
    from pipeline.report.summary import format_summary

    if not gfile().isdir(args.output_dir):
        log.error("error: %s is not a directory of run artifacts", args.output_dir)
        return 2
    run = collect_run(args.output_dir)
    print(format_summary(run))
    print(f"report: {write_report(args.output_dir, run)}")
    return 0
