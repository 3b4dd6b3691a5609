"""trainer.task end to end on a small preproc dir: outputs, determinism, resume, overwrite."""
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.trainer_fixtures import random_matrix, train_args, write_preproc
from trainer import task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUSERS, NITEMS = 80, 50
SMALL = ("--n_embeds", "6", "--batch_size", "16", "--batch_entries", "64")


@pytest.fixture(scope="module")
def preproc(tmp_path_factory):
    users, items, ratings = random_matrix(NUSERS, NITEMS, 0.12, seed=5)
    return write_preproc(str(tmp_path_factory.mktemp("data") / "preproc"), users, items, ratings,
                         NUSERS, NITEMS, gz=True)


def load_factors(model_dir):
    return (np.load(os.path.join(model_dir, "row_factors.npy")),
            np.load(os.path.join(model_dir, "col_factors.npy")))


def test_run_writes_the_documented_model_dir_and_is_deterministic(preproc, tmp_path):
    first = task.run(train_args(preproc, str(tmp_path / "a"), "--epochs", "4", *SMALL))
    second = task.run(train_args(preproc, str(tmp_path / "b"), "--epochs", "4", *SMALL))
    rows, cols = load_factors(tmp_path / "a")
    assert rows.shape == (NUSERS, 6) and cols.shape == (NITEMS, 6)
    assert rows.dtype == cols.dtype == np.float32
    for got, want in zip(load_factors(tmp_path / "b"), (rows, cols)):
        np.testing.assert_array_equal(got, want)
    losses = first["loss_history"]
    assert losses == second["loss_history"] and len(losses) == 4
    assert all(b <= a for a, b in zip(losses, losses[1:]))
    model = json.load(open(tmp_path / "a" / "model.json"))
    assert (model["nusers"], model["nitems"], model["n_embeds"]) == (NUSERS, NITEMS, 6)
    assert model["epochs_completed"] == 4 and model["preproc_dir"] == preproc
    assert model["hyperparameters"]["regularization"] > 0
    saved = json.load(open(tmp_path / "a" / "metrics.json"))
    for name in ("wals", "popularity"):
        assert set(saved[name]) >= {"precision@10", "recall@10", "map@10", "ndcg@10",
                                    "coverage@10", "rmse"}
        assert 0 <= saved[name]["ndcg@10"] <= 1
    assert saved["heldout_interactions"] == first["heldout_interactions"] > 0
    for phase in ("eval", "full"):
        assert any(name.startswith("events.out.tfevents")
                   for name in os.listdir(tmp_path / "a" / "logs" / phase))
    different_seed = task.run(train_args(preproc, str(tmp_path / "c"), "--epochs", "4",
                                         "--seed", "7", *SMALL))
    assert different_seed["loss_history"] != losses


def test_existing_model_dir_rules(preproc, tmp_path):
    model_dir = str(tmp_path / "m")
    task.run(train_args(preproc, model_dir, "--epochs", "2", *SMALL))
    again = task.run(train_args(preproc, model_dir, "--epochs", "2", *SMALL))
    assert again["resumed"] is True
    with pytest.raises(ValueError, match="different settings \\(regularization\\).*--overwrite"):
        task.run(train_args(preproc, model_dir, "--epochs", "2", "--regularization", "7", *SMALL))
    fresh = task.run(train_args(preproc, model_dir, "--epochs", "2", "--regularization", "7",
                                "--overwrite", *SMALL))
    assert fresh["resumed"] is False
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("not a model")
    with pytest.raises(ValueError, match="no run_config.json"):
        task.run(train_args(preproc, str(stranger), *SMALL))


def test_served_factors_are_refit_on_all_interactions(preproc, tmp_path):
    """eval_fraction > 0: metrics from the split model, factors from a refit on everything."""
    refit = task.run(train_args(preproc, str(tmp_path / "refit"), "--epochs", "4", *SMALL))
    split = task.run(train_args(preproc, str(tmp_path / "split"), "--epochs", "4",
                                "--no_refit_full", *SMALL))
    everything = task.run(train_args(preproc, str(tmp_path / "all"), "--epochs", "4",
                                     "--eval_fraction", "0", *SMALL))
    # the written factors are those of a model that saw every interaction ...
    for got, want in zip(load_factors(tmp_path / "refit"), load_factors(tmp_path / "all")):
        np.testing.assert_array_equal(got, want)
    # ... not the split model's, which --no_refit_full serves
    assert not np.array_equal(load_factors(tmp_path / "refit")[0],
                              load_factors(tmp_path / "split")[0])
    assert refit["loss_history"] == everything["loss_history"] != split["loss_history"]
    # metrics come from the split model either way
    assert refit["metrics"]["wals"] == split["metrics"]["wals"]
    assert everything["metrics"] is None and not (tmp_path / "all" / "metrics.json").exists()
    model = json.load(open(tmp_path / "refit" / "model.json"))
    assert model["served_phase"] == "full" and model["trained_on"] == "all interactions"
    assert model["metrics_from"] == "eval" and model["hyperparameters"]["refit_full"] is True
    held = refit["heldout_interactions"]
    assert model["phases"]["eval"]["train_interactions"] == model["train_interactions"] - held
    assert model["train_interactions"] == everything["train_interactions"] > held > 0
    split_model = json.load(open(tmp_path / "split" / "model.json"))
    assert split_model["served_phase"] == "eval" and set(split_model["phases"]) == {"eval"}
    assert split_model["train_interactions"] == model["train_interactions"] - held
    assert sorted(os.listdir(tmp_path / "refit" / "checkpoints")) == ["eval", "full"]


@pytest.mark.parametrize("phase", ["eval", "full"])
def test_resume_after_kill_matches_uninterrupted_run(preproc, tmp_path, phase):
    flags = ["--epochs", "30", "--checkpoint_seconds", "0", *SMALL]
    killed_dir = str(tmp_path / "killed")
    command = [sys.executable, "-m", "trainer.task", "--input_dir", preproc,
               "--output_dir", killed_dir, *flags]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    # a model is trained in a scratch folder beside its model dir, published only when complete
    state_glob = str(tmp_path / "_tmp_train_*" / "checkpoints" / phase / "checkpoint")
    deadline = time.time() + 120
    try:
        while time.time() < deadline and process.poll() is None:
            states = glob.glob(state_glob)
            latest = re.search(r'^model_checkpoint_path: "ckpt-(\d+)"',
                               open(states[0]).read() if states else "", re.M)
            if latest and int(latest.group(1)) >= 2:   # killed mid-phase, after its epoch 2
                break
            time.sleep(0.01)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL, "trainer finished before it could be killed"
    assert not os.path.exists(killed_dir)  # nothing half-trained is ever in the model dir

    resumed = task.run(train_args(preproc, killed_dir, *flags))
    assert resumed["resumed"] is True
    uninterrupted = task.run(train_args(preproc, str(tmp_path / "straight"), *flags))
    for got, want in zip(load_factors(killed_dir), load_factors(tmp_path / "straight")):
        np.testing.assert_array_equal(got, want)
    assert resumed["loss_history"] == uninterrupted["loss_history"]
    assert resumed["metrics"] == uninterrupted["metrics"]
    assert not glob.glob(str(tmp_path / "_tmp_train_*"))  # published, scratch gone
    killed_model = json.load(open(os.path.join(killed_dir, "model.json")))
    straight_model = json.load(open(tmp_path / "straight" / "model.json"))
    for name in ("eval", "full"):
        assert (killed_model["phases"][name]["loss_history"]
                == straight_model["phases"][name]["loss_history"])


@pytest.mark.parametrize("seconds,kept", [("1e9", ["ckpt-4"]), ("0", ["ckpt-3", "ckpt-4"])])
def test_checkpoints_follow_checkpoint_seconds(preproc, tmp_path, seconds, kept):
    """Fast epochs are checkpointed only at the phase's end unless --checkpoint_seconds 0."""
    task.run(train_args(preproc, str(tmp_path / "m"), "--epochs", "4", "--eval_fraction", "0",
                        "--checkpoint_seconds", seconds, *SMALL))
    state = open(tmp_path / "m" / "checkpoints" / "full" / "checkpoint").read()
    assert re.findall(r'^all_model_checkpoint_paths: "(ckpt-\d+)"', state, re.M) == kept


def test_eval_phase_records_its_heldout_curve_and_the_report_plots_it(preproc, tmp_path):
    """model.json keeps the eval phase's held-out NDCG after each epoch; report.html plots it."""
    from pipeline import report
    from pipeline.report.figures import figures
    task.run(train_args(preproc, str(tmp_path / "model"), "--epochs", "3", *SMALL))
    model = json.load(open(tmp_path / "model" / "model.json"))
    curve = model["phases"]["eval"]["heldout_ndcg"]
    assert len(curve) == 3 and all(0 <= value <= 1 for value in curve)
    assert "heldout_ndcg" not in model["phases"]["full"]
    run = report.collect_run(str(tmp_path))
    assert "Held-out NDCG per epoch" in figures(run)
