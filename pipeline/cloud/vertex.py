"""Runs the train stage as a Vertex AI CustomJob (`pipeline.run --trainer vertex`).

The job runs `python -m trainer.task` in the pipeline's container image (the Flex Template image
of the Dockerfile works: it has the package installed) with the same flags the local trainer
would get, so a Vertex run and a local run of the same command train the same model.
Building the spec is pure and tested offline; only `submit_custom_job` talks to Google Cloud.
"""
from __future__ import annotations

import argparse
import logging
import time

from stagekit.artifacts import join, read_json

log = logging.getLogger(__name__)

DEFAULT_MACHINE_TYPE = "n1-standard-8"


def add_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Vertex AI training (--trainer vertex)")
    group.add_argument("--vertex_image", default=None,
                       help="Container image with this package installed (e.g. the Flex Template "
                            "image: REGION-docker.pkg.dev/PROJECT/REPO/ga-wals:TAG).")
    group.add_argument("--vertex_machine_type", default=DEFAULT_MACHINE_TYPE,
                       help="Machine type of the Vertex AI training replica.")
    group.add_argument("--vertex_parallel_trials", type=int, default=3,
                       help="Trials a Vertex AI tuning job runs at once (--stages tune).")
    group.add_argument("--vertex_service_account", default=None,
                       help="Service account the training job runs as (default: Vertex AI's).")


def argv_for(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The command-line flags that make `parser` reproduce the values in `args` (its own dests only)."""
    argv = []
    for action in parser._actions:  # argparse has no public iterator over actions
        if not action.option_strings or action.dest == "help" or not hasattr(args, action.dest):
            continue
        value, flag = getattr(args, action.dest), action.option_strings[-1]
        if isinstance(action, argparse._StoreTrueAction):
            argv += [flag] if value else []
        elif isinstance(action, argparse._StoreFalseAction):
            argv += [] if value else [flag]
        elif value is not None:
            argv.append(f"{flag}={value}")
    return argv


def trainer_parser() -> argparse.ArgumentParser:
    """The parser of `python -m trainer.task`: --input_dir, --output_dir, shared flags, its own flags."""
    from trainer import flags

    return flags.build_parser()


def build_custom_job_spec(train_args: argparse.Namespace, *, image: str, machine_type: str,
                          display_name: str) -> dict:
    """The CustomJob fields (display_name, worker_pool_specs) for one training replica."""
    if not image:
        raise ValueError("--trainer vertex needs --vertex_image (a container image with this package)")
    for name in ("input_dir", "output_dir"):
        if not str(getattr(train_args, name)).startswith("gs://"):
            raise ValueError(f"--trainer vertex needs --output_dir on gs:// (the job's {name} is "
                             f"{getattr(train_args, name)}, which a Vertex AI worker cannot read)")
    return {
        "display_name": display_name,
        "worker_pool_specs": [{
            "machine_spec": {"machine_type": machine_type},
            "replica_count": 1,
            "container_spec": {
                "image_uri": image,
                "command": ["python", "-m", "trainer.task"],
                "args": argv_for(trainer_parser(), train_args),
            },
        }],
    }


def cloud_options(beam_argv: list[str]) -> tuple[str | None, str | None, str | None]:
    """(project, region, temp_location) from the Beam flags, which also place the Vertex job."""
    from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

    gcp = PipelineOptions(beam_argv).view_as(GoogleCloudOptions)
    return gcp.project, gcp.region, gcp.temp_location


def submit_custom_job(spec: dict, *, project: str, region: str, staging_bucket: str,
                      service_account: str | None = None) -> str:
    """Submits the job, waits for it, and returns its resource name; raises if it fails."""
    from google.cloud import aiplatform

    job = aiplatform.CustomJob(display_name=spec["display_name"],
                               worker_pool_specs=spec["worker_pool_specs"],
                               project=project, location=region, staging_bucket=staging_bucket)
    job.run(service_account=service_account, sync=True)  # raises on a failed job
    return job.resource_name


def run(train_args: argparse.Namespace, beam_argv: list[str], options: argparse.Namespace) -> dict:
    """Train on Vertex AI; returns model.json read back from the model folder the job wrote."""
    project, region, temp_location = cloud_options(beam_argv)
    if not (project and region and temp_location):
        raise ValueError("--trainer vertex needs --project, --region and --temp_location (gs://)")
    spec = build_custom_job_spec(train_args, image=options.vertex_image,
                                 machine_type=options.vertex_machine_type,
                                 display_name=f"ga-wals-train-{time.strftime('%Y%m%d-%H%M%S')}")
    log.info("submitting Vertex AI CustomJob %s to %s/%s", spec["display_name"], project, region)
    name = submit_custom_job(spec, project=project, region=region, staging_bucket=temp_location,
                             service_account=options.vertex_service_account)
    summary = read_json(join(train_args.output_dir, "model.json"))
    summary["vertex_job"] = name
    return summary

