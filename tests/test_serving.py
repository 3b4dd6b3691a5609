"""The exported SavedModel, loaded in a fresh Python process, answers like batch_pred-*."""
import json
import os
import subprocess
import sys

import numpy as np

from batch_predict.run import run
from predict_fixtures import make_fixture, predict_args, read_topk

CALL_SIGNATURE = """
import json, sys
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
serve = model.signatures["serving_default"]
out = serve(visitorId=tf.constant(json.loads(sys.argv[2])))
print(json.dumps({"contentId": [[c.decode() for c in row] for row in out["contentId"].numpy()],
                  "score": out["score"].numpy().tolist(), "known": out["known"].numpy().tolist(),
                  "inputs": list(serve.structured_input_signature[1])}))
"""


def test_saved_model_round_trip_in_fresh_process(tmp_path):
    rng = np.random.default_rng(3)
    rows = rng.standard_normal((12, 3)).astype(np.float32)
    rows[5] = 0  # a user without training data: scored by popularity
    seen = {u: sorted(rng.choice(8, size=u % 4, replace=False).tolist()) for u in range(12)}
    seen[7] = list(range(8))  # has every item: nothing left to recommend
    preproc, model, users, items = make_fixture(tmp_path, seen, rows,
                                                rng.standard_normal((8, 3)))
    summary = run(predict_args(preproc, model, str(tmp_path / "predictions"), top_k=5,
                               outputs=["export"]), [])
    export_dir = summary["export_dir"]
    assert export_dir == os.path.join(model, "export", "1")
    expected = read_topk(str(tmp_path / "predictions"))

    queries = users + ["never-seen-visitor"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", CALL_SIGNATURE, export_dir, json.dumps(queries)],
                          capture_output=True, text=True, timeout=240, env=env, check=True)
    answer = json.loads(done.stdout.strip().splitlines()[-1])

    assert answer["inputs"] == ["visitorId"]
    assert answer["known"] == [True] * len(users) + [False]
    for user, content_ids, scores in zip(users, answer["contentId"], answer["score"]):
        assert [c for c in content_ids if c] == expected[user], user
        assert scores == sorted(scores, reverse=True) or not all(content_ids)
    assert answer["contentId"][7] == [""] * 5 and answer["score"][7] == [0.0] * 5
    counts = np.bincount([j for its in seen.values() for j in its], minlength=8)
    popular = [items[j] for j in sorted(range(8), key=lambda j: (-counts[j], j))]
    assert answer["contentId"][-1] == popular[:5]  # unknown visitor: most popular items
    assert answer["score"][-1] == sorted(counts.tolist(), reverse=True)[:5]
    unseen_popular = [i for i in popular if i not in {items[j] for j in seen[5]}]
    assert expected[users[5]] == unseen_popular[:5]  # zero-factor user: popular unseen items
