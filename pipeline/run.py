"""One command for the whole product: preprocess -> train -> predict, then a summary and report.

    python -m pipeline.run                       # bundled sample, local runner, ./output
    python -m pipeline.run --source interactions --input ratings.csv --output_dir out
    python -m pipeline.run --runner=DataflowRunner --project P --region R \
        --temp_location gs://B/tmp --setup_file ./setup.py --output_dir gs://B/run

Flags are this module's own (--output_dir, --stages, --trainer, --vertex_*, --no_report), the
shared ones (stagekit/cli.py) and every stage's `add_args`; anything else must be a Beam
pipeline option and goes, untouched, to the Beam stages (preprocess, predict) but not to train.
Each stage gets a copy of the flags with its paths remapped to the layout in DESIGN.md, and
its inputs are checked before it starts (stagekit/artifacts.py).
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib
import logging
import os
import re
import sys
import time
import uuid

from stagekit import cli, faults
from pipeline.cloud import vertex
from stagekit.artifacts import (MODEL, PREDICTIONS, PREPROC, STAGE_ORDER, TUNING, StageInputError,
                                check_stage_inputs, exists, join, stage_dir)
from stagekit.cli import DEFAULT_OUTPUT_DIR, LOG_FORMAT, add_shared_args

log = logging.getLogger("pipeline.run")

STAGE_MODULES = {"preprocess": "pipeline.preprocess", "cooc": "pipeline.cooc", "tune": "trainer.tune",
                 "train": "trainer.task", "predict": "batch_predict.run"}
DEFAULT_STAGES = ("preprocess", "train", "predict")
BEAM_STAGES = ("preprocess", "cooc", "predict")  # the stages that receive the Beam flags
DATE_FLAGS = ("start_date", "end_date")
RELATIVE_DATE = re.compile(r"^(?:today(?:-(\d{1,4}))?|yesterday)$")
USAGE_ERRORS = (ValueError, FileExistsError, FileNotFoundError)
PRODUCT_PACKAGES = ("stagekit", "factorization", "transforms", "pipeline", "trainer", "batch_predict")


class UsageError(ValueError):
    """Flags that cannot work together (found before any stage starts)."""


def stage_module(stage: str):
    """The stage's command-line module (its flags, their checks, `run`). These import no
    TensorFlow, Beam or TFT: each imports its heavy part only when the stage runs."""
    return importlib.import_module(STAGE_MODULES[stage])


def parse_stages(text: str) -> list[str]:
    stages = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGE_ORDER]
    if unknown or not stages:
        raise argparse.ArgumentTypeError(
            f"unknown stage(s) {unknown or text!r}; choose from {','.join(STAGE_ORDER)}")
    return [s for s in STAGE_ORDER if s in stages]  # always run in pipeline order


def add_driver_args(parser: argparse.ArgumentParser) -> None:
    """Flags only the driver has (the template metadata lists these and the stages' flags)."""
    parser.add_argument("--output_dir", default=DEFAULT_OUTPUT_DIR,
                        help="Root of all artifacts: preproc/, model/, predictions/, report.html "
                             "(local path or gs://).")
    parser.add_argument("--stages", type=parse_stages, default=list(DEFAULT_STAGES),
                        help="Comma-separated subset of preprocess,cooc,tune,train,predict, run in "
                             "that order (default: preprocess,train,predict; cooc writes PMI "
                             "similar items to cooc/; tune searches the trainer's hyperparameters "
                             "into tuning/best.json, which train then uses).")
    parser.add_argument("--trainer", choices=["local", "vertex"], default="local",
                        help="Train where this command runs (local) or as a Vertex AI custom job.")
    parser.add_argument("--no_report", action="store_true",
                        help="Do not write report.html at the end.")
    parser.add_argument("--break_lock", action="store_true",
                        help="Take over the output folder's lock (OUTPUT/.lock) even if its "
                             "holder may be alive; without it only a stale lock is broken.")
    vertex.add_args(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.run", allow_abbrev=False, formatter_class=cli.HelpFormatter,
        description="GA360 -> WALS recommendations: preprocess, train and predict in one command. "
                    "Unrecognised --flags are Beam pipeline options (--runner, --project, ...).")
    add_driver_args(parser)
    add_shared_args(parser)
    for stage in STAGE_ORDER:
        stage_module(stage).add_args(parser)
    return parser


def _normalise_booleans(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """Accepts --flag=true/false for on/off flags: Flex Templates pass every parameter that way."""
    switches = {opt for a in parser._actions if isinstance(a, argparse._StoreTrueAction)
                for opt in a.option_strings}
    out = []
    for token in argv:
        name, eq, value = token.partition("=")
        if eq and name in switches and value.lower() in ("true", "false"):
            out += [name] if value.lower() == "true" else []
        else:
            out.append(token)
    return out


def _unknown_beam_flags(beam_argv: list[str]) -> list[str]:
    """Flags in beam_argv that no Beam PipelineOptions class defines (typos, misplaced flags)."""
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    beam_parser = _BeamArgumentParser(allow_abbrev=False)
    for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(beam_parser)  # how PipelineOptions.get_all_options collects them
    _, unknown = beam_parser.parse_known_args(beam_argv)
    return [t for t in unknown if t.startswith("-")]


def check_beam_argv(parser: argparse.ArgumentParser, beam_argv: list[str]) -> None:
    if not beam_argv:
        return  # nothing for Beam: no need to import it to know its options
    for i, token in enumerate(beam_argv):
        follows_flag = i > 0 and beam_argv[i - 1].startswith("--") and "=" not in beam_argv[i - 1]
        if not token.startswith("--") and not follows_flag:
            parser.error(f"unexpected argument {token!r} (flags look like --name=value)")
    unknown = _unknown_beam_flags(beam_argv)
    if not unknown:
        return
    message = (f"unrecognised flag(s) {' '.join(t + cli.suggest(t, parser) for t in unknown)}: "
               "neither a pipeline flag (see --help) nor a Beam pipeline option")
    if os.environ.get("FLEX_TEMPLATE_PYTHON_PY_FILE"):
        log.warning("%s; passed on to Beam (Flex Template launcher)", message)  # launcher's own options
    else:
        parser.error(message)


def resolve_date(value: str | None, today: dt.date) -> str | None:
    """YYYYMMDD passes through; 'today', 'today-N' and 'yesterday' become YYYYMMDD (UTC).

    Lets a fixed Cloud Scheduler body ask for "the last 7 days" on every run.
    """
    match = RELATIVE_DATE.match(value or "")
    if not match:
        return value
    days = 1 if value == "yesterday" else int(match.group(1) or 0)
    return (today - dt.timedelta(days=days)).strftime("%Y%m%d")


def parse_args(argv: list[str] | None = None, today: dt.date | None = None
               ) -> tuple[argparse.Namespace, list[str]]:
    """Returns (flags, beam_argv); exits with a usage error on a bad flag."""
    parser = build_parser()
    argv = _normalise_booleans(parser, list(sys.argv[1:] if argv is None else argv))
    args, beam_argv = parser.parse_known_args(argv)
    check_beam_argv(parser, beam_argv)
    args.explicit_flags = cli.explicit_dests(parser, argv)
    today = today or dt.datetime.now(dt.timezone.utc).date()
    for name in DATE_FLAGS:
        if hasattr(args, name):
            setattr(args, name, resolve_date(getattr(args, name), today))
    return args, beam_argv


def stage_args(stage: str, args: argparse.Namespace) -> argparse.Namespace:
    """A copy of the flags with the stage's paths (ARCHITECTURE.md table) under --output_dir."""
    ns = argparse.Namespace(**vars(args))
    root = args.output_dir
    if stage == "tune":
        ns.input_dir, ns.output_dir = stage_dir(root, PREPROC), stage_dir(root, TUNING)
    elif stage == "train":
        ns.input_dir, ns.output_dir = stage_dir(root, PREPROC), stage_dir(root, MODEL)
    elif stage == "predict":
        ns.preproc_dir, ns.model_dir = stage_dir(root, PREPROC), stage_dir(root, MODEL)
        ns.output_dir = stage_dir(root, PREDICTIONS)
    return ns


def tuning_result(train_args: argparse.Namespace, output_dir: str) -> str | None:
    """The best.json train uses: --tuning_file, else OUTPUT/tuning/best.json when it exists."""
    given = getattr(train_args, "tuning_file", None)
    found = join(output_dir, TUNING, "best.json")
    return given or (found if exists(found) else None)


def train_stage_args(args: argparse.Namespace, upfront: bool = False) -> argparse.Namespace:
    """The train stage's flags with the tune stage's choice applied (explicit flags win).
    `upfront` (checking flags before any stage runs): quietly, and not from a best.json that
    this run's own tune stage is about to replace."""
    ns = stage_args("train", args)
    tuned = tuning_result(ns, args.output_dir)
    if tuned and not (upfront and "tune" in args.stages and not getattr(ns, "tuning_file", None)):
        from trainer.tuned import apply_tuning
        apply_tuning(ns, getattr(args, "explicit_flags", set()), tuned, quiet=upfront)
    return ns


def run_stage(stage: str, args: argparse.Namespace, beam_argv: list[str]) -> dict:
    ns = train_stage_args(args) if stage == "train" else stage_args(stage, args)
    if stage in ("tune", "train"):  # local, or the same job on Vertex AI
        if args.trainer == "vertex":
            from pipeline.cloud import vertex_tuning
            runner = vertex_tuning.run if stage == "tune" else vertex.run
            return runner(ns, list(beam_argv), args)
        return stage_module(stage).run(ns)
    return stage_module(stage).run(ns, list(beam_argv))


def is_template_launch(beam_argv: list[str]) -> bool:
    """Whether the Beam flags make this a template launch (stagekit/beam_runner.py); without
    any it cannot be one, and Beam is not imported to say so."""
    if not beam_argv:
        return False
    from apache_beam.options.pipeline_options import PipelineOptions

    from stagekit import beam_runner

    return beam_runner.is_template_launch(PipelineOptions(beam_argv))


def check_runner(args: argparse.Namespace, beam_argv: list[str]) -> None:
    """Cloud runs need cloud places, and a template launch runs one Beam job: fail before any
    work starts, naming every missing flag in one line."""
    if not beam_argv and args.trainer == "local":
        return  # the local runner with its defaults and a local trainer: nothing to check
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.cloud import preflight

    options = PipelineOptions(beam_argv)
    try:
        preflight.check(options, output_dir=args.output_dir, stages=args.stages,
                        trainer=args.trainer, vertex_image=args.vertex_image)
    except preflight.PreflightError as exc:
        raise UsageError(str(exc)) from None
    if is_template_launch(beam_argv):
        beam_stage_only = (len(args.stages) == 1 and args.stages[0] in BEAM_STAGES
                           and (args.stages[0] != "predict" or getattr(args, "engine", None) == "beam"))
        if not beam_stage_only:
            raise UsageError(
                f"a template launch runs one Dataflow job: stages=preprocess, stages=cooc, or "
                f"stages=predict with "
                f"engine=beam (got stages={','.join(args.stages)}); chain the "
                "stages with the nightly pipeline (docs/GCP.md)")


def check_beam_args(args: argparse.Namespace, beam_argv: list[str]) -> None:
    """Stages' checks of the Beam flags their own flags need (predict: --bigquery_dataset needs
    a gs:// --temp_location), before anything runs."""
    for stage in args.stages:
        check = getattr(stage_module(stage), "check_beam_args", None)
        if check is None or stage == "train":
            continue
        try:
            check(stage_args(stage, args), beam_argv)
        except ValueError as exc:
            raise UsageError(str(exc)) from None


def check_flags(args: argparse.Namespace, check: str = "validate_args") -> None:
    """Each selected stage's flag checks, before anything runs (a bad trainer flag must not
    surface after an hour of Dataflow preprocessing): `validate_args` checks values alone (no
    file read, nothing heavy imported: a typo fails at once), `check_inputs` what the flags name
    (input files, a warm-start model, filter files)."""
    for stage in args.stages:
        validate = getattr(stage_module(stage), check, None)
        if validate is None:
            continue
        try:
            validate(train_stage_args(args, upfront=True) if stage == "train"
                     else stage_args(stage, args))
        except (ValueError, FileNotFoundError) as exc:
            raise UsageError(str(exc)) from None


def check_upfront(args: argparse.Namespace) -> None:
    """Inputs of the first selected stage must already exist: fail before anything is written."""
    first = args.stages[0]
    check_stage_inputs(first, args.output_dir)
    if "predict" in args.stages and "train" not in args.stages and first != "predict":
        model_json = join(args.output_dir, MODEL, "model.json")
        if not exists(model_json):
            raise StageInputError(f"model description not found at {model_json}; it is written by the "
                                  "'train' stage (add it to --stages)")


def print_query(args: argparse.Namespace) -> None:
    """--print_query: the SQL of the first selected stage that reads the source (preprocess, or
    cooc keyed by session with --cooc_scope session), alone on stdout, once every flag passed."""
    readers = [stage for stage in args.stages if stage in ("preprocess", "cooc")]
    if not readers:
        raise UsageError("--print_query prints the SQL of a stage that reads the source: add "
                         "preprocess or cooc to --stages")
    check_flags(args)
    stage_module(readers[0]).print_query(stage_args(readers[0], args))


def run_pipeline(args: argparse.Namespace, beam_argv: list[str]) -> dict:
    """Runs the selected stages in order; returns {stage: summary dict} plus 'seconds'.

    The output folder is locked for the whole run (stagekit/lock.py), except by a template
    launch, which ends before its job runs."""
    from stagekit import lock

    check_flags(args)  # values first: cheap, so a typo fails before any import or I/O
    check_runner(args, beam_argv)
    check_beam_args(args, beam_argv)
    check_flags(args, "check_inputs")
    check_upfront(args)
    lease = None
    if not is_template_launch(beam_argv):
        lease = lock.acquire(args.output_dir, uuid.uuid4().hex, break_lock=args.break_lock)
    try:
        if lease is not None:
            remove_dead_scratch(args.output_dir)
        summaries, seconds = {}, {}
        for stage in args.stages:
            check_stage_inputs(stage, args.output_dir)
            start = time.monotonic()
            summaries[stage] = run_stage(stage, args, beam_argv) or {}
            seconds[stage] = round(time.monotonic() - start, 1)
            log.info("stage %s finished in %.1f s: %s", stage, seconds[stage],
                     _counts(summaries[stage]))
            faults.point(f"stage:{stage}:done")
    finally:
        if lease is not None:
            lease.release()
    summaries["seconds"] = seconds
    return summaries


DEAD_SCRATCH = ("_tmp_preprocess_*", "_tmp_cooc_*", "_tmp_predict_*", "_tmp_tune_*")  # tune: no owner, dead if left


def remove_dead_scratch(output_dir: str) -> None:
    """With the output folder's lease held: deletes the scratch folders of dead runs (a refused
    run's rejects included; a template-launched job's only once it is older than a lease) and
    restores an output that a local publish left renamed aside when it died mid-swap. Training
    scratch (_tmp_train_*) stays: the trainer resumes from it."""
    import tensorflow as tf

    from stagekit import lock

    for pattern in DEAD_SCRATCH:
        for folder in tf.io.gfile.glob(join(output_dir, pattern)):
            if tf.io.gfile.isdir(folder) and lock.scratch_is_dead(folder):
                log.info("removing scratch of a dead run: %s", folder)
                tf.io.gfile.rmtree(folder)
    for aside in tf.io.gfile.glob(join(output_dir, "*.replaced-*")):
        final = aside.rstrip("/").rsplit(".replaced-", 1)[0]
        if not tf.io.gfile.isdir(aside):
            continue
        if tf.io.gfile.exists(final):
            tf.io.gfile.rmtree(aside)
        else:  # a publish died between its two renames: the old output is still whole here
            log.warning("restoring %s, left aside by a publish that did not finish", final)
            tf.io.gfile.rename(aside, final)


def _counts(summary: dict) -> str:
    keys = [k for k, v in summary.items() if isinstance(v, int) and not isinstance(v, bool)]
    return ", ".join(f"{k}={summary[k]}" for k in keys[:8]) or "done"


def finish(args: argparse.Namespace, summaries: dict) -> None:
    """Prints the run summary and writes report.html (the stages' artifacts are the source)."""
    from pipeline import report

    launched = [s for s in args.stages if summaries.get(s, {}).get("launched")]
    if launched:  # a template launch: the job runs later and publishes by itself
        print(f"launched: {', '.join(launched)} -> {args.output_dir} (published when the job ends)",
              flush=True)
        return
    run = report.collect_run(args.output_dir)
    print(report.format_summary(run, summaries.get("seconds", {})), flush=True)
    if args.no_report:
        return
    try:
        path = report.write_report(args.output_dir, run)
        print(f"report: {path}", flush=True)
    except Exception as exc:  # the artifacts are complete; a broken plot must not fail the run
        log.error("report.html not written: %s: %s", type(exc).__name__, exc)


def main(argv: list[str] | None = None) -> int:
    """Returns the process exit code: 0 ok, 1 stage failure, 2 bad flags or missing inputs."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    tf_logger = logging.getLogger("tensorflow")
    if tf_logger.handlers:  # TF has its own handler: without this every TF line prints twice
        tf_logger.propagate = False
    try:
        args, beam_argv = parse_args(argv)
        if getattr(args, "print_query", False):
            print_query(args)
            return 0
        summaries = run_pipeline(args, beam_argv)
        finish(args, summaries)
        return 0
    except SystemExit as exc:  # argparse already printed the usage error
        return exc.code if isinstance(exc.code, int) else 2
    except (StageInputError, UsageError) as exc:
        log.error("error: %s", exc)
        return 2
    except Exception as exc:
        if not _is_refusal(exc):  # unexpected: keep the traceback, end with one clear line
            log.exception("pipeline failed")
            log.error("error: %s: %s", type(exc).__name__, exc)
        else:
            log.error("error: %s", exc)
        return 1


def _is_refusal(exc: Exception) -> bool:
    """A stage's own error (or a plain ValueError/FileExistsError...): the message says it all."""
    return (isinstance(exc, USAGE_ERRORS)
            or type(exc).__module__.split(".")[0] in PRODUCT_PACKAGES)


def exit_now(code: int) -> None:
    """Flush and leave without interpreter teardown: Beam has been seen to SIGSEGV there."""
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def console_main() -> None:
    """The `ga-wals` command (setup.py's console script): the same as python -m pipeline.run."""
    exit_now(main())


if __name__ == "__main__":
    console_main()
