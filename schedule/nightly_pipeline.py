"""The nightly chain as a Vertex AI pipeline (Kubeflow Pipelines v2 + Google Cloud pipeline components).

    plan_run (the date window and every job's arguments; schedule/nightly_plan.py)
      -> check-window: every daily table of the window exists (INFORMATION_SCHEMA.TABLES), or
                       wait for it, or fail naming the missing days
      -> preprocess: the Flex Template as a Dataflow job, waited for (WaitGcpResourcesOp)
      -> train:      `python -m trainer.task` as a Vertex AI custom job on the project's image
      -> predict:    the Flex Template again, stages=predict engine=beam, waited for

Each step starts only when the one before it succeeded; every run writes under
OUTPUT_ROOT/<run date>. Nothing here imports the product (no TensorFlow, TFT or Beam): the
orchestrator only submits jobs, lists tables and waits, on Google's side. Commands (docs/GCP.md):

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
from nightly_plan import (GA_SCHEMAS, incomplete_message, missing_tables, plan_run,  # noqa: E402
                          tables_query, time_zone, wait_for_window, window_tables)

PIPELINE_NAME = "ga-wals-nightly"
DEFAULT_CRON = "0 3 * * *"  # 03:00 in --ga_timezone: GA360's export of yesterday is usually there
COMPONENT_IMAGE = "python:3.11-slim"
# the time zone database, should the image have none (zoneinfo falls back to this package)
TZDATA_PACKAGE = "tzdata==2026.6"
# the product's pin (requirements.txt), so the check runs the client the product is tested with
BIGQUERY_PACKAGE = "google-cloud-bigquery==3.47.0"
# a component ships its function's source alone: the helpers it calls go along with it
plan_component = dsl.component(plan_run, base_image=COMPONENT_IMAGE, packages_to_install=[TZDATA_PACKAGE],
                               additional_funcs=[time_zone, window_tables])


def check_window(project: str, ga_table: str, ga_schema: str, start_date: str, end_date: str,
                 wait_minutes: int, poll_minutes: int) -> str:
    """Every daily table of start_date..end_date is in ga_table's dataset (its
    INFORMATION_SCHEMA.TABLES, a metadata query billed to `project`), else wait (wait_minutes)
    or fail with one line naming the missing tables: a run never trains on part of its window."""
    from google.cloud import bigquery  # inside: this function's source is the component

    client = bigquery.Client(project=project)

    def table_names(sql):
        return [row["table_name"] for row in client.query(sql).result()]

    summary = wait_for_window(ga_table, ga_schema, start_date, end_date, wait_minutes, poll_minutes,
                              table_names)
    print(summary)
    return summary


check_component = dsl.component(
    check_window, base_image=COMPONENT_IMAGE, packages_to_install=[BIGQUERY_PACKAGE],
    additional_funcs=[window_tables, tables_query, missing_tables, incomplete_message, wait_for_window])


@dsl.pipeline(name=PIPELINE_NAME,
              description="GA360 / GA4 -> WALS recommendations: check the window's daily tables "
                          "-> preprocess (Dataflow) -> train (Vertex AI) -> predict (Dataflow), "
                          "one output folder per run date.")
def nightly(project: str, location: str, template_path: str, image: str, ga_table: str,
            output_root: str, temp_location: str, service_account: str = "",
            ga_preset: str = "news", window_days: int = 7, top_k: int = 10,
            trainer_machine_type: str = "n1-standard-8", trainer_flags: list = [],  # noqa: B006
            max_workers: int = 10, ga_schema: str = "ua", ga_timezone: str = "UTC",
            ga4_visitor: str = "", ga4_content_param: str = "", lag_days: int = 1,
            wait_minutes: int = 0, poll_minutes: int = 30):
    plan = plan_component(
        schedule_time=dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER,
        create_time=dsl.PIPELINE_JOB_CREATE_TIME_UTC_PLACEHOLDER,
        output_root=output_root, ga_table=ga_table, ga_preset=ga_preset, window_days=window_days,
        image=image, trainer_machine_type=trainer_machine_type, trainer_flags=trainer_flags,
        top_k=top_k, ga_schema=ga_schema, ga_timezone=ga_timezone, ga4_visitor=ga4_visitor,
        ga4_content_param=ga4_content_param, lag_days=lag_days).set_display_name("plan-run")
    check = check_component(
        project=project, ga_table=ga_table, ga_schema=ga_schema,
        start_date=plan.outputs["start_date"], end_date=plan.outputs["end_date"],
        wait_minutes=wait_minutes, poll_minutes=poll_minutes).set_display_name("check-window")
    dataflow = dict(project=project, location=location, container_spec_gcs_path=template_path,
                    temp_location=temp_location, sdk_container_image=image,
                    service_account_email=service_account, max_workers=max_workers)
    preprocess = DataflowFlexTemplateJobOp(
        job_name=f"ga-wals-preprocess-{plan.outputs['job_suffix']}", parameters=plan.outputs["preprocess_parameters"],
        **dataflow).set_display_name("preprocess")
    preprocess.after(check)  # never a partial window: no job starts before every day is there
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
    for task in (plan, check, preprocess, preprocess_done, train, predict, predict_done):
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
        cmd.add_argument("--ga_table", required=True, help="project.dataset.ga_sessions_* (UA) or "
                                                           "project.analytics_NNN.events_* (GA4)")
        cmd.add_argument("--output_root", required=True, help="gs:// folder; each run writes <root>/YYYYMMDD")
        cmd.add_argument("--temp_location", required=True, help="gs:// folder for Dataflow temp files")
        cmd.add_argument("--service_account", default="", help="runs the pipeline and its jobs")
        cmd.add_argument("--ga_preset", choices=("news", "ecommerce"), default="news")
        cmd.add_argument("--ga_schema", choices=GA_SCHEMAS, default="ua",
                         help="ua: GA360 ga_sessions_*; ga4: GA4 events_*")
        cmd.add_argument("--ga4_visitor", choices=("user_pseudo_id", "user_id"), default="",
                         help="ga4: the visitor id (driver default user_pseudo_id)")
        cmd.add_argument("--ga4_content_param", default="",
                         help="ga4 news: the event parameter of the content id (driver default "
                              "page_location)")
        cmd.add_argument("--ga_timezone", default="UTC",
                         help="IANA time zone of the GA property (GA4) or view (GA360): its daily "
                              "tables are days in that zone, and so are the window and the cron")
        cmd.add_argument("--window_days", type=int, default=7)
        cmd.add_argument("--lag_days", type=int, default=1,
                         help="the window ends this many days before the run's day (GA4: 4 "
                              "leaves out days still receiving late events)")
        cmd.add_argument("--wait_minutes", type=int, default=0,
                         help="wait up to this long for missing daily tables (0: fail at once)")
        cmd.add_argument("--poll_minutes", type=int, default=30, help="while waiting, check every ...")
        cmd.add_argument("--top_k", type=int, default=10)
        cmd.add_argument("--trainer_machine_type", default="n1-standard-8")
        cmd.add_argument("--trainer_flags", default="", help="extra trainer flags, comma-separated "
                                                             "(e.g. --epochs=20,--n_embeds=64)")
        cmd.add_argument("--dry_run", action="store_true", help="print the request, submit nothing")
    commands.choices["schedule"].add_argument("--cron", default=DEFAULT_CRON,
                                              help="cron in --ga_timezone (the schedule's TZ=)")
    return parser


def parameter_values(args: argparse.Namespace) -> dict:
    return {"project": args.project, "location": args.region, "template_path": args.template_path,
            "image": args.image, "ga_table": args.ga_table, "output_root": args.output_root,
            "temp_location": args.temp_location, "service_account": args.service_account,
            "ga_preset": args.ga_preset, "window_days": args.window_days, "top_k": args.top_k,
            "trainer_machine_type": args.trainer_machine_type,
            "trainer_flags": [f for f in args.trainer_flags.split(",") if f],
            "ga_schema": args.ga_schema, "ga_timezone": args.ga_timezone,
            "ga4_visitor": args.ga4_visitor, "ga4_content_param": args.ga4_content_param,
            "lag_days": args.lag_days, "wait_minutes": args.wait_minutes,
            "poll_minutes": args.poll_minutes}


def preflight(values: dict) -> None:
    """The run's own checks, before anything is submitted: plan a run for now with these values
    (time zone, schema, table, window) and check the waiting parameters; ValueError otherwise."""
    import datetime as dt

    now = dt.datetime.now(dt.timezone.utc).isoformat()
    plan_run(now, now, values["output_root"], values["ga_table"], values["ga_preset"],
                    values["window_days"], values["image"], values["trainer_machine_type"],
                    values["trainer_flags"], values["top_k"], values["ga_schema"],
                    values["ga_timezone"], values["ga4_visitor"], values["ga4_content_param"],
                    values["lag_days"])
    if values["wait_minutes"] < 0 or values["poll_minutes"] < 1:
        raise ValueError(f"--wait_minutes must be >= 0 and --poll_minutes >= 1, got "
                         f"{values['wait_minutes']} and {values['poll_minutes']}")


def cron_time_zone(ga_timezone: str) -> str:
    """The schedule's TZ= for the GA time zone (Etc/UTC for UTC, as before)."""
    return "Etc/UTC" if ga_timezone in ("UTC", "Etc/UTC") else ga_timezone


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "compile":
        print(f"wrote {compile_pipeline(args.output)}")
        return 0
    for flag in ("pipeline_root", "template_path", "output_root", "temp_location"):
        if not getattr(args, flag).startswith("gs://"):
            print(f"--{flag} must be a gs:// path, got {getattr(args, flag)}", file=sys.stderr)
            return 2
    values = parameter_values(args)
    try:
        preflight(values)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    spec = compile_pipeline(os.path.join(tempfile.mkdtemp(), "ga_wals_nightly.yaml"))
    request = {"display_name": PIPELINE_NAME, "template_path": spec, "pipeline_root": args.pipeline_root,
               "parameter_values": values, "project": args.project,
               "location": args.region, "service_account": args.service_account or None}
    if args.command == "schedule":
        request["cron"] = f"TZ={cron_time_zone(args.ga_timezone)} {args.cron}"
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
