"""What every stage stands on; it imports no stage.

    artifacts    the artifact layout under --output_dir, readers and the stage-input checks
    publish      staged folders published whole (markers, retries, server-side copies on GCS)
    lock         the output folder's lease (one run at a time, local or gs://)
    textfile     text exports built from whole arrow columns
    columnar     arrow helpers (shards of ids, list columns)
    progress     one log line every few seconds while a long step runs
    faults       named fault points (tests kill a run at one)
    cli          the stages' shared command-line pieces (flags, checks, exit codes)
    beam_runner  the Beam runner and options a stage's job runs with
    bigquery_names  BigQuery project/dataset/date names, checked
"""
import os

# TensorFlow's C++ INFO lines (CUDA stubs, CPU features) drown the stage logs on CPU machines;
# warnings and errors still show. A value set by the user wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
