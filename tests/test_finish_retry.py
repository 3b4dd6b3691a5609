"""The Beam stages' finishing steps under retries: Dataflow re-runs a failed bundle, so the last
step of each job may run again after it published, or after it died half way through publishing.
A retry must complete the same publish or do nothing, never fail a finished job."""
import argparse
import json
import os
import shutil

import pytest
import tensorflow_transform as tft

from batch_predict.beam_job import finish_predictions
from stagekit import publish
from pipeline.preprocess.finish import finish_stage, make_plan
from preprocess_fixtures import run_stage, write_lines
from fs_fixtures import file_tree


@pytest.fixture(scope="module")
def published_preproc(tmp_path_factory):
    """A real preproc/ written by the stage, to stage again by hand."""
    root = tmp_path_factory.mktemp("source")
    ratings = write_lines(root / "r.csv", ["user_id,item_id,rating"]
                          + [f"u{n % 9},i{n % 5},{1 + n % 4}" for n in range(60)] + ["u1,i1,bad"])
    metadata = run_stage(root / "out", "--source", "interactions", "--input", ratings)
    return str(root / "out" / "preproc"), metadata


def _stage_again(source: str, metadata: dict, output_dir: str) -> tuple[dict, dict]:
    """A staged (unpublished) copy of `source` and the plan + stats its finishing step gets."""
    args = argparse.Namespace(output_dir=output_dir, source="interactions", ga_preset="news",
                              input="r.csv", table=None, rating_scale=0.3, max_rejected_fraction=0.1)
    plan = make_plan(args, os.path.join(output_dir, "preproc"))
    shutil.copytree(source, plan["staging"], ignore=shutil.ignore_patterns("metadata.json"))
    stats = {key: metadata[key] for key in ("input_rows", "accepted_rows", "rejected_rows")}
    stats.update({"rated_rows": metadata["interactions"], "examples.items_for_user": metadata["nusers"],
                  "examples.users_for_item": metadata["nitems"], "rejected.bad_rating": 1})
    return plan, stats


def test_preprocess_finish_run_again_after_publishing_does_nothing(published_preproc, tmp_path):
    source, metadata = published_preproc
    plan, stats = _stage_again(source, metadata, str(tmp_path / "out"))
    finish_stage(None, plan, stats)
    published = file_tree(plan["preproc"])
    assert json.loads(published["metadata.json"])["run_id"] == plan["run_id"]
    finish_stage(None, plan, stats)  # the retried bundle
    assert file_tree(plan["preproc"]) == published
    assert tft.TFTransformOutput(plan["preproc"]).vocabulary_size_by_name("vocab_users") == 9
    assert sorted(os.listdir(tmp_path / "out")) == ["preproc"]  # scratch gone, nothing set aside


def test_preprocess_finish_completes_a_publish_that_died_half_way(published_preproc, tmp_path, monkeypatch):
    source, metadata = published_preproc
    out = str(tmp_path / "out")
    old_plan, stats = _stage_again(source, metadata, out)
    finish_stage(None, old_plan, stats)  # an older run, published
    plan, stats = _stage_again(source, metadata, out)
    real_exchange = publish.GFileStore.exchange_dirs

    def worker_lost(a, b):
        raise OSError("worker lost")  # just before the swap
    monkeypatch.setattr(publish.GFileStore, "exchange_dirs", staticmethod(worker_lost))
    with pytest.raises(OSError):
        finish_stage(None, plan, stats)
    assert publish.marker_run_id(plan["preproc"], "metadata.json") == old_plan["run_id"]  # old, whole
    monkeypatch.setattr(publish.GFileStore, "exchange_dirs", staticmethod(real_exchange))
    finish_stage(None, plan, stats)  # the retry
    assert publish.marker_run_id(plan["preproc"], "metadata.json") == plan["run_id"]
    assert sorted(os.listdir(out)) == ["preproc"]


def test_a_refused_finish_publishes_nothing_and_says_why(published_preproc, tmp_path):
    source, metadata = published_preproc
    plan, stats = _stage_again(source, metadata, str(tmp_path / "out"))
    stats["accepted_rows"] -= 1  # a row lost on the way: input != accepted + rejected
    with pytest.raises(Exception, match="counts do not add up"):
        finish_stage(None, plan, stats)
    assert not os.path.exists(plan["preproc"])
    refusal = json.load(open(os.path.join(plan["scratch"], publish.REFUSED)))
    assert "counts do not add up" in refusal["error"]


def test_predict_finish_run_again_after_publishing_does_nothing(tmp_path):
    staged, output_dir = tmp_path / "_tmp_predict_x", tmp_path / "predictions"
    staged.mkdir()
    (staged / "batch_pred-00000-of-00001").write_text("visitor,1\tarticle/1\n")
    plan = {"staged": str(staged), "scratch": str(tmp_path / "_tmp_predict_x_job"),
            "output_dir": str(output_dir), "run_id": "r1", "manifest": {"rows": {}}, "export": None}
    specs = [{"name": "batch_pred", "records_prefix": "items_for_user", "nrows": 1}]
    counts = {"batch_pred.scored": 1, "batch_pred.rejected": 0}
    finish_predictions(None, plan, specs, counts)
    published = file_tree(str(output_dir))
    assert json.loads(published["manifest.json"])["rows"] == {"batch_pred": 1}
    finish_predictions(None, plan, specs, counts)
    assert file_tree(str(output_dir)) == published
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions"]
