"""Scheduling: the Composer DAG (structure, and its commands parse with the real driver) and the
Cloud Scheduler job (the script's gcloud call and the launch body the template accepts).

Airflow is not installed in the project venv (too heavy); the DAG is checked from its source.
Set GA_WALS_AIRFLOW_PYTHON to an interpreter with apache-airflow to also load it in Airflow.
"""
import ast
import datetime as dt
import json
import os
import re
import shlex
import stat
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAG_FILE = os.path.join(ROOT, "schedule", "ga_wals_dag.py")
STAGES = ["preprocess", "train", "predict"]
VARIABLES = {"ga_wals_project": "my-proj", "ga_wals_region": "europe-west1",
             "ga_wals_bucket": "my-bucket", "ga_wals_table": "my-proj.123.ga_sessions_*",
             "ga_wals_image": "europe-west1-docker.pkg.dev/my-proj/ga-wals/ga-wals:1"}
LOGICAL_DATE = dt.date(2026, 3, 10)


@pytest.fixture(scope="module")
def dag_tree():
    with open(DAG_FILE) as f:
        return ast.parse(f.read())


def _render(template: str) -> str:
    """The Jinja expressions the DAG uses, rendered as Airflow would for LOGICAL_DATE."""
    values = {"ds_nodash": LOGICAL_DATE.strftime("%Y%m%d"),
              "var.value.get('ga_wals_python', 'python3')": "python3",
              "macros.ds_format(macros.ds_add(ds, -6), '%Y-%m-%d', '%Y%m%d')":
                  (LOGICAL_DATE - dt.timedelta(days=6)).strftime("%Y%m%d")}
    values.update({f"var.value.{k}": v for k, v in VARIABLES.items()})

    def one(match):
        expr = match.group(1).strip()
        assert expr in values, f"test does not know how Airflow renders {{{{ {expr} }}}}"
        return values[expr]
    return re.sub(r"\{\{(.*?)\}\}", one, template)


def _commands(tree) -> dict[str, str]:
    """stage_command(stage) for each stage, from the DAG file without importing Airflow."""
    pure = [node for node in tree.body
            if not isinstance(node, (ast.Try, ast.With))
            and not (isinstance(node, ast.ImportFrom) and node.module.startswith("airflow"))]
    namespace: dict = {}
    exec(compile(ast.Module(body=pure, type_ignores=[]), DAG_FILE, "exec"), namespace)
    return {stage: namespace["stage_command"](stage) for stage in STAGES}


def test_dag_runs_the_three_stages_in_order_and_fails_loudly(dag_tree):
    (with_dag,) = [n for n in dag_tree.body if isinstance(n, ast.With)]
    tasks = {}
    for node in with_dag.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            call = node.value
            keywords = {k.arg: k.value for k in call.keywords}
            assert call.func.id == "BashOperator"
            assert ast.literal_eval(keywords["task_id"]) == node.targets[0].id
            tasks[node.targets[0].id] = ast.unparse(keywords["bash_command"])
    assert list(tasks) == STAGES
    assert all(cmd == f"stage_command('{stage}')" for stage, cmd in tasks.items())
    (chain,) = [ast.unparse(n.value) for n in with_dag.body if isinstance(n, ast.Expr)]
    assert chain == "preprocess >> train >> predict"
    dag_call = with_dag.items[0].context_expr
    options = {k.arg: k.value for k in dag_call.keywords}
    assert ast.literal_eval(options["catchup"]) is False
    assert ast.literal_eval(options["max_active_runs"]) == 1
    assert "trigger_rule" not in ast.unparse(with_dag)  # all_success: a failure stops the chain


def test_dag_commands_are_valid_driver_invocations(dag_tree):
    from pipeline import run as driver
    try:
        driver.build_parser()
    except ModuleNotFoundError as exc:
        pytest.skip(f"driver parser needs every stage module: {exc}")
    parsed = {}
    for stage, command in _commands(dag_tree).items():
        prefix, shell = command.split("; ", 1)
        assert prefix == "set -euo pipefail"
        argv = shlex.split(_render(shell))
        assert argv[:3] == ["python3", "-m", "pipeline.run"]
        parsed[stage] = driver.parse_args(argv[3:])
    output_dirs = {args.output_dir for args, _ in parsed.values()}
    assert output_dirs == {"gs://my-bucket/ga-wals/20260310"}  # stages hand over through one folder
    for stage, (args, beam_argv) in parsed.items():
        assert args.stages == [stage]
        assert "--runner=DataflowRunner" in beam_argv and "--project=my-proj" in beam_argv
    pre = parsed["preprocess"][0]
    assert (pre.source, pre.start_date, pre.end_date) == ("bigquery", "20260304", "20260310")
    assert pre.overwrite and not parsed["train"][0].overwrite  # a retried train resumes
    assert parsed["train"][0].trainer == "vertex"
    assert parsed["train"][0].vertex_image == VARIABLES["ga_wals_image"]


@pytest.mark.skipif(not os.environ.get("GA_WALS_AIRFLOW_PYTHON"),
                    reason="set GA_WALS_AIRFLOW_PYTHON to a python with apache-airflow to load the DAG")
def test_dag_loads_in_airflow(tmp_path):
    script = ("import json; from airflow.models import DagBag\n"
              f"bag = DagBag(dag_folder={os.path.dirname(DAG_FILE)!r}, include_examples=False)\n"
              "dag = bag.dags['ga_wals_nightly']\n"
              "print(json.dumps({'errors': {k: str(v) for k, v in bag.import_errors.items()},"
              " 'order': [t.task_id for t in dag.topological_sort()],"
              " 'upstream': {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks},"
              " 'retries': [t.retries for t in dag.tasks]}))\n")
    env = dict(os.environ, AIRFLOW_HOME=str(tmp_path), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    out = subprocess.run([os.environ["GA_WALS_AIRFLOW_PYTHON"], "-c", script], env=env,
                         capture_output=True, text=True, timeout=300, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["errors"] == {}
    assert result["order"] == STAGES
    assert result["upstream"] == {"preprocess": [], "train": ["preprocess"], "predict": ["train"]}
    assert min(result["retries"]) >= 1


@pytest.fixture
def scheduler_call(tmp_path):
    """Runs create_scheduler_job.sh with a gcloud that records its arguments and the body."""
    fake = tmp_path / "bin" / "gcloud"
    fake.parent.mkdir()
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$RECORD/args"\n'
                    'for a in "$@"; do case "$a" in --message-body-from-file=*) '
                    'cp "${a#*=}" "$RECORD/body.json";; esac; done\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = dict(os.environ, PATH=f"{fake.parent}:{os.environ['PATH']}", RECORD=str(tmp_path),
               PROJECT="my-proj", REGION="europe-west1", BUCKET="my-bucket",
               GA_TABLE="my-proj.123.ga_sessions_*", IMAGE=VARIABLES["ga_wals_image"],
               SERVICE_ACCOUNT="runner@my-proj.iam.gserviceaccount.com")
    subprocess.run(["bash", os.path.join(ROOT, "schedule", "create_scheduler_job.sh")],
                   env=env, check=True, capture_output=True, text=True)
    args = (tmp_path / "args").read_text().splitlines()
    return args, json.loads((tmp_path / "body.json").read_text())


def test_scheduler_job_posts_to_the_flex_template_launch_endpoint(scheduler_call):
    args, _ = scheduler_call
    assert args[:4] == ["scheduler", "jobs", "create", "http"]
    flags = dict(a.split("=", 1) for a in args if a.startswith("--"))
    assert flags["--uri"] == ("https://dataflow.googleapis.com/v1b3/projects/my-proj/"
                              "locations/europe-west1/flexTemplates:launch")
    assert flags["--http-method"] == "POST" and flags["--schedule"] == "0 3 * * *"
    assert flags["--oauth-service-account-email"] == "runner@my-proj.iam.gserviceaccount.com"
    assert flags["--oauth-token-scope"] == "https://www.googleapis.com/auth/cloud-platform"


def test_scheduler_body_is_accepted_by_the_template_and_asks_for_the_last_7_days(scheduler_call):
    from pipeline.run import resolve_date

    _, body = scheduler_call
    launch = body["launchParameter"]
    assert launch["containerSpecGcsPath"] == "gs://my-bucket/templates/ga-wals.json"
    assert launch["environment"]["sdkContainerImage"] == VARIABLES["ga_wals_image"]
    assert "${" not in json.dumps(body)
    with open(os.path.join(ROOT, "template", "metadata.json")) as f:
        regexes = {p["name"]: p["regexes"][0] for p in json.load(f)["parameters"]}
    for name, value in launch["parameters"].items():
        assert name in regexes, f"{name} is not a template parameter"
        assert re.match(regexes[name], value), (name, value)
    today = dt.date(2026, 3, 11)
    start = resolve_date(launch["parameters"]["start_date"], today)
    end = resolve_date(launch["parameters"]["end_date"], today)
    assert (start, end) == ("20260304", "20260310")  # 7 full days, today excluded
