"""--warm_start_from: factors carried over by original id through a changed vocabulary."""
import json
import os

import numpy as np
import pytest

from trainer import task
from factorization import wals
from trainer_fixtures import random_matrix, train_args, write_preproc

NUSERS, NITEMS, K = 24, 12, 3


def day_one(tmp_path):
    users, items, ratings = random_matrix(NUSERS, NITEMS, 0.35, seed=2)
    preproc = write_preproc(str(tmp_path / "day1"), users, items, ratings, NUSERS, NITEMS)
    model = str(tmp_path / "model1")
    task.run(train_args(preproc, model, "--n_embeds", str(K), "--epochs", "4",
                        "--eval_fraction", "0"))
    return model, (users, items, ratings)


def day_two(tmp_path, users, items, ratings):
    """Same interactions minus visitor0 and item0, plus a new visitor and a new item, with both
    vocabularies reordered: day-2 position p holds day-1 id vocab[p]."""
    vocab_users = ["visitor-new"] + [f"visitor{i}" for i in reversed(range(1, NUSERS))]
    vocab_items = [f"item{j}" for j in reversed(range(1, NITEMS))] + ["item-new"]
    keep = (users != 0) & (items != 0)
    u2 = np.array([vocab_users.index(f"visitor{u}") for u in users[keep]] + [0, 0])
    i2 = np.array([vocab_items.index(f"item{j}") for j in items[keep]]
                  + [vocab_items.index("item-new"), vocab_items.index("item5")])
    r2 = np.concatenate([ratings[keep], [0.6, 0.3]])
    preproc = write_preproc(str(tmp_path / "day2"), u2, i2, r2, len(vocab_users),
                            len(vocab_items), user_ids=vocab_users, item_ids=vocab_items)
    return preproc, vocab_users, vocab_items


def test_warm_start_maps_factors_by_original_id(tmp_path):
    model1, (users, items, ratings) = day_one(tmp_path)
    preproc2, vocab_users, vocab_items = day_two(tmp_path, users, items, ratings)
    rows1 = np.load(os.path.join(model1, "row_factors.npy"))
    cols1 = np.load(os.path.join(model1, "col_factors.npy"))
    from factorization import warm_start
    (rows, cols), record = warm_start.initial_factors(model1, vocab_users, vocab_items, K, 42, 1.0)
    fresh = wals.initial_factors(len(vocab_items), K, 42, 1).numpy()
    for position, visitor in enumerate(vocab_users):
        want = rows1[int(visitor[7:])] if visitor != "visitor-new" else np.zeros(K)
        np.testing.assert_array_equal(rows[position], want)
    for position, item in enumerate(vocab_items):
        want = cols1[int(item[4:])] if item != "item-new" else fresh[position]
        np.testing.assert_array_equal(cols[position], want)
    assert record["users_matched"] == NUSERS - 1 and record["items_matched"] == NITEMS - 1

    model2 = str(tmp_path / "model2")
    task.run(train_args(preproc2, model2, "--n_embeds", str(K), "--epochs", "1",
                        "--eval_fraction", "0", "--warm_start_from", model1))
    info = json.load(open(os.path.join(model2, "model.json")))
    assert info["warm_start"]["items_matched"] == NITEMS - 1
    assert info["hyperparameters"]["warm_start_from"] == model1
    # the model dir carries its own vocabularies, so day 3 can warm start from it
    assert open(os.path.join(model2, "vocab_items")).read().split() == vocab_items


def test_warm_start_reaches_lower_loss_after_one_epoch(tmp_path):
    model1, (users, items, ratings) = day_one(tmp_path)
    preproc2, _, _ = day_two(tmp_path, users, items, ratings)
    losses = {}
    for name, extra in (("cold", []), ("warm", ["--warm_start_from", model1])):
        summary = task.run(train_args(preproc2, str(tmp_path / name), "--n_embeds", str(K),
                                      "--epochs", "1", "--eval_fraction", "0", *extra))
        losses[name] = summary["loss_history"][0]
    assert losses["warm"] < losses["cold"]


def test_warm_start_refuses_another_k_and_a_missing_model(tmp_path):
    model1, (users, items, ratings) = day_one(tmp_path)
    preproc2, _, _ = day_two(tmp_path, users, items, ratings)
    with pytest.raises(ValueError, match="same k"):
        task.run(train_args(preproc2, str(tmp_path / "m"), "--n_embeds", "5",
                            "--warm_start_from", model1))
    with pytest.raises(ValueError, match="not a trained model dir"):
        task.run(train_args(preproc2, str(tmp_path / "m"), "--warm_start_from",
                            str(tmp_path / "nowhere")))
    assert not os.path.exists(tmp_path / "m" / "model.json")


def test_optional_warm_start_starts_cold_when_there_is_no_model(tmp_path, caplog):
    users, items, ratings = random_matrix(NUSERS, NITEMS, 0.35, seed=2)
    preproc = write_preproc(str(tmp_path / "day1"), users, items, ratings, NUSERS, NITEMS)
    task.run(train_args(preproc, str(tmp_path / "m"), "--n_embeds", str(K), "--epochs", "1",
                        "--eval_fraction", "0", "--warm_start_from", str(tmp_path / "none"),
                        "--warm_start_optional"))
    info = json.load(open(tmp_path / "m" / "model.json"))
    assert info["warm_start"] is None and "starting cold" in caplog.text


def test_the_eval_phase_starts_cold_so_metrics_stay_honest(tmp_path):
    model1, (users, items, ratings) = day_one(tmp_path)
    preproc2, _, _ = day_two(tmp_path, users, items, ratings)
    found = {}
    for name, extra in (("cold", []), ("warm", ["--warm_start_from", model1])):
        task.run(train_args(preproc2, str(tmp_path / name), "--n_embeds", str(K), "--epochs", "1",
                            "--eval_fraction", "0.3", *extra))
        found[name] = (json.load(open(tmp_path / name / "metrics.json"))["wals"],
                       np.load(tmp_path / name / "col_factors.npy"))
    assert found["warm"][0] == found["cold"][0]                   # same eval-phase metrics
    assert not np.allclose(found["warm"][1], found["cold"][1])    # the served factors differ
