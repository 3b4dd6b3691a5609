"""pipeline.run: flag plumbing (what each stage receives), stage-contract errors, exit codes.

The three stages are replaced by recording stand-ins (installed in sys.modules) that take the
flags the real ones own and write the same artifacts as the real ones (test_run_fixtures), so
these tests isolate the driver; tests/test_run_e2e.py runs the real stages.
"""
import argparse
import datetime as dt
import json
import os
import sys
import types

import pytest

from pipeline import run as driver
from pipeline.cloud import vertex
from stagekit.cli import add_shared_args
from test_run_fixtures import write_model, write_predictions, write_preproc

DATAFLOW_FLAGS = ["--runner=DataflowRunner", "--project", "my-proj", "--region=europe-west1",
                  "--temp_location", "gs://bucket/tmp", "--setup_file=./setup.py"]


@pytest.fixture
def stages(monkeypatch):
    """Recording stand-ins for the stage modules; returns {stage: [(args, beam_argv), ...]}."""
    calls = {"preprocess": [], "train": [], "predict": []}

    def preprocess_add_args(p):
        p.add_argument("--source", choices=("bigquery", "ga_export", "interactions"), default="ga_export")
        p.add_argument("--input", default="pipeline/data/sample.ndjson.gz")
        p.add_argument("--start_date")
        p.add_argument("--end_date")

    def preprocess_run(args, beam_argv):
        calls["preprocess"].append((args, list(beam_argv)))
        if not args.output_dir.startswith("gs://"):
            write_preproc(args.output_dir)
        return {"nusers": 6, "nitems": 5}

    def train_run(args):
        calls["train"].append((args, None))
        if not args.output_dir.startswith("gs://"):
            write_model(os.path.dirname(args.output_dir))
        return {"epochs": 3}

    def predict_run(args, beam_argv):
        calls["predict"].append((args, list(beam_argv)))
        if not args.output_dir.startswith("gs://"):
            write_predictions(os.path.dirname(args.output_dir), ["visitor0\tarticle2,article1"])
        return {"users": 6}

    modules = {
        "pipeline.preprocess": (preprocess_add_args, preprocess_run),
        "trainer.task": (lambda p: p.add_argument("--epochs", type=int, default=10), train_run),
        "batch_predict.run": (lambda p: p.add_argument("--engine", choices=["local", "beam"],
                                                       default="local"), predict_run),
    }
    for name, (add_args, run) in modules.items():
        module = types.ModuleType(name)
        module.add_args, module.run = add_args, run
        monkeypatch.setitem(sys.modules, name, module)
    sys.modules["trainer.task"].build_parser = lambda: _trainer_parser(modules["trainer.task"][0])
    return calls


def _trainer_parser(add_args):
    """What trainer.task.build_parser gives: its paths, the shared flags and its own flags."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--input_dir")
    parser.add_argument("--output_dir")
    add_shared_args(parser)
    add_args(parser)
    return parser


def test_defaults_run_everything_under_output(stages):
    args, beam_argv = driver.parse_args([])
    assert args.output_dir == "output" and args.stages == ["preprocess", "train", "predict"]
    assert (args.top_k, args.trainer, beam_argv) == (10, "local", [])


def test_each_stage_gets_its_paths_and_beam_flags_go_only_to_beam_stages(stages, tmp_path, capsys):
    root = str(tmp_path / "out")
    beam = ["--runner=DirectRunner", "--direct_num_workers", "2", "--temp_location", str(tmp_path)]
    assert driver.main(["--output_dir", root, "--top_k", "3", "--epochs", "4"] + beam) == 0

    (pre, pre_argv), = stages["preprocess"]
    (train, train_argv), = stages["train"]
    (pred, pred_argv), = stages["predict"]
    assert pre.output_dir == root and pre_argv == beam
    assert (train.input_dir, train.output_dir) == (f"{root}/preproc", f"{root}/model")
    assert train_argv is None and train.epochs == 4 and train.top_k == 3
    assert (pred.preproc_dir, pred.model_dir, pred.output_dir) == (
        f"{root}/preproc", f"{root}/model", f"{root}/predictions")
    assert pred_argv == beam and pred.top_k == 3
    out = capsys.readouterr().out
    assert "visitor0 -> article2,article1" in out and f"{root}/predictions" in out
    assert os.path.getsize(f"{root}/report.html") > 1000


def test_dataflow_flags_pass_through_untouched(stages, monkeypatch):
    monkeypatch.setattr(driver, "tuning_result", lambda *_: None)  # no gs:// lookups offline
    args, beam_argv = driver.parse_args(["--output_dir", "gs://bucket/run"] + DATAFLOW_FLAGS)
    assert beam_argv == DATAFLOW_FLAGS
    for stage in ("preprocess", "train", "predict"):
        driver.run_stage(stage, args, beam_argv)
    assert stages["preprocess"][0][1] == DATAFLOW_FLAGS and stages["predict"][0][1] == DATAFLOW_FLAGS
    assert stages["train"][0][1] is None
    assert stages["train"][0][0].input_dir == "gs://bucket/run/preproc"
    assert stages["predict"][0][0].output_dir == "gs://bucket/run/predictions"


def test_dataflow_runner_with_local_output_is_refused_before_any_stage(stages, tmp_path, caplog):
    code = driver.main(["--output_dir", str(tmp_path / "out")] + DATAFLOW_FLAGS)
    assert code == 2 and "--runner=DataflowRunner needs: --output_dir on gs://" in caplog.text
    assert stages["preprocess"] == [] and not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags, message", [
    (["--output_dir", "gs://b/run"] + DATAFLOW_FLAGS[1:], "--trainer vertex needs: --vertex_image"),
    (["--vertex_image", "gcr.io/p/i"] + DATAFLOW_FLAGS[1:], "--trainer vertex needs: --output_dir on gs://"),
])
def test_vertex_training_without_what_it_needs_fails_before_preprocessing(stages, flags, message, caplog):
    assert driver.main(["--trainer", "vertex"] + flags) == 2
    assert message in caplog.text and stages["preprocess"] == []


@pytest.mark.parametrize("argv, missing", [
    (["--runner=DataflowRunner", "--output_dir=gs://b/run"],
     ["--project", "--region", "--temp_location=gs://... (or --staging_location=gs://...)"]),
    (["--runner=DataflowRunner", "--project=p", "--temp_location=/tmp/local", "--output_dir=gs://b/run"],
     ["--region", "--temp_location=gs://... (or --staging_location=gs://...)"]),
    (["--runner=DataflowRunner", "--region=r", "--staging_location=gs://b/s", "--output_dir=out"],
     ["--project", "--output_dir on gs:// (got out"]),
    (["--trainer=vertex", "--stages=train", "--output_dir=gs://b/run", "--vertex_image=i"],
     ["--project", "--region", "--temp_location=gs://... (the Vertex AI staging bucket)"]),
])
def test_cloud_preflight_names_every_missing_flag_in_one_line(stages, argv, missing, caplog, tmp_path):
    assert driver.main(argv) == 2
    (line,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    for flag in missing:
        assert flag in line, (flag, line)
    everything = ["--project", "--region", "--temp_location", "--vertex_image", "--output_dir"]
    assert sum(flag in line for flag in everything) == len(missing)  # and nothing it has
    assert all(calls == [] for calls in stages.values())


def test_dataflow_with_only_a_staging_location_passes_the_preflight(stages):
    args, beam_argv = driver.parse_args(["--runner=DataflowRunner", "--project=p", "--region=r",
                                         "--staging_location=gs://b/s", "--output_dir=gs://b/run"])
    driver.check_runner(args, beam_argv)  # raises on a missing flag


@pytest.mark.parametrize("stage_flags", [["--stages=preprocess,train"], ["--stages=train"],
                                         ["--stages=predict"]])
def test_a_template_launch_runs_exactly_one_beam_job(stages, stage_flags, caplog):
    code = driver.main(["--output_dir=gs://b/run", "--template_location=gs://b/t.json"]
                       + stage_flags + DATAFLOW_FLAGS)
    assert code == 2 and "a template launch runs one Dataflow job" in caplog.text
    assert all(calls == [] for calls in stages.values())


@pytest.mark.parametrize("argv, message", [
    (["--top-k", "5"], "unrecognised flag(s) --top-k"),
    (["stray"], "unexpected argument 'stray'"),
    (["--stages", "preprocess,serve"], "unknown stage(s) ['serve']"),
    (["--trainer", "gpu"], "invalid choice: 'gpu'"),
])
def test_bad_flags_exit_2_with_a_clear_message(stages, argv, message, capsys):
    assert driver.main(argv) == 2
    assert message in capsys.readouterr().err
    assert stages["preprocess"] == []


def test_train_without_preproc_says_what_is_missing_and_writes_nothing(stages, tmp_path, caplog):
    root = tmp_path / "out"
    assert driver.main(["--stages", "train", "--output_dir", str(root)]) == 2
    assert f"{root}/preproc/metadata.json" in caplog.text and "'preprocess' stage" in caplog.text
    assert stages["train"] == [] and not root.exists()


def test_predict_with_model_of_another_preproc_run_is_refused(stages, tmp_path, caplog):
    write_preproc(str(tmp_path), nusers=6, nitems=5)
    write_model(str(tmp_path), nusers=6, nitems=4)
    assert driver.main(["--stages", "predict", "--output_dir", str(tmp_path)]) == 2
    assert "nitems=4" in caplog.text and "nitems=5" in caplog.text
    assert stages["predict"] == [] and not (tmp_path / "predictions").exists()


def test_preproc_vocabulary_and_metadata_disagreeing_is_refused(stages, tmp_path, caplog):
    write_preproc(str(tmp_path), nusers=6, nitems=5)
    meta_path = tmp_path / "preproc" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps(dict(meta, nusers=7)))
    assert driver.main(["--stages", "train", "--output_dir", str(tmp_path)]) == 2
    assert "vocab_users has 6 entries" in caplog.text and "nusers=7" in caplog.text


def test_preprocess_and_predict_without_a_model_fail_before_preprocessing(stages, tmp_path, caplog):
    assert driver.main(["--stages", "preprocess,predict", "--output_dir", str(tmp_path / "o")]) == 2
    assert "'train' stage" in caplog.text and stages["preprocess"] == []


def test_stage_failure_stops_the_run_with_exit_1(stages, tmp_path, caplog, monkeypatch):
    def failing_preprocess(args, beam_argv):
        raise ValueError("12 of 40 rows rejected, above --max_rejected_fraction")
    monkeypatch.setattr(sys.modules["pipeline.preprocess"], "run", failing_preprocess)
    assert driver.main(["--output_dir", str(tmp_path / "o")]) == 1
    assert "max_rejected_fraction" in caplog.text.splitlines()[-1]
    assert stages["train"] == [] and stages["predict"] == []


def test_relative_dates_become_a_window_and_flex_booleans_are_accepted(stages):
    args, _ = driver.parse_args(["--start_date=today-7", "--end_date=yesterday", "--overwrite=true"],
                                today=dt.date(2026, 3, 2))
    assert (args.start_date, args.end_date, args.overwrite) == ("20260223", "20260301", True)
    args, _ = driver.parse_args(["--start_date", "20250101", "--overwrite=false"])
    assert (args.start_date, args.end_date, args.overwrite) == ("20250101", None, False)


def test_vertex_job_spec_carries_trainer_flags_not_beam_flags(stages):
    args, beam_argv = driver.parse_args(["--output_dir", "gs://bucket/run", "--trainer", "vertex",
                                         "--epochs", "7", "--overwrite", "--vertex_image",
                                         "europe-docker.pkg.dev/p/r/ga-wals:1"] + DATAFLOW_FLAGS)
    spec = vertex.build_custom_job_spec(driver.stage_args("train", args), image=args.vertex_image,
                                        machine_type=args.vertex_machine_type, display_name="t")
    (pool,) = spec["worker_pool_specs"]
    container = pool["container_spec"]
    assert container["image_uri"] == "europe-docker.pkg.dev/p/r/ga-wals:1"
    assert container["command"] == ["python", "-m", "trainer.task"]
    assert sorted(container["args"]) == sorted([
        "--input_dir=gs://bucket/run/preproc", "--output_dir=gs://bucket/run/model",
        "--top_k=10", "--seed=42", "--overwrite", "--epochs=7"])
    assert pool["machine_spec"]["machine_type"] == args.vertex_machine_type
    assert vertex.cloud_options(beam_argv) == ("my-proj", "europe-west1", "gs://bucket/tmp")


def test_vertex_trainer_submits_the_spec_instead_of_training_here(stages, monkeypatch):
    submitted = {}

    def fake_submit(spec, **where):  # nothing may reach Google Cloud from a test
        submitted.update(spec=spec, **where)
        return "projects/1/locations/europe-west1/customJobs/9"
    monkeypatch.setattr(vertex, "submit_custom_job", fake_submit)
    monkeypatch.setattr(vertex, "read_json", lambda path: {"model_json": path})
    monkeypatch.setattr(driver, "tuning_result", lambda *_: None)  # no gs:// lookups offline
    args, beam_argv = driver.parse_args(["--output_dir", "gs://b/run", "--trainer=vertex",
                                         "--vertex_image=gcr.io/p/img:2"] + DATAFLOW_FLAGS)
    summary = driver.run_stage("train", args, beam_argv)
    assert stages["train"] == []
    assert summary == {"model_json": "gs://b/run/model/model.json",
                       "vertex_job": "projects/1/locations/europe-west1/customJobs/9"}
    assert (submitted["project"], submitted["region"]) == ("my-proj", "europe-west1")
    assert "--runner=DataflowRunner" not in submitted["spec"]["worker_pool_specs"][0]["container_spec"]["args"]


@pytest.mark.parametrize("output_dir, image, message", [
    ("local/out", "gcr.io/p/img", "needs --output_dir on gs://"),
    ("gs://b/run", None, "needs --vertex_image"),
])
def test_vertex_spec_refuses_what_a_vertex_worker_cannot_use(stages, output_dir, image, message):
    args, _ = driver.parse_args(["--output_dir", output_dir])
    with pytest.raises(ValueError, match=message.replace("-", r"\-")):
        vertex.build_custom_job_spec(driver.stage_args("train", args), image=image,
                                     machine_type="n1-standard-4", display_name="t")


def test_stage_args_are_copies(stages):
    args, _ = driver.parse_args(["--output_dir", "root"])
    train = driver.stage_args("train", args)
    assert isinstance(train, argparse.Namespace) and args.output_dir == "root"
    assert train.output_dir == "root/model"


def test_in_the_flex_launcher_unknown_options_are_passed_on_not_refused(stages, monkeypatch):
    with pytest.raises(SystemExit):
        driver.parse_args(["--launcher_option=1"])
    monkeypatch.setenv("FLEX_TEMPLATE_PYTHON_PY_FILE", "/template/template/main.py")
    _, beam_argv = driver.parse_args(["--launcher_option=1", "--runner=DataflowRunner"])
    assert beam_argv == ["--launcher_option=1", "--runner=DataflowRunner"]


def _example(key: int, indices: list[int], values: list[float]) -> bytes:
    import tensorflow as tf
    feature = {"key": tf.train.Feature(int64_list=tf.train.Int64List(value=[key])),
               "indices": tf.train.Feature(int64_list=tf.train.Int64List(value=indices)),
               "values": tf.train.Feature(float_list=tf.train.FloatList(value=values))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def test_shared_record_reader_keeps_shard_order_across_gzip_and_plain_shards(tmp_path):
    import tensorflow as tf
    from stagekit import artifacts
    rows = {0: ([1, 2], [0.5, 1.0]), 1: ([0], [0.25]), 2: ([], []), 3: ([2], [0.75])}
    for shard, (keys, gz) in enumerate((([0, 1], True), ([2], False), ([3], True))):
        name = f"{tmp_path}/items_for_user-{shard:05d}-of-00003" + (".gz" if gz else "")
        with tf.io.TFRecordWriter(name, options="GZIP" if gz else "") as writer:
            for key in keys:
                writer.write(_example(key, *rows[key]))
    files = artifacts.shards(str(tmp_path), "items_for_user")
    read = [(int(k), list(i), list(v), path.rsplit("/", 1)[1])
            for keys, indices, values, path in artifacts.sparse_row_batches(files, 2, with_values=True)
            for k, i, v in zip(keys, indices.numpy(), values.numpy())]
    assert [(k, i, v) for k, i, v, _ in read] == [(k, *rows[k]) for k in range(4)]
    assert [name for *_, name in read] == ["items_for_user-00000-of-00003.gz"] * 2 + [
        "items_for_user-00001-of-00003", "items_for_user-00002-of-00003.gz"]
    assert all(v is None for _, _, v, _ in artifacts.sparse_row_batches(files))


def test_shared_json_and_npy_helpers_round_trip_and_raise_the_callers_error(tmp_path):
    import numpy as np
    from stagekit import artifacts
    artifacts.write_json(f"{tmp_path}/a.json", {"b": 1, "a": [2.5]})
    assert artifacts.read_json(f"{tmp_path}/a.json") == {"a": [2.5], "b": 1}
    factors = np.arange(6, dtype=np.float32).reshape(3, 2)
    artifacts.write_npy(f"{tmp_path}/f.npy", factors)
    np.testing.assert_array_equal(artifacts.read_npy(f"{tmp_path}/f.npy"), factors)
    assert artifacts.npy_shape(f"{tmp_path}/f.npy") == (3, 2)
    for read in (artifacts.read_json, artifacts.read_npy):
        with pytest.raises(KeyError, match="nothing at .*/absent"):
            read(f"{tmp_path}/absent", missing=lambda path: KeyError(f"nothing at {path}"))
    with pytest.raises(LookupError, match=r"no shards .*/users_for_item-\*"):
        artifacts.shards(str(tmp_path), "users_for_item", missing=lambda p: LookupError(f"no shards {p}"))


@pytest.mark.parametrize("flags, message", [
    (["--regularization", "-1"], "--regularization"),
    (["--source", "interactions"], "needs --input"),
    (["--source", "bigquery", "--table", "p.d.t; DROP"], "invalid BigQuery table"),
    (["--top_k", "0"], "--top_k"),
])
def test_bad_stage_flags_exit_2_before_any_stage_runs(tmp_path, caplog, flags, message):
    """The real stages' flag checks run up front: nothing is read or written, exit code 2."""
    out = tmp_path / "out"
    assert driver.main(["--output_dir", str(out), *flags]) == 2
    assert not out.exists()
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and message in errors[0] and "Error:" not in errors[0]
