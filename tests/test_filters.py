"""--exclude_items / --include_items: a filtered item is never recommended, never listed as
similar, gets no targeting list and never comes out of the SavedModel; lists stay k long while
enough items remain; both engines agree."""
import os

import pytest
import tensorflow as tf

from batch_predict.run import run
from pipeline import run as driver
from predict_fixtures import predict_args, random_fixture, read_topk


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    root = tmp_path_factory.mktemp("filters")
    preproc, model, users, items, seen = random_fixture(root, nusers=30, nitems=12)
    excluded = items[:3] + ["not-in-the-catalog"]
    (root / "exclude.txt").write_text("\n".join(excluded) + "\n\n")
    (root / "include.txt").write_text("\n".join(items[2:8]) + "\r\n")
    return root, preproc, model, users, items, seen


@pytest.mark.parametrize("engine", ["local", "beam"])
def test_excluded_items_are_never_recommended_and_lists_stay_k_long(fixture, tmp_path, engine):
    root, preproc, model, users, items, seen = fixture
    out = str(tmp_path / "predictions")
    run(predict_args(preproc, model, out, engine=engine, mode="both", top_k=4,
                     exclude_items=str(root / "exclude.txt"),
                     outputs=["similar_items", "export"]), [])
    gone = set(items[:3])
    for visitor, recommended in read_topk(out).items():
        assert not gone & set(recommended), visitor
        assert len(recommended) == 4  # 12 items - 3 excluded - at most 4 seen >= 4
    for item, similar in read_topk(out, "similar_items").items():
        assert not gone & set(similar) and item not in similar
    targeting = read_topk(out, "users_for_item")
    assert all(targeting[item] == [] for item in gone)
    assert all(len(targeting[item]) == 4 for item in set(items) - gone)
    export = os.path.join(model, "export")
    served = tf.saved_model.load(os.path.join(export, max(os.listdir(export), key=int)))
    answer = served.signatures["serving_default"](visitorId=tf.constant(users + ["unknown-visitor"]))
    returned = {c.decode() for row in answer["contentId"].numpy() for c in row}
    assert returned and not gone & returned and "" not in returned


def test_include_items_limits_recommendations_to_the_list(fixture, tmp_path):
    root, preproc, model, users, items, seen = fixture
    out = str(tmp_path / "predictions")
    run(predict_args(preproc, model, out, top_k=10, include_items=str(root / "include.txt"),
                     exclude_items=str(root / "exclude.txt"), outputs=[]), [])
    allowed = set(items[2:8]) - set(items[:3])  # included minus excluded: items 3..7
    for user, recommended in read_topk(out).items():
        assert set(recommended) <= allowed
        user_seen = {items[i] for i in seen[users.index(user)]}
        assert len(recommended) == len(allowed - user_seen)  # everything admissible, no more


def test_a_missing_filter_file_is_a_bad_flag(tmp_path, caplog):
    code = driver.main(["--output_dir", str(tmp_path / "out"), "--exclude_items",
                        str(tmp_path / "nope.txt")])
    assert code == 2 and "--exclude_items" in caplog.text and "no such file" in caplog.text
    assert not (tmp_path / "out").exists()
