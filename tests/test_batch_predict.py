"""batch_predict in-process path: recommendations, targeting, similar items, exports, bad input."""
import csv
import json
import os
import shutil

import numpy as np
import pytest

from batch_predict.artifacts import ArtifactError
from batch_predict.run import main, run
from predict_fixtures import make_fixture, predict_args, random_fixture, read_topk


def brute_force_topk(query, candidates, seen, k, exclude_self=False):
    """Reference: full score matrix (fine at test size), seen -> -inf, stable sort by -score."""
    scores = query.astype(np.float32) @ candidates.astype(np.float32).T
    result = []
    for q, row in enumerate(scores):
        banned = set(seen.get(q, [])) | ({q} if exclude_self else set())
        order = [c for c in np.argsort(-row, kind="stable") if c not in banned]
        result.append(order[:k])
    return result


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    preproc, model, users, items, seen = random_fixture(root, nusers=40, nitems=15, gz=True)
    summary = run(predict_args(preproc, model, str(root / "predictions"), mode="both",
                               top_k=6, block_size=7, write_scores=True), [])
    return root, preproc, model, users, items, seen, summary


def test_recommendations_decode_exclude_seen_and_match_brute_force(predicted):
    root, preproc, model, users, items, seen, summary = predicted
    recs = read_topk(str(root / "predictions"))
    assert sorted(recs) == sorted(users)  # one line per user, original ids restored
    rows, cols = np.load(os.path.join(model, "row_factors.npy")), np.load(
        os.path.join(model, "col_factors.npy"))
    expected = brute_force_topk(rows, cols, seen, 6)
    for u, user in enumerate(users):
        assert all(item in items for item in recs[user])
        assert not set(recs[user]) & {items[j] for j in seen[u]}, "seen item recommended"
        assert recs[user] == [items[j] for j in expected[u]]
    assert summary["rows"]["batch_pred"] == len(users)
    assert summary["first_lines"][0] == f"{users[0]}\t" + ",".join(recs[users[0]])


def test_scores_jsonl_is_sorted_and_matches_lines(predicted):
    root = predicted[0]
    recs = read_topk(str(root / "predictions"))
    path = root / "predictions" / "batch_pred_scores-00000-of-00001.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == len(recs)
    for record in records:
        assert record["ids"] == recs[record["id"]]
        assert record["scores"] == sorted(record["scores"], reverse=True)


def test_users_for_item_targets_unseen_users(predicted):
    root, preproc, model, users, items, seen, _ = predicted
    targets = read_topk(str(root / "predictions"), "users_for_item")
    assert sorted(targets) == sorted(items)
    rows, cols = np.load(os.path.join(model, "row_factors.npy")), np.load(
        os.path.join(model, "col_factors.npy"))
    seen_by_item = {}
    for u, its in seen.items():
        for j in its:
            seen_by_item.setdefault(j, []).append(u)
    expected = brute_force_topk(cols, rows, seen_by_item, 6)
    for j, item in enumerate(items):
        assert targets[item] == [users[u] for u in expected[j]]


def test_similar_items_never_list_themselves_and_follow_cosine(predicted):
    root, preproc, model, users, items, seen, _ = predicted
    similar = read_topk(str(root / "predictions"), "similar_items")
    cols = np.load(os.path.join(model, "col_factors.npy"))
    unit = cols / np.linalg.norm(cols, axis=1, keepdims=True)
    expected = brute_force_topk(unit, unit, {}, 10, exclude_self=True)
    for j, item in enumerate(items):
        assert item not in similar[item]
        assert similar[item] == [items[i] for i in expected[j]]


def test_similar_items_scores_are_written_without_write_scores(tmp_path):
    """similar_items_scores-*.jsonl always accompanies similar_items-*: same ids in the same
    order, scores non-increasing and equal to the cosine of the item factors; the recommendation
    scores stay behind --write_scores."""
    preproc, model, users, items, seen = random_fixture(tmp_path, nusers=12, nitems=9)
    out = tmp_path / "predictions"
    run(predict_args(preproc, model, str(out), outputs=["similar_items"], n_similar=4), [])
    similar = read_topk(str(out), "similar_items")
    path = out / "similar_items_scores-00000-of-00001.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["id"] for r in records] == items and all(similar[i] for i in items)
    cols = np.load(os.path.join(model, "col_factors.npy"))
    unit = cols / np.linalg.norm(cols, axis=1, keepdims=True)
    for record in records:
        assert record["ids"] == similar[record["id"]]
        assert record["scores"] == sorted(record["scores"], reverse=True)
        query = unit[items.index(record["id"])]
        cosines = [float(unit[items.index(other)] @ query) for other in record["ids"]]
        np.testing.assert_allclose(record["scores"], cosines, atol=1e-5)
    assert not list(out.glob("batch_pred_scores-*"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert path.name in manifest["files"] and "batch_pred_scores" not in str(manifest["files"])


def test_embeddings_factors_csv_and_popular_items(predicted):
    root, preproc, model, users, items, seen, _ = predicted
    out = root / "predictions"
    cols = np.load(os.path.join(model, "col_factors.npy"))
    lines = (out / "item_embeddings-00000-of-00001.json").read_text().splitlines()
    embeddings = {r["id"]: r["embedding"] for r in map(json.loads, lines)}
    assert list(embeddings) == items
    np.testing.assert_array_equal(np.array([embeddings[i] for i in items], np.float32), cols)
    rows = list(csv.reader((out / "user_factors.csv").open()))
    assert rows[0] == ["id", "f0", "f1", "f2", "f3"] and [r[0] for r in rows[1:]] == users
    np.testing.assert_array_equal(np.array([r[1:] for r in rows[1:]], np.float32),
                                  np.load(os.path.join(model, "row_factors.npy")))
    counts = np.bincount([j for its in seen.values() for j in its], minlength=len(items))
    popular = [line.split("\t") for line in (out / "popular_items.txt").read_text().splitlines()]
    order = sorted(range(len(items)), key=lambda j: (-counts[j], j))
    assert popular == [[items[j], str(counts[j])] for j in order]


def test_ties_lower_id_first_edge_cases_and_determinism(tmp_path):
    # Every item has the same factor: all scores tie, so the order is by itemId.
    # user 0: saw items 1 and 3; user 1: saw everything; user 2: no record (and a zero factor)
    # -> most popular unseen items; k=10 > catalog of 5.
    seen = {0: [1, 3], 1: [0, 1, 2, 3, 4], 3: [4], 4: [4, 2]}
    rows = np.array([[1, 1], [2, 0], [0, 0], [1, 0], [0, 1]], np.float32)
    cols = np.ones((5, 2), np.float32)
    preproc, model, users, items = make_fixture(tmp_path, seen, rows, cols)
    outputs = []
    for name in ("a", "b"):
        run(predict_args(preproc, model, str(tmp_path / name), outputs=[]), [])
        outputs.append((tmp_path / name / "batch_pred-00000-of-00001").read_text())
    assert outputs[0] == outputs[1]
    recs = read_topk(str(tmp_path / "a"))
    assert recs[users[0]] == [items[0], items[2], items[4]]
    assert recs[users[1]] == []
    assert f"{users[1]}\t\n" in outputs[0]  # the line exists, with no items
    # popularity: item 4 seen by 3 users, items 1, 2, 3 by 2 (lower id first), item 0 by 1
    assert recs[users[2]] == [items[4], items[1], items[2], items[3], items[0]]
    assert recs[users[3]] == [items[0], items[1], items[2], items[3]]


def test_mismatched_model_fails_before_writing(tmp_path):
    preproc, model, users, items, seen = random_fixture(tmp_path, nusers=10, nitems=6)
    np.save(os.path.join(model, "col_factors.npy"), np.ones((7, 4), np.float32))
    with pytest.raises(ArtifactError, match="nitems disagree"):
        run(predict_args(preproc, model, str(tmp_path / "predictions")), [])
    assert not (tmp_path / "predictions").exists()
    assert main(["--preproc_dir", preproc, "--model_dir", model,
                 "--output_dir", str(tmp_path / "predictions")]) == 2


def test_out_of_range_record_and_moved_preproc_are_refused(tmp_path):
    seen = {0: [0, 9]}  # item 9 does not exist in a 3-item model
    preproc, model, users, items = make_fixture(tmp_path / "a", seen, np.ones((2, 2)),
                                                np.ones((3, 2)))
    with pytest.raises(ArtifactError, match="outside"):
        run(predict_args(preproc, model, str(tmp_path / "p1")), [])
    assert not (tmp_path / "p1").exists()
    other, _, _, _ = make_fixture(tmp_path / "b", {0: [0]}, np.ones((2, 2)), np.ones((3, 2)))
    with pytest.raises(ArtifactError, match="trained on"):
        run(predict_args(other, model, str(tmp_path / "p2")), [])
    run(predict_args(other, model, str(tmp_path / "p2"), ignore_preproc_path=True,
                     outputs=[]), [])
    assert read_topk(str(tmp_path / "p2"))["visitor-3"] == ["article/16", "article/27"]


def test_existing_outputs_need_overwrite(tmp_path):
    preproc, model, users, items, seen = random_fixture(tmp_path, nusers=8, nitems=5)
    out = str(tmp_path / "predictions")
    run(predict_args(preproc, model, out, outputs=["popular_items", "similar_items"], top_k=2), [])
    assert any(n.startswith("similar_items_scores-") for n in os.listdir(out))
    with pytest.raises(ArtifactError, match="--overwrite"):
        run(predict_args(preproc, model, out, outputs=[]), [])
    os.makedirs(os.path.join(tmp_path, "_tmp_predict_0dead", "x"))  # a failed run's scratch
    run(predict_args(preproc, model, out, outputs=[], top_k=3, overwrite=True), [])
    assert sorted(os.listdir(out)) == ["batch_pred-00000-of-00001", "manifest.json"]  # old extras replaced
    assert not os.path.exists(os.path.join(tmp_path, "_tmp_predict_0dead"))
    assert max(len(v) for v in read_topk(out).values()) == 3


def _stamp_run_id(preproc: str, model: str, run_id: str) -> None:
    """What the real stages record: metadata.json run_id, copied into model.json by the trainer."""
    for path, key in ((os.path.join(preproc, "metadata.json"), "run_id"),
                      (os.path.join(model, "model.json"), "preproc_run_id")):
        with open(path) as f:
            payload = json.load(f)
        payload[key] = run_id
        with open(path, "w") as f:
            json.dump(payload, f)


def test_model_of_another_preprocess_run_is_refused_and_a_copied_run_works(tmp_path):
    factors = (np.ones((2, 2)), np.ones((3, 2)))
    preproc_a, model_a, _, _ = make_fixture(tmp_path / "a", {0: [0]}, *factors)
    preproc_b, model_b, _, _ = make_fixture(tmp_path / "b", {1: [2]}, *factors)
    _stamp_run_id(preproc_a, model_a, "run-a")
    _stamp_run_id(preproc_b, model_b, "run-b")
    for ignore in (False, True):  # same sizes, other data: never meaningful
        with pytest.raises(ArtifactError, match="another preprocess run"):
            run(predict_args(preproc_b, model_a, str(tmp_path / f"p{ignore}"),
                             ignore_preproc_path=ignore), [])
    shutil.copytree(tmp_path / "a", tmp_path / "copy")  # e.g. a run dir copied to another disk
    out = str(tmp_path / "p-copy")
    run(predict_args(str(tmp_path / "copy" / "preproc"), str(tmp_path / "copy" / "model"), out,
                     outputs=[]), [])
    assert read_topk(out)


@pytest.mark.parametrize("ids", [["a", "b-2", "visitor 3"], ["a", 'say "hi"', "c"]],
                         ids=["arrow-writer", "quoted-id"])
def test_factor_csv_reads_back_the_ids_and_float32_values_exactly(tmp_path, ids):
    from batch_predict import outputs as out
    factors = np.array([[0.1, -2.5e-05, 3e8], [1.0, 0.0, -1e-07], [7.25, 1 / 3, -0.5]], np.float32)
    path = str(tmp_path / "f.csv")
    assert out.write_factors_csv(path, ids, factors) == 3
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "f0", "f1", "f2"] and [r[0] for r in rows[1:]] == ids
    np.testing.assert_array_equal(np.array([r[1:] for r in rows[1:]], np.float32), factors)
