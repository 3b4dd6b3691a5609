"""Fold-in of unseen visitors: the SavedModel's `fold_in` signature and batch fold-in, both
against a dense closed-form least-squares solution written out here."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from batch_predict import fold_in as batch_fold_in
from batch_predict.run import run as predict
from predict_fixtures import predict_args
from trainer import task
from factorization.objective import Objective
from trainer_fixtures import random_matrix, train_args, write_preproc

NUSERS, NITEMS, K = 30, 14, 4
OBJECTIVES = {
    "default": [],
    "frequency-binary-linear": ["--reg_scaling", "frequency", "--regularization", "0.01",
                                "--rating_target", "binary", "--target_scale", "5",
                                "--col_weights", "linear", "--feature_wt_factor", "3"],
}


def trained_model(tmp_path, objective_flags, exclude=None):
    users, items, ratings = random_matrix(NUSERS, NITEMS, 0.3, seed=4)
    preproc = write_preproc(str(tmp_path / "preproc"), users, items, ratings, NUSERS, NITEMS)
    model = str(tmp_path / "model")
    task.run(train_args(preproc, model, "--n_embeds", str(K), "--epochs", "3",
                        "--eval_fraction", "0", *objective_flags))
    extra = {}
    if exclude:
        path = tmp_path / "exclude.txt"
        path.write_text("".join(f"item{j}\n" for j in exclude))
        extra["exclude_items"] = str(path)
    summary = predict(predict_args(preproc, model, str(tmp_path / "predictions"), top_k=5,
                                   outputs=["export"], **extra), [])
    return model, summary["export_dir"], (users, items, ratings)


def dense_fold_in(model_dir, given_items, ratings_of_given, item_counts):
    """u = (w0·VᵀV + λ_u I + Σ c_j v_j v_jᵀ)⁻¹ Σ (w0 + c_j) a_j v_j, in float64."""
    info = json.load(open(os.path.join(model_dir, "model.json")))
    objective = Objective.from_settings(info["hyperparameters"])
    v = np.load(os.path.join(model_dir, "col_factors.npy")).astype(np.float64)
    targets, weights = objective.targets(np.asarray(ratings_of_given, np.float32),
                                         objective.item_weights(item_counts)[given_items])
    reg = objective.regularization
    if objective.reg_scaling == "frequency":
        reg *= len(given_items) + objective.unobserved_weight * len(v)
    given = v[given_items]
    lhs = (objective.unobserved_weight * v.T @ v + reg * np.eye(v.shape[1])
           + given.T @ (weights[:, None] * given))
    rhs = given.T @ ((objective.unobserved_weight + weights) * targets)
    return np.linalg.solve(lhs, rhs), v, info


def top_k(scores, excluded, k):
    scores = scores.copy()
    scores[list(excluded)] = -np.inf
    order = np.argsort(-scores, kind="stable")[:k]
    return [j for j in order if np.isfinite(scores[j])], scores


@pytest.mark.parametrize("objective", OBJECTIVES, ids=list(OBJECTIVES))
def test_fold_in_signature_matches_dense_closed_form(tmp_path, objective):
    model, export_dir, (users, items, _) = trained_model(tmp_path, OBJECTIVES[objective])
    counts = np.bincount(items, minlength=NITEMS)
    fold_in = tf.saved_model.load(export_dir).signatures["fold_in"]
    queries = [["item3", "item7", "", ""],                 # padded
               ["item5", "not-in-catalog", "item5", "item1"],  # unknown ignored, repeat once
               ["", "", "", ""],                           # nothing known: popularity
               ["item0", "item2", "item4", "item6"]]
    out = fold_in(contentIds=tf.constant(queries))
    assert set(out) == {"contentId", "score"}
    assert out["contentId"].shape == (4, 5) and out["score"].dtype == tf.float32
    for row, query in enumerate(queries):
        given = sorted({int(c[4:]) for c in query if c.startswith("item")})
        got = [c.decode() for c in out["contentId"][row].numpy()]
        assert not set(got) & {f"item{j}" for j in given}           # own items never returned
        if not given:
            popular = sorted(range(NITEMS), key=lambda j: (-counts[j], j))[:5]
            assert got == [f"item{j}" for j in popular]
            continue
        info = json.load(open(os.path.join(model, "model.json")))
        u, v, _ = dense_fold_in(model, given, [info["fold_in_rating"]] * len(given), counts)
        want, scores = top_k(v @ u, given, 5)
        assert got == [f"item{j}" for j in want], (objective, row)
        np.testing.assert_allclose(out["score"][row].numpy(), scores[want], rtol=1e-3, atol=1e-4)


def test_fold_in_signature_applies_item_filters_and_keeps_k(tmp_path):
    _, export_dir, _ = trained_model(tmp_path, [], exclude=[0, 1, 2, 3])
    out = tf.saved_model.load(export_dir).signatures["fold_in"](
        contentIds=tf.constant([["item5", "item9"], ["", ""]]))
    for row, given in zip(out["contentId"].numpy(), ({"item5", "item9"}, set())):
        got = [c.decode() for c in row]
        assert not set(got) & given
        assert len([c for c in got if c]) == 5                     # 8+ admissible items remain
        assert not set(got) & {"item0", "item1", "item2", "item3"}


def read_lines(folder):
    lines = {}
    for name in sorted(os.listdir(folder)):
        if name.startswith("batch_pred-"):
            for line in open(os.path.join(folder, name)):
                visitor, _, items = line.rstrip("\n").partition("\t")
                lines[visitor] = items.split(",") if items else []
    return lines


def test_batch_fold_in_covers_exactly_new_and_changed_visitors(tmp_path):
    model, _, (users, items, ratings) = trained_model(tmp_path, OBJECTIVES["default"])
    # Day 2: a new vocabulary order; visitor0 unchanged, visitor1 read one more item, visitor2
    # read an item the model never saw (no change it can use), two new visitors, one of whom
    # read only unknown items; everyone else is absent today.
    day2 = {"visitor0": [(f"item{j}", r) for j, r in zip(items[users == 0], ratings[users == 0])],
            "visitor1": [(f"item{j}", r) for j, r in zip(items[users == 1], ratings[users == 1])],
            "visitor2": [(f"item{j}", r) for j, r in zip(items[users == 2], ratings[users == 2])],
            "visitor3": [(f"item{items[users == 3][0]}", 0.8)],   # a short window, one new item
            "visitor4": [(f"item{items[users == 4][0]}", 0.8)],   # a short window, nothing new
            "newcomer": [("item3", 0.5), ("item8", 0.2)],
            "stranger": [("brand-new-item", 0.7)]}
    extra = next(j for j in range(NITEMS) if j not in set(items[users == 1]))
    day2["visitor1"].append((f"item{extra}", 0.9))
    day2["visitor2"].append(("brand-new-item", 0.4))
    new_for_3 = next(j for j in range(NITEMS) if j not in set(items[users == 3]))
    day2["visitor3"].append((f"item{new_for_3}", 0.6))
    vocab_users = sorted(day2, reverse=True)
    vocab_items = ["brand-new-item"] + [f"item{j}" for j in reversed(range(NITEMS))]
    rows = [(vocab_users.index(v), vocab_items.index(i), r) for v, pairs in day2.items()
            for i, r in pairs]
    u2, i2, r2 = (np.array(x) for x in zip(*rows))
    preproc2 = write_preproc(str(tmp_path / "day2"), u2, i2, r2, len(vocab_users),
                             len(vocab_items), user_ids=vocab_users, item_ids=vocab_items)
    out_dir = str(tmp_path / "fold_in")
    assert batch_fold_in.main(["--model_dir", model, "--preproc_dir", preproc2,
                               "--output_dir", out_dir, "--top_k", "4"]) == 0
    manifest = json.load(open(os.path.join(out_dir, "manifest.json")))
    assert manifest["fold_in"] == {"visitors": 7, "new": 2, "changed": 2, "unchanged": 3,
                                   "folded_in": 4, "interactions": len(rows),
                                   "on_unknown_items": 2}
    lines = read_lines(out_dir)
    assert set(lines) == {"visitor1", "visitor3", "newcomer", "stranger"}
    counts = np.bincount(items, minlength=NITEMS)
    popular = sorted(range(NITEMS), key=lambda j: (-counts[j], j))[:4]
    assert lines["stranger"] == [f"item{j}" for j in popular]       # nothing known: popularity
    for visitor in ("visitor1", "visitor3", "newcomer"):
        # solved on what the model trained them on plus today's items (today's rating wins)
        entries = {}
        if visitor.startswith("visitor"):
            mine = users == int(visitor[7:])
            entries = {int(j): float(r) for j, r in zip(items[mine], ratings[mine])}
        entries.update({int(i[4:]): float(r) for i, r in day2[visitor]})
        given = sorted(entries)
        u, v, _ = dense_fold_in(model, given, [entries[j] for j in given], counts)
        want, _ = top_k(v @ u, given, 4)
        assert lines[visitor] == [f"item{j}" for j in want], visitor


def test_batch_fold_in_with_nobody_new_publishes_an_empty_result(tmp_path):
    model, _, (users, items, ratings) = trained_model(tmp_path, OBJECTIVES["default"])
    out_dir = str(tmp_path / "fold_in")
    assert batch_fold_in.main(["--model_dir", model, "--preproc_dir", str(tmp_path / "preproc"),
                               "--output_dir", out_dir]) == 0
    manifest = json.load(open(os.path.join(out_dir, "manifest.json")))
    assert manifest["fold_in"]["folded_in"] == 0 and manifest["fold_in"]["unchanged"] == NUSERS
    assert read_lines(out_dir) == {}


def test_batch_fold_in_refuses_a_folder_that_is_not_a_model(tmp_path):
    users, items, ratings = random_matrix(NUSERS, NITEMS, 0.3, seed=4)
    preproc = write_preproc(str(tmp_path / "preproc"), users, items, ratings, NUSERS, NITEMS)
    assert batch_fold_in.main(["--model_dir", str(tmp_path / "nothing"), "--preproc_dir", preproc,
                               "--output_dir", str(tmp_path / "out")]) == 2
    assert not os.path.exists(tmp_path / "out")
