"""Template-launch semantics: each Beam stage completes and publishes its output by itself.

tests/launcher.py runs the driver as a Dataflow template launch does: `run()` only stages the
job, the driver's code after it runs before the job, and the process ends the moment the job
does. Whatever is on disk then is what a Flex Template launch leaves behind.
"""
import csv
import glob
import json
import os
import subprocess
import sys

import pytest
import tensorflow_transform as tft
from fs_fixtures import file_tree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER = os.path.join(ROOT, "tests", "launcher.py")
USERS, ITEMS = 30, 12


def _interactions(path, bad_rows: int, good_rows: int = 200):
    """A ratings file with `bad_rows` non-numeric ratings; returns the number of data rows."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["user_id", "item_id", "rating"])
        for n in range(good_rows):
            writer.writerow([f"user;{n % USERS}", f"item/{(n * 7) % ITEMS}", 1 + n % 5])
        for n in range(bad_rows):
            writer.writerow([f"user;{n}", "item/0", "not-a-number"])
    return good_rows + bad_rows


def _launch(*argv, entry=("-m", "pipeline.run"), env=None):
    return subprocess.run([sys.executable, LAUNCHER, *entry, *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=dict(os.environ, PYTHONPATH=ROOT, **(env or {})))


def _flex_env():
    return {"FLEX_TEMPLATE_PYTHON_PY_FILE": os.path.join(ROOT, "template", "main.py")}


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """preprocess launched through template/main.py with Flex-launcher-style flags."""
    tmp = tmp_path_factory.mktemp("launch")
    rows = _interactions(tmp / "ratings.csv", bad_rows=3)
    out = tmp / "out"
    result = _launch("--stages=preprocess", f"--output_dir={out}", "--overwrite=false",
                     "--no_report=true", "--source=interactions", f"--input={tmp / 'ratings.csv'}",
                     "--max_rejected_fraction=0.1", "--job_name=ga-wals-preprocess-test",
                     f"--template_location={tmp / 'job.json'}",
                     entry=(os.path.join(ROOT, "template", "main.py"),), env=_flex_env())
    return result, out, rows, tmp


def test_template_launch_of_preprocess_publishes_a_complete_preproc(launched):
    result, out, rows, _ = launched
    assert result.returncode == 0, result.stderr[-3000:]
    assert "launcher exit 0; staged jobs: 1" in result.stderr  # the driver ended before the job ran
    assert "launched: preprocess" in result.stdout
    preproc = out / "preproc"
    metadata = json.loads((preproc / "metadata.json").read_text())
    assert metadata["input_rows"] == rows == metadata["accepted_rows"] + metadata["rejected_rows"]
    assert metadata["rejected_rows"] == 3 and metadata["rejected_by_reason"]
    output = tft.TFTransformOutput(str(preproc))
    assert output.vocabulary_size_by_name("vocab_users") == metadata["nusers"] == USERS
    assert output.vocabulary_size_by_name("vocab_items") == metadata["nitems"] == ITEMS
    assert {b"user;0", b"user;29"} <= set(output.vocabulary_by_name("vocab_users"))
    rejected = [json.loads(line) for path in glob.glob(str(preproc / "rejected-*"))
                for line in open(path) if line.strip()]
    assert len(rejected) == 3 and all(r["reason"] for r in rejected)
    assert glob.glob(str(preproc / "users_for_item-*")) and glob.glob(str(preproc / "items_for_user-*"))
    assert not glob.glob(str(out / "_tmp_preprocess_*"))  # the job cleaned its scratch up


def test_a_refused_launch_leaves_the_published_preproc_as_it_was(launched):
    result, out, _, tmp = launched
    assert result.returncode == 0
    before = file_tree(out / "preproc")
    _interactions(tmp / "bad.csv", bad_rows=150)
    refused = _launch("--stages=preprocess", f"--output_dir={out}", "--overwrite",
                      "--source=interactions", f"--input={tmp / 'bad.csv'}",
                      f"--template_location={tmp / 'job2.json'}")
    assert refused.returncode == 3, refused.stderr[-3000:]  # the job failed, not the launch
    assert "more than --max_rejected_fraction=0.1" in refused.stderr
    assert file_tree(out / "preproc") == before  # every file, byte for byte
    (scratch,) = glob.glob(str(out / "_tmp_preprocess_*"))  # kept: its rejects explain the refusal
    assert json.loads(open(os.path.join(scratch, "refused.json")).read())["error"].startswith("150 of 350")


def test_template_launch_of_beam_predict_publishes_predictions(launched):
    result, out, _, tmp = launched
    assert result.returncode == 0
    train = subprocess.run([sys.executable, "-m", "pipeline.run", "--stages=train",
                            f"--output_dir={out}", "--epochs=2", "--n_embeds=4",
                            "--eval_fraction=0", "--no_report"],
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stderr[-3000:]
    predict = _launch("--stages=predict", "--engine=beam", "--mode=both", "--top_k=3",
                      f"--output_dir={out}", "--outputs=similar_items",
                      f"--template_location={tmp / 'job3.json'}", env=_flex_env(),
                      entry=(os.path.join(ROOT, "template", "main.py"),))
    assert predict.returncode == 0, predict.stderr[-3000:]
    assert "launcher exit 0; staged jobs: 1" in predict.stderr  # both directions: one job
    predictions = out / "predictions"
    manifest = json.loads((predictions / "manifest.json").read_text())
    assert manifest["rows"]["batch_pred"] == USERS and manifest["rows"]["users_for_item"] == ITEMS
    assert sorted(manifest["files"]) == sorted(n for n in os.listdir(predictions) if n != "manifest.json")
    lines = [line for path in glob.glob(str(predictions / "batch_pred-*")) for line in open(path)]
    visitors = [line.rstrip("\n").split("\t")[0] for line in lines]
    assert sorted(visitors) == sorted(f"user;{n}" for n in range(USERS))  # ids read back exactly
    assert glob.glob(str(predictions / "similar_items-*"))  # staged by the driver, published by the job
    assert not glob.glob(str(out / "_tmp_predict_*"))


def test_a_template_launch_refuses_more_than_one_stage(tmp_path):
    result = _launch(f"--output_dir={tmp_path / 'out'}", f"--template_location={tmp_path / 'job.json'}",
                     "--stages=preprocess,train")
    assert result.returncode == 2
    assert "a template launch runs one Dataflow job" in result.stderr
    assert "staged jobs: 0" in result.stderr and not (tmp_path / "out").exists()


def test_template_launch_of_cooc_publishes_it_by_itself(tmp_path):
    """--stages=cooc through template/main.py: the launcher returns at once and the job,
    finishing, publishes cooc/ with its marker; counts add up."""
    rows = _interactions(tmp_path / "ratings.csv", bad_rows=2)
    out = tmp_path / "out"
    result = _launch("--stages=cooc", f"--output_dir={out}", "--no_report=true",
                     "--source=interactions", f"--input={tmp_path / 'ratings.csv'}",
                     "--pmi_min_count=1", "--job_name=ga-wals-cooc-test",
                     f"--template_location={tmp_path / 'job.json'}",
                     entry=(os.path.join(ROOT, "template", "main.py"),), env=_flex_env())
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.load(open(out / "cooc" / "manifest.json"))
    assert manifest["input_rows"] == rows == manifest["accepted_rows"] + manifest["rejected_rows"]
    assert manifest["rejected_rows"] == 2 and glob.glob(str(out / "cooc" / "pmi_similar_items-*"))
    assert glob.glob(str(out / "cooc" / "pmi_similar_items_scores-*.jsonl"))  # published in-job too
    assert not glob.glob(str(out / "_tmp_cooc_*"))
