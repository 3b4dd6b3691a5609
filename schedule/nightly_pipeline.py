"""The nightly chain as a Vertex AI pipeline (Kubeflow Pipelines v2 + Google Cloud pipeline components).

    plan_run (the date window and every job's arguments; schedule/nightly_plan.py)
      -> preprocess: the Flex Template as a Dataflow job, waited for (WaitGcpResourcesOp)
      -> train:      `python -m trainer.task` as a Vertex AI custom job on the project's image
      -> predict:    the Flex Template again, stages=predict engine=beam, waited for

Each step starts only when the one before it succeeded; every run writes under
OUTPUT_ROOT/<run date>. Nothing here imports the product (no TensorFlow, TFT or Beam): the
orchestrator only submits jobs and waits, on Google's side. Commands (docs/GCP.md):

    python schedule/nightly_pipeline.py compile --output ga_wals_nightly.yaml
    python schedule/nightly_pipeline.py run      ... [--dry_run]   # one run now
    python schedule/nightly_pipeline.py schedule ... [--dry_run]   # the nightly trigger (cron)
"""

import argparse
import json
import os
import sys
import tempfile

from kfp import compiler, dsl
from google_cloud_pipeline_components.v1.custom_job import CustomTrainingJobOp
from google_cloud_pipeline_components.v1.dataflow import DataflowFlexTemplateJobOp
from google_cloud_pipeline_components.v1.wait_gcp_resources import WaitGcpResourcesOp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nightly_plan import plan_run  # noqa: E402 - beside this file, not a package

PIPELINE_NAME = "ga-wals-nightly"
DEFAULT_CRON = "0 3 * * *"  # 03:00 UTC: GA360's daily export of yesterday is usually there by then
plan_component = dsl.component(plan_run, base_image="python:3.11-slim")


@dsl.pipeline(name=PIPELINE_NAME,
              description="GA360 -> WALS recommendations: preprocess (Dataflow) -> train "
                          "(Vertex AI) -> predict (Dataflow), one output folder per run date.")
def nightly(project: str, location: str, template_path: str, image: str, ga_table: str,
            output_root: str, temp_location: str, service_account: str = "",
            ga_preset: str = "news", window_days: int = 7, top_k: int = 10,
            trainer_machine_type: str = "n1-standard-8", trainer_flags: list = [],  # noqa: B006
            max_workers: int = 10):
    plan = plan_component(
        schedule_time=dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER,
        create_time=dsl.PIPELINE_JOB_CREATE_TIME_UTC_PLACEHOLDER,
        output_root=output_root, ga_table=ga_table, ga_preset=ga_preset, window_days=window_days,
        image=image, trainer_machine_type=trainer_machine_type, trainer_flags=trainer_flags,
        top_k=top_k).set_display_name("plan-run")
    dataflow = dict(project=project, location=location, container_spec_gcs_path=template_path,
                    temp_location=temp_location, sdk_container_image=image,
                    service_account_email=service_account, max_workers=max_workers)
    preprocess = DataflowFlexTemplateJobOp(
        job_name=f"ga-wals-preprocess-{plan.outputs['job_suffix']}", parameters=plan.outputs["preprocess_parameters"],
        **dataflow).set_display_name("preprocess")
    preprocess_done = WaitGcpResourcesOp(
        gcp_resources=preprocess.outputs["gcp_resources"]).set_display_name("wait-preprocess")
    train = CustomTrainingJobOp(
        project=project, location=location, display_name="ga-wals-train",
        worker_pool_specs=plan.outputs["worker_pool_specs"], service_account=service_account,
        base_output_directory=plan.outputs["output_dir"]).set_display_name("train")
    train.after(preprocess_done)
    predict = DataflowFlexTemplateJobOp(
        job_name=f"ga-wals-predict-{plan.outputs['job_suffix']}", parameters=plan.outputs["predict_parameters"],
        **dataflow).set_display_name("predict")
    predict.after(train)
    predict_done = WaitGcpResourcesOp(
        gcp_resources=predict.outputs["gcp_resources"]).set_display_name("wait-predict")
    for task in (plan, preprocess, preprocess_done, train, predict, predict_done):
        task.set_caching_options(False)  # a rerun must run the jobs again, never reuse old results


def compile_pipeline(path: str) -> str:
    compiler.Compiler().compile(pipeline_func=nightly, package_path=path)
    return path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python schedule/nightly_pipeline.py", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    compile_cmd = commands.add_parser("compile", help="write the pipeline spec (YAML)")
    compile_cmd.add_argument("--output", default="ga_wals_nightly.yaml")
    for name, text in (("run", "submit one run now"), ("schedule", "create the nightly schedule")):
        cmd = commands.add_parser(name, help=text)
        cmd.add_argument("--project", required=True)
        cmd.add_argument("--region", required=True, help="Vertex AI and Dataflow region")
        cmd.add_argument("--pipeline_root", required=True, help="gs:// folder for Vertex AI pipeline files")
        cmd.add_argument("--template_path", required=True, help="gs:// Flex Template spec (make template)")
        cmd.add_argument("--image", required=True, help="the project's image (make template)")
        cmd.add_argument("--ga_table", required=True, help="project.dataset.ga_sessions_*")
        cmd.add_argument("--output_root", required=True, help="gs:// folder; each run writes <root>/YYYYMMDD")
        cmd.add_argument("--temp_location", required=True, help="gs:// folder for Dataflow temp files")
        cmd.add_argument("--service_account", default="", help="runs the pipeline and its jobs")
        cmd.add_argument("--ga_preset", choices=("news", "ecommerce"), default="news")
        cmd.add_argument("--window_days", type=int, default=7)
        cmd.add_argument("--top_k", type=int, default=10)
        cmd.add_argument("--trainer_machine_type", default="n1-standard-8")
        cmd.add_argument("--trainer_flags", default="", help="extra trainer flags, comma-separated "
                                                             "(e.g. --epochs=20,--n_embeds=64)")
        cmd.add_argument("--dry_run", action="store_true", help="print the request, submit nothing")
    commands.choices["schedule"].add_argument("--cron", default=DEFAULT_CRON, help="UTC cron")
    return parser


def parameter_values(args: argparse.Namespace) -> dict:
    return {"project": args.project, "location": args.region, "template_path": args.template_path,
            "image": args.image, "ga_table": args.ga_table, "output_root": args.output_root,
            "temp_location": args.temp_location, "service_account": args.service_account,
            "ga_preset": args.ga_preset, "window_days": args.window_days, "top_k": args.top_k,
            "trainer_machine_type": args.trainer_machine_type,
            "trainer_flags": [f for f in args.trainer_flags.split(",") if f]}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "compile":
        print(f"wrote {compile_pipeline(args.output)}")
        return 0
    for flag in ("pipeline_root", "template_path", "output_root", "temp_location"):
        if not getattr(args, flag).startswith("gs://"):
            print(f"--{flag} must be a gs:// path, got {getattr(args, flag)}", file=sys.stderr)
            return 2
    spec = compile_pipeline(os.path.join(tempfile.mkdtemp(), "ga_wals_nightly.yaml"))
    request = {"display_name": PIPELINE_NAME, "template_path": spec, "pipeline_root": args.pipeline_root,
               "parameter_values": parameter_values(args), "project": args.project,
               "location": args.region, "service_account": args.service_account or None}
    if args.command == "schedule":
        request["cron"] = f"TZ=Etc/UTC {args.cron}"
    if args.dry_run:
        print(json.dumps(request, indent=2, sort_keys=True))
        return 0
    from google.cloud import aiplatform

    job = aiplatform.PipelineJob(display_name=request["display_name"], template_path=spec,
                                 pipeline_root=args.pipeline_root,
                                 parameter_values=request["parameter_values"],
                                 project=args.project, location=args.region)
    if args.command == "run":
        job.submit(service_account=request["service_account"])
        print(f"submitted {job.resource_name}")
    else:
        schedule = job.create_schedule(display_name=PIPELINE_NAME, cron=request["cron"],
                                       max_concurrent_run_count=1,
                                       service_account=request["service_account"])
        print(f"created schedule {schedule.resource_name} ({request['cron']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
