"""What one nightly run does, as plain data: its output folder, date window and the arguments of
its three jobs, and whether every daily table of the window is there. Standard library only, so
that it runs as Vertex AI pipeline components on a bare Python image (schedule/nightly_pipeline.py
ships each function's source, imports inside) and is tested without kfp.

    plan_run         the run for a run time: folder, window (days in the GA time zone), job arguments
    window_tables    the daily tables a window needs (UA ga_sessions_YYYYMMDD, GA4 events_YYYYMMDD)
    tables_query     the INFORMATION_SCHEMA.TABLES query that lists which of them exist
    missing_tables   the needed ones that are not among the existing names
    wait_for_window  check, poll while allowed, then pass or fail with one line (incomplete_message)
"""
from typing import NamedTuple

GA_SCHEMAS = ("ua", "ga4")


def time_zone(name: str):
    """The tzinfo of an IANA time zone name (the GA property's or view's time zone), or a
    ValueError of one line. "UTC" needs no time zone database."""
    import datetime as dt

    if name in ("UTC", "Etc/UTC"):
        return dt.timezone.utc
    import zoneinfo

    try:
        return zoneinfo.ZoneInfo(name)
    except (KeyError, ValueError, OSError, TypeError):  # unknown key, malformed path, a folder
        raise ValueError(f"ga_timezone {name!r} is not an IANA time zone name (e.g. "
                         "America/Los_Angeles, Europe/Berlin, UTC): use the GA property's "
                         "time zone (GA4: Admin > Property details; GA360: the view's)") from None


def plan_run(schedule_time: str, create_time: str, output_root: str, ga_table: str, ga_preset: str,
             window_days: int, image: str, trainer_machine_type: str, trainer_flags: list,
             top_k: int, ga_schema: str = "ua", ga_timezone: str = "UTC", ga4_visitor: str = "",
             ga4_content_param: str = "", lag_days: int = 1
             ) -> NamedTuple("RunPlan", [("output_dir", str), ("start_date", str),
                                         ("end_date", str), ("preprocess_parameters", dict),
                                         ("worker_pool_specs", list),
                                         ("predict_parameters", dict), ("job_suffix", str)]):
    """The run for the day of `schedule_time` (a scheduled run; a manual run uses `create_time`)
    in `ga_timezone`, the time zone of the GA export's daily tables: sessions (UA) or events
    (GA4) of the `window_days` full days ending `lag_days` before that day, everything under
    output_root/YYYYMMDD.

    Each value is handed to a job as is: the Flex Template parameters are the driver's flags
    (without --; on/off flags "true"), the worker pool runs `python -m trainer.task` in `image`.
    """
    import datetime as dt  # inside: a pipeline component ships this function's source alone

    def parsed(text):
        try:
            when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except (AttributeError, ValueError):
            return None  # e.g. the schedule-time placeholder of a run nobody scheduled
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.timezone.utc)
        return when if when.year >= 2000 else None  # an unset time read as the epoch

    when = parsed(schedule_time) or parsed(create_time)
    if when is None:
        raise ValueError(f"no run time in schedule_time={schedule_time!r} create_time={create_time!r}")
    if window_days < 1:
        raise ValueError(f"window_days must be >= 1, got {window_days}")
    if lag_days < 1:
        raise ValueError(f"lag_days must be >= 1 (the run's own day is never complete), got {lag_days}")
    if ga_schema not in ("ua", "ga4"):  # GA_SCHEMAS; a component sees only functions
        raise ValueError(f"ga_schema must be ua or ga4, got {ga_schema!r}")
    # the day as the GA export sees it: its daily tables are days in the property's time zone
    day = when.astimezone(time_zone(ga_timezone)).date()
    end = day - dt.timedelta(days=lag_days)  # lag 1: the last full day before the run's day
    start = end - dt.timedelta(days=window_days - 1)
    window_tables(ga_table, f"{start:%Y%m%d}", f"{end:%Y%m%d}", ga_schema)  # a bad table fails here
    output_dir = f"{output_root.rstrip('/')}/{day:%Y%m%d}"
    preprocess = {"stages": "preprocess", "source": "bigquery", "table": ga_table,
                  "ga_preset": ga_preset, "start_date": f"{start:%Y%m%d}", "end_date": f"{end:%Y%m%d}",
                  "output_dir": output_dir, "overwrite": "true", "no_report": "true"}
    if ga_schema != "ua":  # UA launches stay as they were: the driver's default schema
        preprocess["ga_schema"] = ga_schema
    if ga4_visitor:
        preprocess["ga4_visitor"] = ga4_visitor
    if ga4_content_param:
        preprocess["ga4_content_param"] = ga4_content_param
    # --overwrite: a rerun of the day republishes preproc/ (a new run id), and the day's model
    # must then be trained again from it (without it the trainer refuses another preproc run)
    # warm start from the previous day's model when there is one (the first night starts cold)
    yesterday = f"{output_root.rstrip('/')}/{day - dt.timedelta(days=1):%Y%m%d}/model"
    trainer_args = [f"--input_dir={output_dir}/preproc", f"--output_dir={output_dir}/model",
                    f"--top_k={top_k}", "--overwrite", f"--warm_start_from={yesterday}",
                    "--warm_start_optional"] + list(trainer_flags)
    worker_pool_specs = [{"machine_spec": {"machine_type": trainer_machine_type}, "replica_count": 1,
                          "container_spec": {"image_uri": image,
                                             "command": ["python", "-m", "trainer.task"],
                                             "args": trainer_args}}]
    predict = {"stages": "predict", "engine": "beam", "mode": "items_for_user", "top_k": str(top_k),
               "output_dir": output_dir, "overwrite": "true", "no_report": "true"}
    # Dataflow job names must be unique among running jobs: a manual rerun may overlap the night's
    job_suffix = when.astimezone(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return (output_dir, f"{start:%Y%m%d}", f"{end:%Y%m%d}", preprocess, worker_pool_specs, predict,
            job_suffix)


RunPlan = plan_run.__annotations__["return"]  # the named outputs, for callers outside a pipeline


def window_tables(ga_table: str, start_date: str, end_date: str, ga_schema: str = "ua") -> tuple:
    """(`project.dataset`, [the daily table of every day start_date..end_date]) for a wildcard
    table: `project.dataset.ga_sessions_*` needs ga_sessions_YYYYMMDD, GA4's
    `project.analytics_NNN.events_*` needs events_YYYYMMDD (the name before `*`, then the day).
    Intraday tables (ga_sessions_intraday_*, events_intraday_*) are never among them."""
    import datetime as dt
    import re

    found = re.fullmatch(r"(?P<dataset>[-a-zA-Z0-9_:.]+\.[A-Za-z0-9_]+)\."
                         r"(?P<prefix>[A-Za-z0-9_][A-Za-z0-9_-]*)\*", ga_table or "")
    if not found:
        example = "analytics_NNN.events_*" if ga_schema == "ga4" else "NNN.ga_sessions_*"
        raise ValueError(f"ga_table must be a wildcard table such as project.{example} (its "
                         f"daily tables are the days of the window), got {ga_table!r}")
    prefix = found["prefix"]
    if ga_schema == "ga4" and prefix != "events_":
        raise ValueError(f"ga_schema ga4 reads GA4's daily tables project.analytics_NNN.events_*, "
                         f"got {ga_table!r} (events_intraday_* tables are never read)")
    if "intraday" in prefix:
        raise ValueError(f"ga_table {ga_table!r} names intraday tables; the nightly run reads "
                         "the daily ones (e.g. project.NNN.ga_sessions_*)")
    try:
        first, last = (dt.datetime.strptime(d, "%Y%m%d").date() for d in (start_date, end_date))
    except (TypeError, ValueError):
        raise ValueError(f"window dates must be YYYYMMDD, got {start_date!r}..{end_date!r}") from None
    if last < first:
        raise ValueError(f"window {start_date}..{end_date} ends before it starts")
    days = (last - first).days + 1
    return found["dataset"], [f"{prefix}{first + dt.timedelta(days=i):%Y%m%d}" for i in range(days)]


def tables_query(dataset: str, names: list) -> str:
    """Standard SQL listing which of `names` are tables of `dataset` (project.dataset), from the
    dataset's INFORMATION_SCHEMA.TABLES (metadata only: nothing is scanned or billed by size).
    The names come from window_tables, so each is letters, digits, `_` and `-` only."""
    import re

    project, name = dataset.rsplit(".", 1)
    for text in names:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", text):
            raise ValueError(f"not a daily table name: {text!r}")
    listed = ", ".join(f"'{text}'" for text in names)
    return (f"SELECT table_name FROM `{project}`.{name}.INFORMATION_SCHEMA.TABLES "
            f"WHERE table_name IN ({listed})")


def missing_tables(needed: list, existing: list) -> list:
    """The needed table names (in window order) that are not among the existing ones; names are
    compared exactly, so events_intraday_20240107 never stands in for events_20240107."""
    present = set(existing)
    return [name for name in needed if name not in present]


def incomplete_message(start_date: str, end_date: str, missing: list, ga_schema: str = "ua",
                       waited_minutes: int = 0) -> str:
    """The one line a run fails with when its window is not all there."""
    shown = " ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
    if ga_schema == "ga4":
        why = ("GA4 writes a day's table the next day and updates it for up to 72 h; rerun "
               "later or move the schedule")
    else:
        why = "GA360 writes a day's table after the day ends; rerun later or move the schedule"
    waited = f" after waiting {waited_minutes} min" if waited_minutes else ""
    return f"window {start_date}..{end_date} incomplete{waited}: missing {shown} ({why})"


def wait_for_window(ga_table: str, ga_schema: str, start_date: str, end_date: str,
                    wait_minutes: int, poll_minutes: int, run_query, sleep=None, log=print) -> str:
    """Passes (returning a one-line summary) once every daily table of the window exists, else
    raises a RuntimeError with incomplete_message. `run_query(sql)` returns the table names a
    tables_query lists (a BigQuery client in the pipeline, a fake in the tests). With
    wait_minutes > 0 a missing day is checked again every poll_minutes, 1 + wait_minutes //
    poll_minutes checks in all; 0 checks once and fails at once."""
    import time

    if wait_minutes < 0 or poll_minutes < 1:
        raise ValueError(f"wait_minutes must be >= 0 and poll_minutes >= 1, got "
                         f"{wait_minutes} and {poll_minutes}")
    dataset, needed = window_tables(ga_table, start_date, end_date, ga_schema)
    sql = tables_query(dataset, needed)
    checks = 1 + wait_minutes // poll_minutes
    for check in range(1, checks + 1):
        missing = missing_tables(needed, list(run_query(sql)))
        if not missing:
            return f"window {start_date}..{end_date} complete: {len(needed)} daily tables in {dataset}"
        if check < checks:
            log(f"check {check} of {checks}: missing {' '.join(missing)}; next check in "
                f"{poll_minutes} min")
            (sleep or time.sleep)(poll_minutes * 60)
    raise RuntimeError(incomplete_message(start_date, end_date, missing, ga_schema,
                                          (checks - 1) * poll_minutes))
