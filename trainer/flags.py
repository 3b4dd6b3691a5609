"""The train stage's flags and their checks: values alone, no files and no heavy import
(the driver checks every stage's flags before any stage starts)."""
from __future__ import annotations

import argparse

from factorization import objective
from stagekit import cli
from trainer import metrics

DESCRIPTION = "Train stage: WALS on the preprocess stage's TFRecords; writes model/ (docs/ARCHITECTURE.md)."


def add_args(parser: argparse.ArgumentParser) -> None:
    """Flags owned by the train stage (shared ones come from stagekit/cli.py)."""
    group = parser.add_argument_group("trainer (WALS)")
    group.add_argument("--n_embeds", type=int, default=128, help="Latent factors k.")
    group.add_argument("--regularization", type=cli.finite_float, default=0.02,
                       help="L2 weight λ on both factor matrices (> 0).")
    group.add_argument("--unobserved_weight", type=cli.finite_float, default=0.02,
                       help="Weight w0 of every unobserved (user, item) pair.")
    group.add_argument("--reg_scaling", choices=objective.REG_SCALINGS, default="frequency",
                       help="none: the same λ for every row; frequency: λ·(n_i + w0·n_other) "
                            "per row (Rendle et al. 2021; needs a much smaller λ).")
    group.add_argument("--rating_target", choices=objective.RATING_TARGETS, default="binary",
                       help="rating: fit min(target_scale · rating, target_cap); binary: fit 1 "
                            "with confidence ∝ target_scale · rating (Hu, Koren, Volinsky 2008).")
    group.add_argument("--target_scale", type=cli.finite_float, default=1.0,
                       help="Scale of the stored rating for training (target or confidence, --rating_target).")
    group.add_argument("--target_cap", type=cli.finite_float, default=None,
                       help="Cap of the scaled rating with --rating_target rating (default none).")
    group.add_argument("--init_scale", type=cli.finite_float, default=0.1,
                       help="Item factors start as N(0, (init_scale/√k)²); Rendle et al. use 0.1.")
    group.add_argument("--col_weights", choices=objective.COL_WEIGHT_SCHEMES, default="none",
                       help="Observed-entry weight c_j per item: none = 1, linear = "
                            "feature_wt_factor / n_j, log = (1 / n_j) ** feature_wt_exp.")
    group.add_argument("--feature_wt_factor", type=cli.finite_float, default=130.0,
                       help="Factor of --col_weights linear.")
    group.add_argument("--feature_wt_exp", type=cli.finite_float, default=0.1,
                       help="Exponent of --col_weights log (negative favours popular items).")
    group.add_argument("--epochs", type=int, default=8, help="Full WALS sweeps.")
    group.add_argument("--checkpoint_seconds", type=cli.finite_float, default=30.0,
                       help="Checkpoint a phase when this many seconds have passed since its "
                            "last checkpoint, and after its last epoch (a killed run resumes "
                            "from there); 0: after every epoch.")
    group.add_argument("--batch_size", type=int, default=1024,
                       help="Rows per batched solve at k >= 128; smaller k take 128/k times as "
                            "many (and Examples per input batch).")
    group.add_argument("--batch_entries", type=int, default=4096,
                       help="Padded ratings per batched solve at k >= 128; smaller k take 128/k "
                            "times as many, so a solve holds ~this × 128 floats (4096 measured "
                            "fastest on MovieLens).")
    group.add_argument("--solver", choices=objective.SOLVERS, default="exact",
                       help="exact: every row's least squares solved exactly (default); cg: "
                            "--cg_steps conjugate-gradient steps per row, warm-started and "
                            "preconditioned by the Gramian (approximate; ~3x faster at k=128).")
    group.add_argument("--cg_steps", type=int, default=3,
                       help="CG steps per row and half-step with --solver cg.")
    group.add_argument("--eval_fraction", type=cli.finite_float, default=0.2,
                       help="Seeded share of each user's interactions held out for metrics "
                            "(metrics.json comes from a model trained without them); 0 writes "
                            "no metrics.json.")
    group.add_argument("--no_refit_full", action="store_true",
                       help="With --eval_fraction > 0, write the factors of the model trained "
                            "on the split instead of retraining on all interactions (the "
                            "default retrains with the same settings and seed).")
    group.add_argument("--warm_start_from", default=None, metavar="MODEL_DIR",
                       help="Start from a previous model's factors, matched by original ids "
                            "through both runs' vocabularies; new users and items start as usual. "
                            "The full phase only: the eval phase (metrics.json) starts cold, since "
                            "the previous model saw what it holds out.")
    group.add_argument("--hypertune_metric", choices=metrics.RANKING_METRICS,
                       default=None,
                       help="Report this held-out metric at --top_k to Vertex AI hyperparameter "
                            "tuning (cloudml-hypertune, tag <metric>_at_<k>); set by the tune "
                            "stage's Vertex AI job.")
    group.add_argument("--warm_start_optional", action="store_true",
                       help="With --warm_start_from: start cold, with a warning, when that folder "
                            "holds no model (e.g. the first night of a schedule).")
    group.add_argument("--tuning_file", default=None, metavar="BEST_JSON",
                       help="Hyperparameters chosen by the tune stage (tuning/best.json); flags "
                            "given explicitly win. pipeline.run uses OUTPUT/tuning/best.json "
                            "when it exists.")


def hyperparameters(args: argparse.Namespace) -> dict:
    names = ("n_embeds", "regularization", "unobserved_weight", "reg_scaling", "rating_target",
             "target_scale", "target_cap", "init_scale", "col_weights",
             "feature_wt_factor", "feature_wt_exp", "epochs", "batch_size", "batch_entries",
             "solver", "cg_steps", "eval_fraction", "seed", "top_k", "warm_start_from",
             "tuning_file")
    return {**{name: getattr(args, name) for name in names},
            "refit_full": not getattr(args, "no_refit_full", False)}


MAX_N_EMBEDS = 8192  # far beyond any useful k; larger values are typos


def validate_args(args: argparse.Namespace) -> None:
    """Flag values alone (the driver checks every stage's before any stage starts): no files,
    no heavy import."""
    for name in ("epochs", "batch_size", "batch_entries", "cg_steps", "top_k"):
        cli.check_range(args, name, 1)
    cli.check_range(args, "checkpoint_seconds", 0)
    cli.check_range(args, "n_embeds", 1, MAX_N_EMBEDS)
    cli.check_range(args, "regularization", 0, low_open=True)
    cli.check_range(args, "unobserved_weight", 0)
    cli.check_range(args, "feature_wt_factor", 0, low_open=True)
    cli.check_range(args, "feature_wt_exp", -10, 10)
    cli.check_range(args, "eval_fraction", 0, 1, high_open=True)
    cli.check_range(args, "target_scale", 0, low_open=True)
    cli.check_range(args, "init_scale", 0, low_open=True)
    if getattr(args, "target_cap", None) is not None:
        cli.check_range(args, "target_cap", 0, low_open=True)
    if getattr(args, "trainer", "local") == "local":  # a Vertex AI machine is sized elsewhere
        check_memory(args, nrows=0)


def check_inputs(args: argparse.Namespace) -> None:
    """What the flags name must be there: --warm_start_from's model (or, with
    --warm_start_optional, a cold start instead)."""
    if getattr(args, "warm_start_from", None):
        from factorization import warm_start

        warm_start.check(args)


def memory_estimate_bytes(args: argparse.Namespace, nrows: int) -> int:
    """Peak bytes of training, roughly: the batched solves ([batch, k, k] systems and their
    factorisations, the padded ratings) and the factor matrices (both sides, with their copies)."""
    k = args.n_embeds
    scale = objective.batch_scale(k)  # as factorization/wals.py plans the batches
    solves = 3 * scale * args.batch_size * k * k * 4 + 4 * scale * args.batch_entries * k * 4
    return solves + 4 * nrows * k * 4


def check_memory(args: argparse.Namespace, nrows: int) -> None:
    """ValueError when training cannot fit this machine's memory (nrows: users + items)."""
    need, have = memory_estimate_bytes(args, nrows), cli.machine_memory_bytes()
    if have and need > 0.8 * have:
        raise ValueError(
            f"--n_embeds {args.n_embeds} with --batch_size {args.batch_size}"
            + (f" for {nrows:,} users + items" if nrows else "")
            + f" needs about {need / 2**30:.1f} GiB, more than this machine's "
              f"{have / 2**30:.1f} GiB can give; lower --n_embeds or --batch_size")


def build_parser() -> argparse.ArgumentParser:
    """The parser of `python -m trainer.task`: paths, the driver's shared flags, the trainer's own."""
    return cli.stage_parser("python -m trainer.task", DESCRIPTION,
                            {"--input_dir": "preproc dir (preprocess output).",
                             "--output_dir": "model dir to write."}, add_args)
