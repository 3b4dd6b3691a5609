"""Local runner defaults and a clean process exit for the Beam stages.

Facts measured with Beam 2.77 on this machine (see issue 2):
- `DirectRunner` first tries Prism, downloading its binary from the internet; offline that fails
  and it falls back to the in-process FnApiRunner after building the pipeline proto. With no
  --runner we therefore go straight to the FnApiRunner.
- `--direct_running_mode=multi_threading` silently lost rows; we refuse it. `multi_processing` with
  2 workers was correct and faster, so big local inputs use it by default.
- The in-process worker's state cache weighs every cached side input object by object (objsize):
  for a 100k-entry TFT vocabulary that cost ~1 s of a 20 s job, so `without_state_cache` lets a
  stage run without it (the data is in this process's memory anyway).
- Construction-time type checking re-parses the pipeline options a few times per transform (~1 s
  of fixed cost for the ~430 transforms a TFT job has); local runs skip it unless
  --pipeline_type_check is given. Element types then stay Any, so the generic coders are used;
  the outputs are the same (tests, benchmark).
- Before each stage the in-process runner copies the stage's whole input into one buffer, then
  into a bytes object, then into one protobuf message: three transient copies of, e.g., all
  interactions at once (the stage's peak memory at millions of rows). `streamed_stage_inputs`
  hands the same bytes over chunk by chunk instead (chunks always end between elements, as the
  buffers hold them), with one copy each.
- Pipelines have died with SIGSEGV at interpreter exit after writing complete outputs, so the
  command-line entry points end with `stagekit.cli.exit_process` (flush, then os._exit).
Any explicit --runner (DirectRunner, DataflowRunner, ...) and its flags are passed through untouched.
"""
from __future__ import annotations

import contextlib
import logging
import os

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (DirectOptions, PipelineOptions, StandardOptions,
                                                  TypeOptions)

LOG = logging.getLogger(__name__)
# Above this much input, local runs use 2 worker processes. Below it their start-up (each imports
# TF) costs more than it saves: on a 13 MB / 1M-row file 2 workers took 31 s against 23 s in-memory.
MULTI_PROCESSING_MIN_BYTES = 256 * 1024 * 1024
_PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def input_bytes(file_pattern: str | None) -> int:
    """Total size of the files matching file_pattern (0 when unknown)."""
    if not file_pattern:
        return 0
    try:
        return sum(m.size_in_bytes for m in FileSystems.match([file_pattern])[0].metadata_list)
    except Exception:  # noqa: BLE001 - sizing is only a hint for the runner choice
        return 0


def is_local(options: PipelineOptions) -> bool:
    runner = options.view_as(StandardOptions).runner
    return runner is None or runner.split(".")[-1] in ("FnApiRunner", "DirectRunner",
                                                       "BundleBasedDirectRunner", "SwitchingDirectRunner")


def pipeline_options(beam_argv: list[str], *, input_size: int = 0) -> PipelineOptions:
    """PipelineOptions from pass-through flags, with the local defaults described above."""
    options = PipelineOptions(list(beam_argv))
    direct = options.view_as(DirectOptions)
    if direct.direct_running_mode == "multi_threading":
        raise ValueError("--direct_running_mode=multi_threading loses rows in this Beam version "
                         "(measured); use in_memory or multi_processing")
    explicit_mode = any(flag.startswith("--direct_running_mode") for flag in beam_argv)
    if is_local(options) and not explicit_mode and input_size >= MULTI_PROCESSING_MIN_BYTES:
        direct.direct_running_mode = "multi_processing"
        if not any(flag.startswith("--direct_num_workers") for flag in beam_argv):
            direct.direct_num_workers = 2
    if is_local(options) and not any(flag.lstrip("-").replace("no_", "", 1) == "pipeline_type_check"
                                     for flag in beam_argv):
        options.view_as(TypeOptions).pipeline_type_check = False  # see module docstring
    if is_local(options) and direct.direct_running_mode == "multi_processing":
        # Worker processes unpickle our DoFns by module name: make the project importable there.
        paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
        if _PROJECT_ROOT not in paths:
            os.environ["PYTHONPATH"] = os.pathsep.join([_PROJECT_ROOT] + [p for p in paths if p])
    return options


def is_template_launch(options: PipelineOptions) -> bool:
    """True when run() only builds and stages the job graph: a Flex Template launcher (Beam's
    DataflowRunner writes the graph to --template_location instead of submitting it) or any
    --template_location run. The job runs later, so nothing may depend on code after run()."""
    from apache_beam.options.pipeline_options import GoogleCloudOptions

    return bool(options.view_as(GoogleCloudOptions).template_location)


def runner_for(options: PipelineOptions):
    """The runner to construct beam.Pipeline with: FnApiRunner when none was asked for."""
    if options.view_as(StandardOptions).runner is None:
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner
        return FnApiRunner()
    return None  # beam.Pipeline resolves the --runner flag itself


@contextlib.contextmanager
def without_state_cache():
    """Runs in-process FnApiRunner pipelines started inside the block without the worker state
    cache (see module docstring). Other runners ignore it; the setting is restored on exit."""
    from apache_beam.runners.portability.fn_api_runner import worker_handlers
    saved = worker_handlers.STATE_CACHE_SIZE_MB
    worker_handlers.STATE_CACHE_SIZE_MB = 0
    try:
        yield
    finally:
        worker_handlers.STATE_CACHE_SIZE_MB = saved


@contextlib.contextmanager
def streamed_stage_inputs():
    """In-process FnApiRunner pipelines started inside the block pass each stage's input to the
    worker in chunks (see module docstring); other runners ignore it. Restored on exit."""
    from apache_beam.portability.api import beam_fn_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.worker import data_plane

    original = fn_runner.BundleManager._send_input_to_worker

    def send_in_chunks(manager, process_bundle_id, read_transform_id, byte_streams):
        channel = manager._worker_handler.data_conn
        if type(channel) is not data_plane.InMemoryDataChannel:
            return original(manager, process_bundle_id, read_transform_id, byte_streams)
        for chunk in byte_streams or []:  # each holds whole encoded elements
            if chunk:
                channel._inverse._inputs.append(beam_fn_api_pb2.Elements.Data(
                    instruction_id=process_bundle_id, transform_id=read_transform_id, data=chunk))
        # (the original's close() also sends its empty remainder, which the worker skips)

    fn_runner.BundleManager._send_input_to_worker = send_in_chunks
    try:
        yield
    finally:
        fn_runner.BundleManager._send_input_to_worker = original


def describe(options: PipelineOptions) -> str:
    direct = options.view_as(DirectOptions)
    runner = options.view_as(StandardOptions).runner or "FnApiRunner"
    if is_local(options):
        return f"{runner} ({direct.direct_running_mode}, {direct.direct_num_workers or 1} worker(s))"
    return runner
