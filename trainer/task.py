"""Train stage: WALS on the preprocess stage's TFRecords; writes model/ (docs/ARCHITECTURE.md).

    python -m trainer.task --input_dir OUTPUT/preproc --output_dir OUTPUT/model [--overwrite]

Output dir rules: training happens in a scratch folder beside the model dir, named after the
run's settings (`_tmp_train_<hash of run_config.json>`: hyperparameters + seed + identity of
the input), and the result is published over the model dir only when complete (atomically on
local disk, stagekit/publish.py), keeping the SavedModel versions under export/. A killed run's
rerun with the same settings finds its scratch and *resumes* from the last checkpoint. A model
dir already holding this very model is left as it is (rerunning is a no-op); any other
non-empty dir is refused with the differing keys unless --overwrite, which replaces it (only
once the new model is complete).

Defaults (k=128, binary target with confidence ∝ rating, λ=0.02 scaled per row by frequency,
w0=0.02, no column weights, init scale 0.1, 8 epochs) were chosen across three datasets of
different shapes (MovieLens ml-latest-small, the GA sample, a generated long-tail Zipf set) as the
setting with the best mean held-out NDCG@10 relative to each dataset's best (benchmarks/tuning.py;
README "Benchmarks"); per dataset, the tune stage does better.
Training phases: with --eval_fraction > 0 the trainer first trains on the split (phase
"eval": a seeded share of each user's interactions held out) and writes metrics.json from that
model; then (phase "full", default) it trains again on *all* interactions with the same
hyperparameters and seed, and those factors are written as row_factors.npy / col_factors.npy
(so batch prediction and serving use everything). --no_refit_full serves the eval model instead
(half the training time). --eval_fraction 0 runs the full phase only, with no metrics.
Each phase checkpoints under checkpoints/<phase>/ and logs under logs/<phase>/, so a run killed
in either phase resumes where it stopped; model.json records which data the factors saw and
where the metrics came from.
This module is the stage's command line (`run`, `main`; the flags and their checks are in
trainer/flags.py); the training itself, which imports TensorFlow, is in trainer/training.py,
imported only once the flags have passed.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import sys
import time

from stagekit import cli
from trainer.flags import (add_args, build_parser, check_inputs,  # noqa: F401 (the stage's interface)
                           validate_args)

LOG = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> dict:
    """Trains WALS from args.input_dir (preproc) into args.output_dir (model); returns a summary."""
    start = time.time()
    validate_args(args)
    check_inputs(args)
    if "{trial}" in args.output_dir:  # a Vertex AI tuning trial (pipeline/cloud/vertex_tuning.py)
        args.output_dir = args.output_dir.replace("{trial}", os.environ.get("CLOUD_ML_TRIAL_ID", "0"))
    from trainer import training  # TensorFlow: only now

    return training.run(args, start)


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=cli.LOG_FORMAT)
    try:
        if args.tuning_file:  # tuned values for every flag not given explicitly
            from trainer.tuned import apply_tuning
            apply_tuning(args, cli.explicit_dests(parser, sys.argv[1:] if argv is None else argv),
                         args.tuning_file)
        summary = run(args)
    except ValueError as err:
        LOG.error("train: %s", err)
        sys.exit(2)
    print(json.dumps(summary, indent=2))
    return summary


def return_large_frees_to_the_os(threshold: int = 1 << 20) -> None:
    """glibc raises its mmap threshold after each large free (up to 32 MB), so the many freed
    multi-MB buffers of the epochs end up on the heap and stay resident: a fixed threshold keeps
    them mmapped and returned at once (-140 MB peak at 2M interactions, same speed). Process-wide
    and for good, so only for trainer.task as a process of its own; elsewhere than glibc: no-op."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(-3, threshold)  # M_MMAP_THRESHOLD


if __name__ == "__main__":
    return_large_frees_to_the_os()
    main()
