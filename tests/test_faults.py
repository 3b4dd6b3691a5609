"""kill -9 at stage boundaries and inside stages, publishes included (stagekit/faults.py points).

After any kill each published folder (preproc/, model/, predictions/) is entirely the old run's
or entirely the new one's, the newest SavedModel still loads and answers, and a plain rerun
completes. (A kill inside training is covered by tests/test_trainer_task.py's resume tests.)
"""
import csv
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import tensorflow as tf

from stagekit import artifacts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ["--source=interactions", "--epochs=2", "--n_embeds=4", "--eval_fraction=0", "--no_report",
         "--outputs=export,popular_items", "--top_k=3"]
MARKERS = {"preproc": "metadata.json", "model": "model.json", "predictions": "manifest.json"}


def _ratings(path, users: int, seed: int):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["user_id", "item_id", "rating"])
        for n in range(users * 6):
            writer.writerow([f"v{n % users}", f"a{(n * seed) % 13}", 1 + (n * seed) % 5])


def _run(output_dir, input_path, *extra, kill_at=None):
    env = dict(os.environ)
    env.pop("GA_WALS_KILL_AT", None)
    if kill_at:
        env["GA_WALS_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, "-m", "pipeline.run", f"--output_dir={output_dir}",
                           f"--input={input_path}", *FLAGS, *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def _tree(folder) -> dict:
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, folder)
            if not rel.startswith("export" + os.sep):  # versions are checked on their own
                out[rel] = open(path, "rb").read()
    return out


@pytest.fixture(scope="module")
def old_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    _ratings(tmp / "old.csv", users=20, seed=3)
    _ratings(tmp / "new.csv", users=27, seed=5)
    base = tmp / "base"
    result = _run(base, tmp / "old.csv")
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp, base, {name: _tree(base / name) for name in MARKERS}


def _state(folder, old_tree) -> str:
    """'old' (byte for byte) or 'new' (complete, self-consistent, another run); else it fails."""
    tree = _tree(folder)
    if tree == old_tree:
        return "old"
    name = os.path.basename(folder)
    marker = json.loads(tree[MARKERS[name]])  # a new output without its marker would fail here
    assert marker["run_id"] != json.loads(old_tree[MARKERS[name]])["run_id"]
    if name == "preproc":
        artifacts.check_preproc(os.path.dirname(folder))
    if name == "predictions":
        assert sorted(marker["files"] + ["manifest.json"]) == sorted(tree)
    return "new"


def _served_model_answers(model_dir):
    versions = sorted(int(v) for v in os.listdir(os.path.join(model_dir, "export")) if v.isdigit())
    loaded = tf.saved_model.load(os.path.join(model_dir, "export", str(versions[-1])))
    out = loaded.signatures["serving_default"](visitorId=tf.constant(["v1"]))
    assert out["contentId"].shape[-1] == 3


@pytest.mark.parametrize("stages, kill_at", [
    ("preprocess,train,predict", "stage:preprocess:done"),   # stage boundaries
    ("preprocess,train,predict", "stage:train:done"),
    ("preprocess", "publish:swapping"),                      # inside each publish
    ("preprocess", "publish:swapped"),
    ("train", "train:before_publish"),
    ("train", "publish:swapping"),
    ("predict", "export:before_rename"),                     # inside predict
    ("predict", "publish:swapping"),
])
def test_after_a_kill_every_output_is_entirely_old_or_entirely_new(old_run, tmp_path, stages, kill_at):
    tmp, base, old = old_run
    out = tmp_path / "out"
    shutil.copytree(base, out)
    killed = _run(out, tmp / "new.csv", f"--stages={stages}", "--overwrite", kill_at=kill_at)
    assert killed.returncode == -signal.SIGKILL, (kill_at, killed.stderr[-2000:])
    states = {name: _state(out / name, old[name]) for name in MARKERS}
    _served_model_answers(out / "model")
    if kill_at.startswith("stage:"):
        finished = stages.split(",")[: stages.split(",").index(kill_at.split(":")[1]) + 1]
        expected = {"preproc": "preprocess" in finished, "model": "train" in finished,
                    "predictions": "predict" in finished}
        assert states == {k: "new" if v else "old" for k, v in expected.items()}, states
    elif kill_at == "publish:swapped":  # killed right after the swap, before cleaning up
        stage_folder = {"preprocess": "preproc", "train": "model", "predict": "predictions"}[stages]
        assert states == {k: "new" if k == stage_folder else "old" for k in MARKERS}, states
    else:
        assert set(states.values()) == {"old"}, states  # killed before its publish swapped
    again = _run(out, tmp / "new.csv", f"--stages={stages}", "--overwrite")
    assert again.returncode == 0, again.stderr[-3000:]
    last = {"preprocess": "preproc", "train": "model", "predict": "predictions"}[stages.split(",")[-1]]
    assert _state(out / last, old[last]) == "new"
    _served_model_answers(out / "model")
    assert not [p for p in os.listdir(out) if p.startswith(("_tmp_", ".lock")) or ".replaced-" in p]
    assert not [v for v in os.listdir(out / "model" / "export") if v.startswith(".tmp-")]
