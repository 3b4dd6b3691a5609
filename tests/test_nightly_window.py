"""The nightly chain's window (schedule/nightly_plan.py): GA4 runs, days in the GA property's time
zone, and the check that every daily table of the window exists before anything is launched.

The table check runs against a fake INFORMATION_SCHEMA.TABLES: a dataset of table names that
answers the plan's own SQL (its FROM path and IN list), so what is asked is checked too. The
last tests run the compiled pipeline's shipped component sources (orchestrator venv) with a fake
BigQuery client, and the schedule command of the CLI.
"""
import json
import os
import re
import subprocess

import pytest

from tests.nightly_fixtures import IMAGE, ORCHESTRATE_PYTHON, ROOT, SCHEDULE, plan_module  # noqa: F401
GA4_TABLE = "my-proj.analytics_123456789.events_*"
UA_TABLE = "my-proj.123456789.ga_sessions_*"


plan_module = plan_module()


def _plan(schedule_time="2026-03-11T03:00:00Z", create_time="2026-03-11T03:00:00Z", **kw):
    values = dict(output_root="gs://my-bucket/ga-wals", ga_table=UA_TABLE, ga_preset="news",
                  window_days=7, image=IMAGE, trainer_machine_type="n1-standard-8",
                  trainer_flags=[], top_k=10)
    values.update(kw)
    return plan_module.RunPlan(*plan_module.plan_run(schedule_time, create_time, **values))


class FakeInformationSchema:
    """BigQuery's INFORMATION_SCHEMA.TABLES of some datasets, answering tables_query's SQL."""

    QUERY = re.compile(r"SELECT table_name FROM `(?P<project>[^`]+)`\.(?P<dataset>\w+)"
                       r"\.INFORMATION_SCHEMA\.TABLES WHERE table_name IN \((?P<names>[^)]*)\)")

    def __init__(self, tables: dict):
        self.tables = {dataset: set(names) for dataset, names in tables.items()}
        self.queries = []

    def __call__(self, sql: str) -> list:
        self.queries.append(sql)
        found = self.QUERY.fullmatch(sql)
        assert found, sql
        asked = re.findall(r"'([^']*)'", found["names"])
        assert found["names"] == ", ".join(f"'{name}'" for name in asked), found["names"]
        in_dataset = self.tables.get(f"{found['project']}.{found['dataset']}", set())
        return sorted(name for name in in_dataset if name in asked)


def _days(prefix, first, last):
    return [f"{prefix}{day}" for day in range(first, last + 1)]


def test_a_window_needs_one_daily_table_per_day():
    dataset, names = plan_module.window_tables(GA4_TABLE, "20240130", "20240202", "ga4")
    assert dataset == "my-proj.analytics_123456789"
    assert names == ["events_20240130", "events_20240131", "events_20240201", "events_20240202"]
    dataset, names = plan_module.window_tables("example.com:proj.123.ga_sessions_*", "20241231",
                                               "20250101")
    assert (dataset, names) == ("example.com:proj.123", ["ga_sessions_20241231", "ga_sessions_20250101"])
    for table, schema, words in ((UA_TABLE.rstrip("*") + "20240101", "ua", "wildcard"),
                                 ("my-proj.analytics_1.events_intraday_*", "ga4", "events_intraday"),
                                 (UA_TABLE, "ga4", "events_*"),
                                 ("my-proj.123.ga_sessions_intraday_*", "ua", "intraday")):
        with pytest.raises(ValueError, match=re.escape(words)):
            plan_module.window_tables(table, "20240101", "20240107", schema)
    with pytest.raises(ValueError, match="ends before it starts"):
        plan_module.window_tables(GA4_TABLE, "20240107", "20240101", "ga4")


def _check(schema, table, existing, wait_minutes=0, poll_minutes=30, appear_after_sleeps=None):
    """wait_for_window on 20240101..20240107 against a fake INFORMATION_SCHEMA holding
    `existing`; `appear_after_sleeps`: (n, names) that appear after the n-th sleep."""
    dataset = table.rsplit(".", 1)[0]
    schema_tables = FakeInformationSchema({dataset: existing, "my-proj.other": _days("events_", 20240101, 20240107)})
    sleeps, logged = [], []

    def sleep(seconds):
        sleeps.append(seconds)
        if appear_after_sleeps and len(sleeps) == appear_after_sleeps[0]:
            schema_tables.tables[dataset] |= set(appear_after_sleeps[1])

    try:
        result = plan_module.wait_for_window(table, schema, "20240101", "20240107", wait_minutes,
                                             poll_minutes, schema_tables, sleep=sleep, log=logged.append)
    except RuntimeError as error:
        result = error
    return result, schema_tables.queries, sleeps, logged


def test_a_complete_window_passes_after_one_metadata_query():
    existing = _days("events_", 20231225, 20240110) + _days("events_intraday_", 20240108, 20240108)
    result, queries, sleeps, _ = _check("ga4", GA4_TABLE, existing)
    assert result == "window 20240101..20240107 complete: 7 daily tables in my-proj.analytics_123456789"
    assert queries == ["SELECT table_name FROM `my-proj`.analytics_123456789.INFORMATION_SCHEMA.TABLES "
                       "WHERE table_name IN (" + ", ".join(f"'events_{d}'" for d in range(20240101, 20240108))
                       + ")"] and sleeps == []
    result, queries, _, _ = _check("ua", UA_TABLE, _days("ga_sessions_", 20240101, 20240107))
    assert result.endswith("complete: 7 daily tables in my-proj.123456789") and len(queries) == 1


def test_a_missing_day_fails_with_one_line_naming_it():
    result, queries, sleeps, _ = _check("ga4", GA4_TABLE, _days("events_", 20240101, 20240106))
    assert isinstance(result, RuntimeError) and len(queries) == 1 and sleeps == []
    assert str(result) == ("window 20240101..20240107 incomplete: missing events_20240107 (GA4 writes a "
                           "day's table the next day and updates it for up to 72 h; rerun later or "
                           "move the schedule)")
    # UA names its own tables; a missing day in the middle is missing too
    existing = [name for name in _days("ga_sessions_", 20240101, 20240107) if name != "ga_sessions_20240103"]
    result, _, _, _ = _check("ua", UA_TABLE, existing)
    assert str(result).startswith("window 20240101..20240107 incomplete: missing ga_sessions_20240103 (GA360")
    assert "\n" not in str(result)


def test_intraday_tables_never_stand_in_for_a_daily_one():
    existing = _days("events_", 20240101, 20240106) + ["events_intraday_20240107", "events_intraday_20240108"]
    result, _, _, _ = _check("ga4", GA4_TABLE, existing)
    assert isinstance(result, RuntimeError) and "missing events_20240107 (" in str(result)
    existing = _days("ga_sessions_", 20240101, 20240106) + ["ga_sessions_intraday_20240107"]
    result, _, _, _ = _check("ua", UA_TABLE, existing)
    assert isinstance(result, RuntimeError) and "missing ga_sessions_20240107 (" in str(result)
    assert plan_module.missing_tables(["events_20240107"], ["events_intraday_20240107"]) == ["events_20240107"]


def test_a_run_may_wait_a_bounded_time_for_the_last_day():
    late = _days("events_", 20240101, 20240106)
    # the table lands after the second wait: three checks, two sleeps of poll_minutes
    result, queries, sleeps, logged = _check("ga4", GA4_TABLE, late, wait_minutes=120, poll_minutes=30,
                                             appear_after_sleeps=(2, ["events_20240107"]))
    assert result.startswith("window 20240101..20240107 complete") and len(queries) == 3
    assert sleeps == [1800, 1800]
    assert logged[0] == "check 1 of 5: missing events_20240107; next check in 30 min"
    # never there: 1 + 120 // 30 checks, then the one line, saying how long it waited
    result, queries, sleeps, _ = _check("ga4", GA4_TABLE, late, wait_minutes=120, poll_minutes=30)
    assert len(queries) == 5 and sleeps == [1800] * 4
    assert str(result).startswith("window 20240101..20240107 incomplete after waiting 120 min: "
                                  "missing events_20240107 (")
    with pytest.raises(ValueError, match="poll_minutes"):
        _check("ga4", GA4_TABLE, late, wait_minutes=60, poll_minutes=0)


def test_many_missing_days_stay_one_short_line():
    message = plan_module.incomplete_message("20240101", "20240130", _days("events_", 20240101, 20240130),
                                             "ga4")
    assert "missing events_20240101 " in message and "events_20240110 and 20 more (" in message
    assert "events_20240111" not in message and "\n" not in message


def test_the_window_is_in_the_ga_time_zone():
    # 03:00 UTC on 11 March is 20:00 on 10 March in Los Angeles (PDT, UTC-7): the run's day is
    # the 10th there, so its window ends on the 9th, two days before the UTC date of the run
    plan = _plan(ga_timezone="America/Los_Angeles")
    assert plan.output_dir == "gs://my-bucket/ga-wals/20260310"
    assert (plan.start_date, plan.end_date) == ("20260303", "20260309")
    assert plan.job_suffix == "20260311-030000"  # job names stay in UTC: unique, not local
    (pool,) = plan.worker_pool_specs
    assert "--warm_start_from=gs://my-bucket/ga-wals/20260309/model" in pool["container_spec"]["args"]
    utc = _plan()
    assert (utc.start_date, utc.end_date) == ("20260304", "20260310")
    # winter (PST, UTC-8): the day changes at 08:00 UTC
    before = _plan(schedule_time="2026-01-15T07:59:59Z", ga_timezone="America/Los_Angeles", window_days=1)
    after = _plan(schedule_time="2026-01-15T08:00:00Z", ga_timezone="America/Los_Angeles", window_days=1)
    assert (before.start_date, before.end_date, after.start_date) == ("20260113", "20260113", "20260114")
    # east of UTC the local day starts earlier: 20:00 UTC on the 10th is the 11th in Tokyo
    tokyo = _plan(schedule_time="2026-03-10T20:00:00Z", ga_timezone="Asia/Tokyo")
    assert (tokyo.output_dir[-8:], tokyo.start_date, tokyo.end_date) == ("20260311", "20260304", "20260310")
    # a manual run's creation time is read in the same zone
    manual = _plan(schedule_time="{{$.pipeline_job_schedule_time_utc}}", create_time="2026-03-11T06:59:00Z",
                   ga_timezone="America/Los_Angeles", window_days=1)
    assert (manual.output_dir[-8:], manual.end_date) == ("20260310", "20260309")


def test_lag_days_ends_the_window_earlier():
    plan = _plan(ga_timezone="Europe/Berlin", lag_days=3, window_days=7)
    assert plan.output_dir.endswith("/20260311")
    assert (plan.start_date, plan.end_date) == ("20260302", "20260308")
    with pytest.raises(ValueError, match="lag_days"):
        _plan(lag_days=0)


@pytest.mark.parametrize("name", ["Mars/Olympus_Mons", "PST", "utc", "America", "", "../etc/passwd",
                                  "/usr/share/zoneinfo/UTC", " UTC"])
def test_a_bad_time_zone_fails_with_one_clear_line(name):
    with pytest.raises(ValueError) as raised:
        _plan(ga_timezone=name)
    message = str(raised.value)
    assert message.startswith(f"ga_timezone {name!r} is not an IANA time zone name") and "\n" not in message


def test_ga4_runs_read_events_and_pass_the_schema_to_the_driver():
    plan = _plan(ga_schema="ga4", ga_table=GA4_TABLE)
    assert plan.preprocess_parameters == {
        "stages": "preprocess", "source": "bigquery", "table": GA4_TABLE, "ga_preset": "news",
        "ga_schema": "ga4", "start_date": "20260304", "end_date": "20260310",
        "output_dir": "gs://my-bucket/ga-wals/20260311", "overwrite": "true", "no_report": "true"}
    tuned = _plan(ga_schema="ga4", ga_table=GA4_TABLE, ga4_visitor="user_id",
                  ga4_content_param="page_path", ga_preset="ecommerce").preprocess_parameters
    assert (tuned["ga4_visitor"], tuned["ga4_content_param"], tuned["ga_preset"]) == (
        "user_id", "page_path", "ecommerce")
    # UA launches are what they were: no schema parameter, no GA4 options
    assert not {"ga_schema", "ga4_visitor", "ga4_content_param"} & set(_plan().preprocess_parameters)
    with pytest.raises(ValueError, match="events_"):
        _plan(ga_schema="ga4")  # the UA table
    with pytest.raises(ValueError, match="ga_schema must be ua or ga4"):
        _plan(ga_schema="ga5")


def test_a_ga4_launch_is_one_valid_template_job():
    """Against the real consumers, once they know --ga_schema (being added to the driver)."""
    from pipeline import run as driver

    parameters = _plan(ga_schema="ga4", ga_table=GA4_TABLE, ga4_visitor="user_id").preprocess_parameters
    with open(os.path.join(ROOT, "template", "metadata.json")) as f:
        regexes = {p["name"]: p["regexes"][0] for p in json.load(f)["parameters"]}
    if not {"ga_schema", "ga4_visitor"} <= set(regexes):
        pytest.skip("template/metadata.json has no ga_schema / ga4_visitor parameter yet")
    for name, value in parameters.items():
        assert name in regexes and re.match(regexes[name], value), (name, value)
    args, beam_argv = driver.parse_args([f"--{name}={value}" for name, value in parameters.items()] + [
        "--runner=DataflowRunner", "--project=my-proj", "--region=europe-west1",
        "--temp_location=gs://my-bucket/tmp", "--template_location=gs://my-bucket/staged-job"])
    driver.check_runner(args, beam_argv)
    driver.check_flags(args)
    assert (args.ga_schema, args.ga4_visitor, args.table) == ("ga4", "user_id", GA4_TABLE)


# --- the compiled pipeline's components and the CLI (orchestrator venv) -------------------------

needs_kfp = pytest.mark.skipif(not os.path.exists(ORCHESTRATE_PYTHON),
                               reason=f"no orchestrator venv at {ORCHESTRATE_PYTHON} (make orchestrate-venv)")

RUN_SHIPPED = r"""
import importlib.util, json, re, sys, time
from unittest import mock

source, function, case = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
spec = importlib.util.spec_from_file_location("ephemeral_component", source)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
calls = {"clients": [], "queries": [], "sleeps": []}

class FakeClient:
    def __init__(self, project=None, **kwargs):
        calls["clients"].append(project)

    def query(self, sql):
        calls["queries"].append(sql)
        asked = re.findall(r"'([^']*)'", sql.split(" IN ", 1)[1])
        rows = [{"table_name": name} for name in case.get("existing", []) if name in asked]
        return mock.Mock(result=mock.Mock(return_value=rows))

with mock.patch("google.cloud.bigquery.Client", FakeClient), \
        mock.patch.object(time, "sleep", calls["sleeps"].append):
    try:
        calls["result"] = getattr(module, function)(**case["args"])
    except Exception as error:
        calls["error"] = f"{type(error).__name__}: {error}"
print(json.dumps(calls))
"""


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """Each component's source as the compiled pipeline ships it (the container's last command)."""
    folder = tmp_path_factory.mktemp("kfp")
    subprocess.run([ORCHESTRATE_PYTHON, os.path.join(SCHEDULE, "nightly_pipeline.py"), "compile",
                    "--output", str(folder / "nightly.yaml")], check=True, capture_output=True, cwd=ROOT)
    script = ("import json, sys, yaml; spec = yaml.safe_load(open(sys.argv[1])); print(json.dumps("
              "{k: v['container'] for k, v in spec['deploymentSpec']['executors'].items()}))")
    containers = json.loads(subprocess.run([ORCHESTRATE_PYTHON, "-c", script, str(folder / "nightly.yaml")],
                                           capture_output=True, text=True, check=True).stdout)
    sources = {}
    for name in ("exec-plan-run", "exec-check-window"):
        path = folder / f"{name}.py"
        path.write_text(containers[name]["command"][-1])
        sources[name] = (str(path), containers[name])
    return sources


def _run_shipped(shipped, executor, function, case):
    # from a folder of its own: the shipped source must need nothing of this checkout
    python = os.path.join(ROOT, ORCHESTRATE_PYTHON)  # absolute, unless it already is
    folder = os.path.dirname(shipped[executor][0])
    out = subprocess.run([python, "-c", RUN_SHIPPED, shipped[executor][0], function, json.dumps(case)],
                         capture_output=True, text=True, timeout=120, cwd=folder, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    *printed, calls = out.stdout.splitlines()  # the component's own log lines, then the calls
    return {**json.loads(calls), "printed": printed}


@needs_kfp
def test_the_shipped_check_component_queries_bigquery_and_fails_on_a_missing_day(shipped):
    args = dict(project="billing-proj", ga_table=GA4_TABLE, ga_schema="ga4", start_date="20240101",
                end_date="20240107", wait_minutes=0, poll_minutes=30)
    complete = _run_shipped(shipped, "exec-check-window", "check_window",
                            {"args": args, "existing": _days("events_", 20240101, 20240107)})
    assert complete["result"].startswith("window 20240101..20240107 complete: 7 daily tables")
    assert complete["clients"] == ["billing-proj"] and len(complete["queries"]) == 1
    assert "`my-proj`.analytics_123456789.INFORMATION_SCHEMA.TABLES" in complete["queries"][0]
    partial = _run_shipped(shipped, "exec-check-window", "check_window", {
        "args": {**args, "wait_minutes": 60},
        "existing": _days("events_", 20240101, 20240106) + ["events_intraday_20240107"]})
    assert partial["error"].startswith("RuntimeError: window 20240101..20240107 incomplete after "
                                       "waiting 60 min: missing events_20240107 (")
    assert len(partial["queries"]) == 3 and partial["sleeps"] == [1800, 1800]
    assert partial["printed"] == ["check 1 of 3: missing events_20240107; next check in 30 min",
                                  "check 2 of 3: missing events_20240107; next check in 30 min"]
    assert complete["printed"] == [complete["result"]]  # the task log says the window is whole
    container = shipped["exec-check-window"][1]
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        pin = next(line.strip() for line in f if line.startswith("google-cloud-bigquery=="))
    assert pin in " ".join(container["command"])  # the product's client, installed on the image


@needs_kfp
def test_the_shipped_plan_component_plans_in_the_ga_time_zone(shipped):
    args = dict(schedule_time="2026-03-11T03:00:00Z", create_time="", output_root="gs://b/r",
                ga_table=GA4_TABLE, ga_preset="news", window_days=7, image=IMAGE,
                trainer_machine_type="n1-standard-8", trainer_flags=[], top_k=10, ga_schema="ga4",
                ga_timezone="America/Los_Angeles", ga4_visitor="", ga4_content_param="", lag_days=1)
    planned = _run_shipped(shipped, "exec-plan-run", "plan_run", {"args": args})
    output_dir, start, end, preprocess = planned["result"][:4]
    assert (output_dir, start, end, preprocess["ga_schema"]) == ("gs://b/r/20260310", "20260303",
                                                                 "20260309", "ga4")
    bad = _run_shipped(shipped, "exec-plan-run", "plan_run",
                       {"args": {**args, "ga_timezone": "America/Los_Angles"}})
    assert bad["error"].startswith("ValueError: ga_timezone 'America/Los_Angles' is not an IANA")


def _cli(*argv):
    common = ["--project=my-proj", "--region=europe-west1", "--pipeline_root=gs://my-bucket/root",
              "--template_path=gs://my-bucket/templates/ga-wals.json", f"--image={IMAGE}",
              "--output_root=gs://my-bucket/ga-wals", "--temp_location=gs://my-bucket/tmp"]
    return subprocess.run([ORCHESTRATE_PYTHON, os.path.join(SCHEDULE, "nightly_pipeline.py"), "schedule",
                           *common, *argv, "--dry_run"], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          check=False)


@needs_kfp
def test_the_schedule_runs_in_the_ga_time_zone_and_checks_its_flags_first():
    out = _cli(f"--ga_table={GA4_TABLE}", "--ga_schema=ga4", "--ga_timezone=America/Los_Angeles",
               "--lag_days=3", "--wait_minutes=240", "--cron=0 16 * * *")
    assert out.returncode == 0, out.stderr[-2000:]
    request = json.loads(out.stdout)
    assert request["cron"] == "TZ=America/Los_Angeles 0 16 * * *"
    values = request["parameter_values"]
    assert (values["ga_schema"], values["ga_timezone"], values["lag_days"], values["wait_minutes"]) == (
        "ga4", "America/Los_Angeles", 3, 240)
    assert (values["ga4_visitor"], values["ga4_content_param"], values["poll_minutes"]) == ("", "", 30)
    for flags, words in ((["--ga_timezone=Pacific/Nowhere"], "ga_timezone 'Pacific/Nowhere' is not an IANA"),
                         (["--ga_schema=ga4"], "ga_schema ga4 reads GA4's daily tables"),
                         (["--poll_minutes=0", "--wait_minutes=10"], "--poll_minutes >= 1")):
        table = GA4_TABLE if "--ga_schema=ga4" not in flags else UA_TABLE
        bad = _cli(f"--ga_table={table}", *flags)
        assert bad.returncode == 2 and bad.stdout == "", bad.stderr
        assert bad.stderr.count("\n") == 1 and words in bad.stderr, bad.stderr


@needs_kfp
def test_the_docs_ga4_schedule_command_runs_as_written():
    """docs/GCP.md's GA4=(...) block and its schedule line, run by bash with --dry_run added."""
    with open(os.path.join(ROOT, "docs", "GCP.md")) as f:
        lines = f.read().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("GA4=("))
    stop = next(i for i in range(start, len(lines)) if 'schedule "${GA4[@]}"' in lines[i])
    script = "\n".join(lines[start:stop + 1]).replace(".venv-orchestrate/bin/python", ORCHESTRATE_PYTHON)
    result = subprocess.run(["bash", "-euc", script + " --dry_run"], cwd=ROOT, capture_output=True, check=False,
                            text=True, timeout=300, env=dict(os.environ, PROJECT="my-proj",
                                                             REGION="europe-west1", BUCKET="my-bucket"))
    assert result.returncode == 0, result.stderr[-2000:]
    request = json.loads(result.stdout)
    values = request["parameter_values"]
    assert (values["ga_schema"], values["ga_table"], values["lag_days"]) == (
        "ga4", "my-proj.analytics_123456789.events_*", 4)
    assert request["cron"] == f"TZ={values['ga_timezone']} 0 3 * * *" and values["ga_timezone"] != "UTC"
