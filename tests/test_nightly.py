"""The nightly chain (schedule/): what each run asks of each job, and the Vertex AI pipeline that
runs them (compiled in its own venv, .venv-orchestrate, which `make test` creates).

The run plan is checked against the real consumers: the Flex Template's parameter regexes, the
driver's parser and pre-flight (each launch must be one Beam stage), and the trainer's parser.
"""
import json
import os
import re
import subprocess

import pytest

from pipeline import run as driver

from tests.nightly_fixtures import IMAGE, ORCHESTRATE_PYTHON, ROOT, SCHEDULE, plan_module  # noqa: F401
DATAFLOW_FLAGS = ["--runner=DataflowRunner", "--project=my-proj", "--region=europe-west1",
                  "--temp_location=gs://my-bucket/tmp", "--template_location=gs://my-bucket/staged-job"]


def _plan(schedule_time="2026-03-11T03:00:07.123Z", create_time="2026-03-11T03:00:05Z", **kw):
    module = plan_module()
    values = dict(output_root="gs://my-bucket/ga-wals/", ga_table="my-proj.123.ga_sessions_*", ga_preset="news",
                  window_days=7, image=IMAGE, trainer_machine_type="n1-standard-8",
                  trainer_flags=["--epochs=20"], top_k=12)
    values.update(kw)
    return module.RunPlan(*module.plan_run(schedule_time, create_time, **values))


def test_a_scheduled_run_covers_the_full_days_before_it_in_its_own_folder():
    plan = _plan()
    assert plan.output_dir == "gs://my-bucket/ga-wals/20260311"
    assert (plan.start_date, plan.end_date) == ("20260304", "20260310")
    # a manual run (the schedule-time placeholder stays unresolved) uses its creation time
    manual = _plan(schedule_time="{{$.pipeline_job_schedule_time_utc}}", create_time="2026-01-01T23:59:59Z",
                   window_days=1)
    assert (manual.output_dir, manual.start_date, manual.end_date) == (
        "gs://my-bucket/ga-wals/20260101", "20251231", "20251231")
    with pytest.raises(ValueError, match="window_days"):
        _plan(window_days=0)
    with pytest.raises(ValueError, match="no run time"):
        _plan(schedule_time="", create_time="")
    unset = _plan(schedule_time="1970-01-01T00:00:00Z", create_time="2026-05-02T10:00:00Z")
    assert unset.output_dir.endswith("/20260502") and unset.job_suffix == "20260502-100000"


def _launch_argv(parameters: dict) -> list[str]:
    """What the Flex launcher passes: every parameter as --name=value, plus Dataflow's options."""
    return [f"--{name}={value}" for name, value in parameters.items()] + DATAFLOW_FLAGS


@pytest.mark.parametrize("side, stage", [("preprocess_parameters", "preprocess"),
                                         ("predict_parameters", "predict")])
def test_each_launch_is_one_valid_template_job(side, stage):
    parameters = getattr(_plan(), side)
    with open(os.path.join(ROOT, "template", "metadata.json")) as f:
        regexes = {p["name"]: p["regexes"][0] for p in json.load(f)["parameters"]}
    for name, value in parameters.items():
        assert name in regexes, f"{name} is not a template parameter"
        assert re.match(regexes[name], value), (name, value)
    args, beam_argv = driver.parse_args(_launch_argv(parameters))
    assert args.stages == [stage] and args.output_dir == "gs://my-bucket/ga-wals/20260311"
    driver.check_runner(args, beam_argv)  # pre-flight and "one Beam job per launch"
    driver.check_flags(args)
    if stage == "preprocess":
        assert (args.source, args.table, args.start_date, args.end_date) == (
            "bigquery", "my-proj.123.ga_sessions_*", "20260304", "20260310")
        assert args.overwrite  # a rerun of the day replaces that day's folder
    else:
        assert args.engine == "beam" and args.top_k == 12


def test_training_runs_the_trainer_on_that_days_folder():
    from trainer import task

    (pool,) = _plan().worker_pool_specs
    container = pool["container_spec"]
    assert container["image_uri"] == IMAGE and pool["replica_count"] == 1
    assert container["command"] == ["python", "-m", "trainer.task"]
    args = task.build_parser().parse_args(container["args"])
    assert (args.input_dir, args.output_dir) == ("gs://my-bucket/ga-wals/20260311/preproc",
                                                 "gs://my-bucket/ga-wals/20260311/model")
    assert args.epochs == 20 and args.top_k == 12
    assert args.overwrite  # a rerun of the day retrains on the day's republished preproc/
    # warm start from the day before's model, cold on the first night
    assert args.warm_start_from == "gs://my-bucket/ga-wals/20260310/model"
    assert args.warm_start_optional
    args.warm_start_from = None  # its existence check would read gs:// (no network here)
    task.validate_args(args)


needs_kfp = pytest.mark.skipif(
    not os.path.exists(ORCHESTRATE_PYTHON),
    reason=f"no orchestrator venv at {ORCHESTRATE_PYTHON}: `make test` (or `make orchestrate-venv`) "
           "creates it; GA_WALS_ORCHESTRATE_PYTHON may point to another python with kfp")


def _orchestrate(*argv, check=True):
    return subprocess.run([ORCHESTRATE_PYTHON, os.path.join(SCHEDULE, "nightly_pipeline.py"), *argv],
                          capture_output=True, text=True, timeout=300, check=check, cwd=ROOT)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    path = tmp_path_factory.mktemp("kfp") / "nightly.yaml"
    _orchestrate("compile", "--output", str(path))
    script = "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))"
    out = subprocess.run([ORCHESTRATE_PYTHON, "-c", script, str(path)], capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out)


@needs_kfp
def test_the_pipeline_chains_dataflow_vertex_dataflow_each_waiting_for_the_last(compiled):
    tasks = compiled["root"]["dag"]["tasks"]
    by_name = {task["taskInfo"]["name"]: task for task in tasks.values()}
    task_id = {task["taskInfo"]["name"]: key for key, task in tasks.items()}
    after = {name: sorted(by_name_of(tasks, dep) for dep in task.get("dependentTasks", []))
             for name, task in by_name.items()}
    assert after == {"plan-run": [], "check-window": ["plan-run"],
                     "preprocess": ["check-window", "plan-run"], "wait-preprocess": ["preprocess"],
                     "train": ["plan-run", "wait-preprocess"], "predict": ["plan-run", "train"],
                     "wait-predict": ["predict"]}
    # the table check looks at the window the plan computed, in the table the preprocess reads
    check = by_name["check-window"]["inputs"]["parameters"]
    for side in ("start_date", "end_date"):
        assert check[side]["taskOutputParameter"] == {"outputParameterKey": side,
                                                      "producerTask": task_id["plan-run"]}
    assert check["ga_table"] == {"componentInputParameter": "ga_table"}
    assert check["ga_schema"] == {"componentInputParameter": "ga_schema"}
    for name in ("preprocess", "predict"):
        inputs = by_name[name]["inputs"]["parameters"]
        assert inputs["container_spec_gcs_path"] == {"componentInputParameter": "template_path"}
        assert inputs["sdk_container_image"] == {"componentInputParameter": "image"}
        assert "job_suffix" in json.dumps(inputs["job_name"])  # unique per run: reruns may overlap
        assert inputs["parameters"]["taskOutputParameter"] == {
            "outputParameterKey": f"{name}_parameters", "producerTask": task_id["plan-run"]}
    executors = compiled["deploymentSpec"]["executors"]
    component = compiled["components"][by_name["preprocess"]["componentRef"]["name"]]
    assert "dataflow" in json.dumps(executors[component["executorLabel"]]).lower()
    train = by_name["train"]["inputs"]["parameters"]["worker_pool_specs"]["taskOutputParameter"]
    assert train["outputParameterKey"] == "worker_pool_specs"
    assert all(task["cachingOptions"].get("enableCache") in (False, None) for task in tasks.values())
    plan_code = json.dumps(executors[compiled["components"][by_name["plan-run"]["componentRef"]["name"]]
                                     ["executorLabel"]])
    assert "def plan_run" in plan_code and "tensorflow" not in plan_code and "apache_beam" not in plan_code


def by_name_of(tasks: dict, key: str) -> str:
    return tasks[key]["taskInfo"]["name"]


@needs_kfp
def test_the_nightly_schedule_request_matches_the_pipeline(compiled, tmp_path):
    common = ["--project=my-proj", "--region=europe-west1", "--pipeline_root=gs://my-bucket/root",
              "--template_path=gs://my-bucket/templates/ga-wals.json", f"--image={IMAGE}",
              "--ga_table=my-proj.123.ga_sessions_*", "--output_root=gs://my-bucket/ga-wals",
              "--temp_location=gs://my-bucket/tmp", "--trainer_flags=--epochs=20,--n_embeds=64"]
    request = json.loads(_orchestrate("schedule", *common, "--dry_run").stdout)
    assert request["cron"] == "TZ=Etc/UTC 0 3 * * *"
    declared = compiled["root"]["inputDefinitions"]["parameters"]
    values = request["parameter_values"]
    required = {name for name, spec in declared.items() if not spec.get("isOptional")}
    assert required <= set(values) <= set(declared)
    assert values["trainer_flags"] == ["--epochs=20", "--n_embeds=64"]
    local = _orchestrate("run", *common[:-1], "--output_root=/tmp/out", "--dry_run", check=False)
    assert local.returncode == 2 and "--output_root must be a gs:// path" in local.stderr


def test_the_scheduled_run_time_is_utc():
    # a schedule time given with an offset is the same UTC day as written in UTC
    plan = _plan(schedule_time="2026-03-11T01:30:00+02:00")
    assert plan.output_dir.endswith("/20260310")
    assert (plan.start_date, plan.end_date) == ("20260303", "20260309")


@needs_kfp
def test_the_docs_schedule_command_runs_as_written():
    """docs/GCP.md's COMMON=(...) block and its --dry_run line, run by bash as a user would."""
    with open(os.path.join(ROOT, "docs", "GCP.md")) as f:
        lines = f.read().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("COMMON=("))
    stop = next(i for i in range(start, len(lines)) if "--dry_run" in lines[i])
    script = "\n".join(lines[start:stop + 1]).replace(".venv-orchestrate/bin/python", ORCHESTRATE_PYTHON)
    result = subprocess.run(["bash", "-euc", script], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, env=dict(os.environ, PROJECT="my-proj", REGION="europe-west1",
                                                  BUCKET="my-bucket"))
    assert result.returncode == 0, result.stderr[-2000:]
    request = json.loads(result.stdout)
    values = request["parameter_values"]
    assert values["ga_table"] == "my-proj.123456789.ga_sessions_*"
    # the docs' schedule runs in the GA time zone, as its window does
    assert values["ga_timezone"] == "America/Los_Angeles"
    assert request["cron"] == "TZ=America/Los_Angeles 0 3 * * *"
    assert values["template_path"] == "gs://my-bucket/templates/ga-wals.json"
    assert values["output_root"] == "gs://my-bucket/ga-wals"
