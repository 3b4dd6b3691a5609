"""Runs the driver the way a Dataflow template launch does, with the local runner as "the service".

    python tests/launcher.py template/main.py ARGS...     # the Flex Template entry point
    python tests/launcher.py -m pipeline.run ARGS...

1. Every `Pipeline.run()` only stages the job graph: it returns at once a result whose
   `wait_until_finish()` says DONE, and all driver code after it runs before any job has run.
2. The driver ends; its exit code is printed as "launcher exit N".
3. Then each staged job runs as "the service" runs it: from its serialized job graph, in a fresh
   process that has none of the driver's state (like a Dataflow worker), and nothing runs after
   it. Whatever the outputs are now is all a template launch would leave.

Exit code: the driver's when it is not 0; else 0 when every job succeeded, 3 when one failed.
"""
import json
import os
import runpy
import subprocess
import sys
import tempfile
import traceback

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.runners.runner import PipelineResult, PipelineState

STAGED: list = []


class _StagedResult(PipelineResult):
    def __init__(self):
        super().__init__(PipelineState.DONE)

    def wait_until_finish(self, duration=None):
        return PipelineState.DONE


def _stage_only(pipeline, test_runner_api="AUTO"):
    STAGED.append(pipeline)
    return _StagedResult()


class _DriverExit(Exception):
    def __init__(self, code):
        super().__init__(code)
        self.code = code


def _raise_exit(code):
    raise _DriverExit(code)


def _run_driver(argv: list[str]) -> int:
    import pipeline.run as driver

    driver.exit_now = _raise_exit  # the entry points end with exit_now(main())
    if argv[0] == "-m":
        return driver.main(argv[2:])
    sys.argv = argv
    try:
        runpy.run_path(argv[0], run_name="__main__")
    except _DriverExit as exit_:
        return exit_.code
    return 0


class _GraphWriter(FnApiRunner):
    """Prepares a pipeline exactly as FnApiRunner.run_pipeline does, then writes the job graph
    and options to files instead of running it."""

    def __init__(self, folder: str):
        super().__init__()
        self.folder = folder

    def run_via_runner_api(self, pipeline_proto, options):
        with open(os.path.join(self.folder, "job.pb"), "wb") as f:
            f.write(pipeline_proto.SerializeToString())
        with open(os.path.join(self.folder, "options.json"), "w") as f:
            json.dump(options.get_all_options(drop_default=True), f)


def _run_job(folder: str) -> None:
    """The fresh "service" process: run a serialized job graph and nothing else."""
    proto = beam_runner_api_pb2.Pipeline()
    with open(os.path.join(folder, "job.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    with open(os.path.join(folder, "options.json")) as f:
        options = PipelineOptions.from_dictionary(json.load(f))
    FnApiRunner().run_via_runner_api(proto, options).wait_until_finish()


def main() -> None:
    if sys.argv[1] == "--run-job":
        _run_job(sys.argv[2])
        return
    beam.Pipeline.run = _stage_only
    code = _run_driver(sys.argv[1:])
    print(f"launcher exit {code}; staged jobs: {len(STAGED)}", file=sys.stderr, flush=True)
    if code:
        os._exit(code)
    for pipeline in STAGED:
        folder = tempfile.mkdtemp(prefix="staged-job-")
        try:
            _GraphWriter(folder).run_pipeline(pipeline, pipeline._options)
        except BaseException:  # noqa: BLE001 - the graph could not be staged: a launch failure
            traceback.print_exc()
            os._exit(4)
        job = subprocess.run([sys.executable, os.path.abspath(__file__), "--run-job", folder])
        if job.returncode:
            print(f"job failed (exit {job.returncode})", file=sys.stderr, flush=True)
            os._exit(3)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
