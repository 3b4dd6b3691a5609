"""Airflow / Cloud Composer DAG: every night, preprocess -> train -> predict on the last 7 days.

Each task runs `python -m pipeline.run --stages=<stage>` with the same --output_dir, so stages
hand over through files exactly as in a local run: preprocessing and batch prediction run on
Dataflow, training as a Vertex AI custom job; the Composer worker only submits and waits.
A stage that fails (non-zero exit: bad input, missing artifact, failed job) fails its task
after one retry, and the downstream tasks do not run (trigger rule all_success).

Airflow Variables: ga_wals_project, ga_wals_region, ga_wals_bucket, ga_wals_table
(project.dataset.ga_sessions_*), ga_wals_image (the image `make template` builds) and
optionally ga_wals_python (an interpreter with this package installed; default python3).
See docs/GCP.md.
"""
import datetime as dt

try:  # Airflow 3 moved BashOperator to the standard provider
    from airflow.providers.standard.operators.bash import BashOperator
except ImportError:
    from airflow.operators.bash import BashOperator
from airflow import DAG

STAGES = ("preprocess", "train", "predict")
PYTHON = "{{ var.value.get('ga_wals_python', 'python3') }}"
BUCKET = "{{ var.value.ga_wals_bucket }}"
# one folder per logical date: reruns and backfills replace only their own day
OUTPUT_DIR = f"gs://{BUCKET}/ga-wals/{{{{ ds_nodash }}}}"
BEAM_FLAGS = [
    "--runner=DataflowRunner",
    "--project={{ var.value.ga_wals_project }}",
    "--region={{ var.value.ga_wals_region }}",
    f"--temp_location=gs://{BUCKET}/tmp",
    "--sdk_container_image={{ var.value.ga_wals_image }}",
]
# the 7 days ending on the logical date (ds is the day the interval covers, i.e. yesterday)
WINDOW_START = "{{ macros.ds_format(macros.ds_add(ds, -6), '%Y-%m-%d', '%Y%m%d') }}"
STAGE_FLAGS = {
    "preprocess": ["--source=bigquery", "--table={{ var.value.ga_wals_table }}",
                   f"--start_date={WINDOW_START}", "--end_date={{ ds_nodash }}",
                   "--overwrite", "--no_report"],
    # no --overwrite: a retry resumes from the trainer's checkpoints
    "train": ["--trainer=vertex", "--vertex_image={{ var.value.ga_wals_image }}", "--no_report"],
    "predict": ["--engine=beam", "--overwrite"],
}


def stage_command(stage: str) -> str:
    """The shell command of one task; `set -e` so any failure is the task's failure."""
    args = [f"--stages={stage}", f"--output_dir={OUTPUT_DIR}"] + STAGE_FLAGS[stage] + BEAM_FLAGS
    return "set -euo pipefail; " + " ".join([PYTHON, "-m", "pipeline.run"] + [f"'{a}'" for a in args])


DEFAULT_ARGS = {
    "owner": "ga-wals",
    "retries": 1,
    "retry_delay": dt.timedelta(minutes=10),
    "email_on_failure": True,  # to the DAG owners' addresses configured in Composer
    "email_on_retry": False,
}

with DAG(
    dag_id="ga_wals_nightly",
    description="GA360 -> WALS recommendations: preprocess, train, predict (pipeline.run)",
    schedule="0 3 * * *",
    start_date=dt.datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=dt.timedelta(hours=8),
    default_args=DEFAULT_ARGS,
    tags=["ga-wals", "recommendations"],
) as dag:
    preprocess = BashOperator(task_id="preprocess", bash_command=stage_command("preprocess"))
    train = BashOperator(task_id="train", bash_command=stage_command("train"))
    predict = BashOperator(task_id="predict", bash_command=stage_command("predict"))
    preprocess >> train >> predict
