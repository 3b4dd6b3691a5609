"""Flags shared by several stages, so `pipeline.run` and each stage's own entry point agree,
and the checks every numeric flag goes through (one place: argparse types and `check_range`)."""
import argparse
import logging
import math
import os
import sys

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


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help with each flag's default, where it says something (not None, not an off switch)
    and the help text does not already state it; descriptions keep their line breaks."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (action.default in (None, False, argparse.SUPPRESS) or "default" in text.lower()
                or not action.option_strings):
            return text
        return super()._get_help_string(action)


def suggest(unknown: str, parser: argparse.ArgumentParser) -> str:
    """' (did you mean --x?)' for a misspelt flag, else ''."""
    import difflib

    name = unknown.split("=", 1)[0]
    options = [o for action in parser._actions for o in action.option_strings if o.startswith("--")]
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


def stage_parser(prog: str, description: str, paths: dict[str, str], add_stage_args,
                 **parser_kwargs) -> argparse.ArgumentParser:
    """The parser of a stage's own entry point: its required path flags ({flag: help}), the
    shared flags and the stage's own flags (`add_stage_args`)."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     **{"formatter_class": HelpFormatter, **parser_kwargs})
    for flag, help_text in paths.items():
        parser.add_argument(flag, required=True, help=help_text)
    add_shared_args(parser)
    add_stage_args(parser)
    return parser


def explicit_dests(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The dests of the flags `argv` gives explicitly (whatever their value), so that a value
    from elsewhere (tuning/best.json) replaces defaults only. Parses argv again with every
    default suppressed; abbreviations and --flag=value count like argparse counts them."""
    saved = [(action, action.default, action.required) for action in parser._actions]
    try:
        for action, _, _ in saved:
            action.default, action.required = argparse.SUPPRESS, False
        given, _ = parser.parse_known_args(argv)
    finally:
        for action, default, required in saved:
            action.default, action.required = default, required
    return set(vars(given))


def finite_float(text: str) -> float:
    """argparse type of every float flag: a finite number (NaN or inf exit 2 at parse time)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def check_range(args: argparse.Namespace, name: str, low=None, high=None, *,
                low_open: bool = False, high_open: bool = False) -> None:
    """ValueError naming --name unless low <= value <= high (or < with *_open); NaN never passes."""
    value = getattr(args, name)
    ok = isinstance(value, (int, float)) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "" if low is None else ("(" if low_open else "[") + f"{low}, "
        hi = "" if high is None else f"{high}" + (")" if high_open else "]")
        where = f"in {lo or '(-inf, '}{hi or 'inf)'}"
        raise ValueError(f"--{name} must be {where}, got {value}")


def machine_memory_bytes() -> int:
    """Memory this process may use: physical memory, or a smaller cgroup limit (a container's,
    e.g. on Vertex AI or Kubernetes); 0 when unknown."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        physical = 0
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                limit = f.read().strip()
        except OSError:
            continue
        if limit.isdigit() and 0 < int(limit) < (physical or int(limit) + 1):
            return int(limit)
    return physical


def exit_process(code: int) -> None:
    """Flushes logs and stdio, then exits without interpreter teardown: Beam pipelines have died
    with SIGSEGV there after writing complete outputs, so the Beam stages' entry points end here."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - nothing useful left to do at exit
            pass
    os._exit(code)


def beam_stage_main(name: str, description: str, add_arg_groups: list, run, errors: tuple,
                    argv: list[str] | None = None, validate=None, print_query=None) -> None:
    """`python -m pipeline.<name>` for a Beam stage alone: parse (unknown flags go to Beam),
    optionally check values (exit 2), run, print its result as JSON; exit 0, or 1 on failure.
    With --print_query, `print_query(args)` checks the flags and prints the stage's SQL instead
    of running (exit 0, or 2 on a bad flag)."""
    import json

    parser = argparse.ArgumentParser(prog=f"python -m pipeline.{name}",
                                     formatter_class=HelpFormatter, description=description)
    parser.add_argument("--output_dir", default=DEFAULT_OUTPUT_DIR)
    add_shared_args(parser)
    for add_args in add_arg_groups:
        add_args(parser)
    args, beam_argv = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    log = logging.getLogger(f"pipeline.{name}")
    if validate is not None:
        try:
            validate(args)
        except ValueError as e:
            parser.error(str(e))
    if print_query is not None and getattr(args, "print_query", False):
        try:
            print_query(args)
        except ValueError as e:
            parser.error(str(e))
        exit_process(0)
    try:
        result = run(args, beam_argv)
    except errors as e:
        log.error("%s failed: %s", name, e)
        exit_process(1)
    except BaseException:  # noqa: BLE001 - log it, then still exit without interpreter teardown
        log.exception("%s failed", name)
        exit_process(1)
    print(json.dumps(result, indent=2, sort_keys=True))
    exit_process(0)
