"""End to end: `python -m pipeline.run` with the real stages (local Beam runner) on a tiny
interactions file, in a subprocess as a user runs it."""
import csv
import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGE_MODULES = ("pipeline.preprocess", "trainer.task", "batch_predict.run")


def _stages_missing() -> str:
    missing = []
    for name in STAGE_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                continue  # the module is there but broken: let the run fail and show it
            missing.append(f"{name} (not written)")
            continue
        except Exception:  # broken mid-edit: do not skip, and do not break collection
            continue
        missing += [f"{name}.{fn}" for fn in ("add_args", "run") if not hasattr(module, fn)]
    return ", ".join(missing)


pytestmark = pytest.mark.skipif(bool(_stages_missing()),
                                reason=f"stage entry points not there yet: {_stages_missing()}")


@pytest.fixture(scope="module")
def ratings_file(tmp_path_factory):
    rng = np.random.default_rng(7)
    path = tmp_path_factory.mktemp("in") / "ratings.csv"
    rows = {(f"user{rng.integers(40)}", f"film{int(rng.zipf(1.6)) % 25}"): int(rng.integers(1, 6))
            for _ in range(300)}
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["user_id", "item_id", "rating", "timestamp"])
        writer.writerows([u, i, r, 0] for (u, i), r in rows.items())
    return path, rows


@pytest.fixture(scope="module")
def run(ratings_file, tmp_path_factory):
    path, rows = ratings_file
    out = tmp_path_factory.mktemp("run") / "out"
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.run", "--source", "interactions", "--input", str(path),
         "--output_dir", str(out), "--epochs", "3", "--top_k", "5"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    return result, out, rows


def test_exit_code_and_summary(run):
    result, out, rows = run
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{len({u for u, _ in rows})} users x {len({i for _, i in rows})} items" in result.stdout
    assert "loss per epoch" in result.stdout and "sample recommendations" in result.stdout
    for stage in ("preprocess", "train", "predict"):
        assert f"stage {stage} finished in" in result.stderr


def test_every_artifact_is_there(run):
    _, out, _ = run
    for path in ("preproc/metadata.json", "preproc/transform_fn", "model/model.json",
                 "model/row_factors.npy", "model/col_factors.npy", "report.html"):
        assert (out / path).exists(), path
    assert list((out / "preproc").glob("users_for_item-*")) and list((out / "preproc").glob("items_for_user-*"))
    assert list((out / "predictions").glob("batch_pred-*"))
    model = json.loads((out / "model" / "model.json").read_text())
    assert len(model["loss_history"]) == 3


def test_recommendations_use_original_ids_and_skip_seen_items(run):
    _, out, rows = run
    seen: dict[str, set] = {}
    for (user, item) in rows:
        seen.setdefault(user, set()).add(item)
    items = {i for _, i in rows}
    lines = [line for shard in sorted((out / "predictions").glob("batch_pred-*"))
             for line in shard.read_text().splitlines()]
    assert len(lines) == len(seen)
    for line in lines:
        user, recs = line.split("\t")
        recs = recs.split(",") if recs else []
        assert len(recs) == min(5, len(items) - len(seen[user]))
        assert set(recs) <= items and not set(recs) & seen[user]
