"""What one nightly run does, as plain data: its output folder, date window and the arguments of
its three jobs. Standard library only, so that it runs as a Vertex AI pipeline component on a bare
Python image (schedule/nightly_pipeline.py) and is tested without kfp.
"""
from typing import NamedTuple


def plan_run(schedule_time: str, create_time: str, output_root: str, ga_table: str, ga_preset: str,
             window_days: int, image: str, trainer_machine_type: str, trainer_flags: list,
             top_k: int) -> NamedTuple("RunPlan", [("output_dir", str), ("start_date", str),
                                                   ("end_date", str), ("preprocess_parameters", dict),
                                                   ("worker_pool_specs", list),
                                                   ("predict_parameters", dict), ("job_suffix", str)]):
    """The run for the day of `schedule_time` (a scheduled run; a manual run uses `create_time`):
    sessions of the `window_days` full days before it, everything under output_root/YYYYMMDD.

    Each value is handed to a job as is: the Flex Template parameters are the driver's flags
    (without --; on/off flags "true"), the worker pool runs `python -m trainer.task` in `image`.
    """
    import datetime as dt  # inside: a pipeline component ships this function's source alone

    def utc(text):
        try:
            when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except (AttributeError, ValueError):
            return None  # e.g. the schedule-time placeholder of a run nobody scheduled
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.timezone.utc)
        return when if when.year >= 2000 else None  # an unset time read as the epoch

    when = utc(schedule_time) or utc(create_time)
    if when is None:
        raise ValueError(f"no run time in schedule_time={schedule_time!r} create_time={create_time!r}")
    if window_days < 1:
        raise ValueError(f"window_days must be >= 1, got {window_days}")
    day = when.astimezone(dt.timezone.utc).date()
    end = day - dt.timedelta(days=1)  # the last full day: GA360 exports a day after it ends
    start = end - dt.timedelta(days=window_days - 1)
    output_dir = f"{output_root.rstrip('/')}/{day:%Y%m%d}"
    preprocess = {"stages": "preprocess", "source": "bigquery", "table": ga_table,
                  "ga_preset": ga_preset, "start_date": f"{start:%Y%m%d}", "end_date": f"{end:%Y%m%d}",
                  "output_dir": output_dir, "overwrite": "true", "no_report": "true"}
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
