"""The Beam path (local runner) gives exactly the in-process path's outputs on the same model."""
import os

import numpy as np
import pytest

from batch_predict.artifacts import ArtifactError
from batch_predict.run import run
from predict_fixtures import make_fixture, predict_args, random_fixture, write_shards
from fs_fixtures import file_tree


def _lines(folder, prefix):
    """All lines of an output's shards, sorted (Beam does not keep row order across shards)."""
    lines = []
    for name in os.listdir(folder):
        if name.startswith(prefix + "-"):
            lines += open(os.path.join(folder, name)).read().splitlines()
    return sorted(lines)


def test_beam_engine_equals_local_engine(tmp_path):
    # 23 users in blocks of 5 (last block partial); user 22 has no items_for_user record.
    preproc, model, users, items, seen = random_fixture(tmp_path, nusers=23, nitems=9)
    seen.pop(22)
    make_fixture(tmp_path / "again", seen, np.load(os.path.join(model, "row_factors.npy")),
                 np.load(os.path.join(model, "col_factors.npy")), gz=True)
    preproc, model = str(tmp_path / "again" / "preproc"), str(tmp_path / "again" / "model")
    common = dict(mode="both", top_k=4, block_size=5, write_scores=True, outputs=[])
    local = run(predict_args(preproc, model, str(tmp_path / "local"), **common), [])
    beam = run(predict_args(preproc, model, str(tmp_path / "beam"), engine="beam", **common), [])
    assert beam["rows"] == local["rows"] == {"batch_pred": 23, "users_for_item": 9}
    for prefix in ("batch_pred", "users_for_item", "batch_pred_scores", "users_for_item_scores"):
        local_lines = _lines(tmp_path / "local", prefix)
        assert local_lines and local_lines == _lines(tmp_path / "beam", prefix), prefix
    assert not [n for n in os.listdir(tmp_path / "beam") if n.startswith((".", "rejected"))]
    assert not list(tmp_path.glob("_tmp_predict_*"))


def test_beam_engine_dead_letters_bad_records_and_publishes_nothing(tmp_path):
    preproc, model, users, items = make_fixture(tmp_path, {0: [0, 1], 1: [2]},
                                                np.ones((2, 2)), np.ones((3, 2)))
    write_shards(preproc, "items_for_user", {0: [0, 1], 1: [7]}, nshards=2, gz=False)
    with pytest.raises(ArtifactError, match=r"1 items_for_user record\(s\) do not fit"):
        run(predict_args(preproc, model, str(tmp_path / "predictions"), engine="beam",
                         outputs=[]), [])
    assert not (tmp_path / "predictions").exists()
    assert not list(tmp_path.glob("_tmp_predict_*"))  # its staged files and dead letters are gone


def test_a_refused_beam_run_leaves_predictions_and_model_exports_as_they_were(tmp_path):
    preproc, model, users, items = make_fixture(tmp_path, {0: [0, 1], 1: [2]},
                                                np.ones((2, 2)), np.ones((3, 2)))
    out = tmp_path / "predictions"
    run(predict_args(preproc, model, str(out), engine="beam", outputs=["export", "popular_items"]), [])
    manifest = (out / "manifest.json").read_text()
    assert "export_dir" in manifest and len(os.listdir(os.path.join(model, "export"))) == 1
    before, exports = file_tree(out), sorted(os.listdir(os.path.join(model, "export")))
    write_shards(preproc, "items_for_user", {0: [0, 1], 1: [7]}, nshards=2, gz=False)
    with pytest.raises(ArtifactError, match="do not fit"):
        run(predict_args(preproc, model, str(out), engine="beam", overwrite=True,
                         outputs=["export", "popular_items"]), [])
    assert file_tree(out) == before  # every file, byte for byte
    assert sorted(os.listdir(os.path.join(model, "export"))) == exports  # no new servable version
