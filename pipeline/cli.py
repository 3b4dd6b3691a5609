"""Flags shared by several stages, so `pipeline.run` and each stage's own entry point agree."""
import argparse

DEFAULT_OUTPUT_DIR = "output"


def add_shared_args(parser: argparse.ArgumentParser) -> None:
    """Adds --top_k, --seed and --overwrite (used by more than one stage)."""
    parser.add_argument("--top_k", type=int, default=10,
                        help="Recommendations per user (and k of the held-out ranking metrics).")
    parser.add_argument("--seed", type=int, default=42,
                        help="Seed for every random choice (factor init, eval split, sampling).")
    parser.add_argument("--overwrite", action="store_true",
                        help="Replace existing artifacts of the stages that run; without it a stage "
                             "refuses to write into a non-empty output.")


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def stage_parser(prog: str, description: str, paths: dict[str, str], add_stage_args,
                 **parser_kwargs) -> argparse.ArgumentParser:
    """The parser of a stage's own entry point: its required path flags ({flag: help}), the
    shared flags and the stage's own flags (`add_stage_args`)."""
    parser = argparse.ArgumentParser(prog=prog, description=description, **parser_kwargs)
    for flag, help_text in paths.items():
        parser.add_argument(flag, required=True, help=help_text)
    add_shared_args(parser)
    add_stage_args(parser)
    return parser
