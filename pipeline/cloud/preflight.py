"""Pre-flight for Google Cloud runs: what a Dataflow job or a Vertex AI job needs, checked before
any work starts, reported in one line that names every missing flag.

Without it, `--runner=DataflowRunner` without `--temp_location` ends deep in a TensorFlow GCS
traceback, and a missing `--region` surfaces only after a local stage has run.
"""
from __future__ import annotations

from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, StandardOptions


class PreflightError(ValueError):
    """Flags a cloud run needs are missing; the message names each one (exit code 2)."""


def uses_dataflow(options: PipelineOptions) -> bool:
    return "dataflow" in (options.view_as(StandardOptions).runner or "").lower()


def _is_gcs(path: str | None) -> bool:
    return bool(path) and path.startswith("gs://") and len(path.rstrip("/")) > len("gs://")


def missing_flags(options: PipelineOptions, *, output_dir: str, dataflow: bool, vertex: bool,
                  vertex_image: str | None = None) -> list[str]:
    """What is missing for a Dataflow job (dataflow) and/or a Vertex AI training job (vertex)."""
    gcp = options.view_as(GoogleCloudOptions)
    missing = []
    if (dataflow or vertex) and not gcp.project:
        missing.append("--project")
    if (dataflow or vertex) and not gcp.region:
        missing.append("--region")
    if dataflow and not (_is_gcs(gcp.temp_location) or _is_gcs(gcp.staging_location)):
        missing.append("--temp_location=gs://... (or --staging_location=gs://...)")
    if vertex and not _is_gcs(gcp.temp_location):
        missing.append("--temp_location=gs://... (the Vertex AI staging bucket)")
    if vertex and not vertex_image:
        missing.append("--vertex_image (a container image with this package)")
    if (dataflow or vertex) and not _is_gcs(output_dir):
        missing.append(f"--output_dir on gs:// (got {output_dir}; workers cannot write to this disk)")
    return missing


def check(options: PipelineOptions, *, output_dir: str, stages: list[str], trainer: str,
          vertex_image: str | None) -> None:
    """Raises PreflightError naming every missing flag for the cloud services this run uses."""
    dataflow = uses_dataflow(options)
    vertex = trainer == "vertex" and ("train" in stages or "tune" in stages)
    missing = missing_flags(options, output_dir=output_dir, dataflow=dataflow, vertex=vertex,
                            vertex_image=vertex_image)
    if missing:
        who = " and ".join(w for w, used in (("--runner=DataflowRunner", dataflow),
                                              ("--trainer vertex", vertex)) if used)
        raise PreflightError(f"{who} needs: {'; '.join(missing)}")
