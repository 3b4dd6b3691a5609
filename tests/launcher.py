"""Runs the driver the way a Dataflow template launch does, with the local runner as "the service".

    python tests/launcher.py template/main.py ARGS...     # the Flex Template entry point
    python tests/launcher.py -m pipeline.run ARGS...

1. Every `Pipeline.run()` only stages the job graph: it returns at once a result whose
   `wait_until_finish()` says DONE, and all driver code after it runs before any job has run.
2. The driver ends; its exit code is printed as "launcher exit N".
3. Then each staged job runs, and the process ends the moment the last one does: no driver code
   runs after any job. Whatever the outputs are now is all a template launch would leave.

Exit code: the driver's when it is not 0; else 0 when every job succeeded, 3 when one failed.
"""
import os
import runpy
import sys
import traceback

import apache_beam as beam
from apache_beam.runners.runner import PipelineResult, PipelineState

STAGED: list = []
_REAL_RUN = beam.Pipeline.run


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


def main() -> None:
    beam.Pipeline.run = _stage_only
    code = _run_driver(sys.argv[1:])
    print(f"launcher exit {code}; staged jobs: {len(STAGED)}", file=sys.stderr, flush=True)
    if code:
        os._exit(code)
    for pipeline in STAGED:
        try:
            _REAL_RUN(pipeline).wait_until_finish()
        except BaseException:  # noqa: BLE001 - a failed job: report it the way the service would
            traceback.print_exc()
            sys.stderr.flush()
            os._exit(3)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
