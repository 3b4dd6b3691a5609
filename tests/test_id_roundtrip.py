"""Ids read back exactly from every output, whatever they hold (property tests, hypothesis).

The rule (pipeline/sources/ga.py ID_FORBIDDEN): an id may hold anything but a comma, a TAB or a line break
(what the text outputs separate with); such ids are rejected at input with a reason. Every id the
inputs accept must then come back, character for character, from each output read the standard
way: text lines split on TAB and comma (also with str.splitlines), CSV with the csv module, JSON
lines with json.
"""
import csv
import glob
import json
import os
import tempfile

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batch_predict.run import run
from pipeline.sources import interactions
from pipeline.sources import ga
from predict_fixtures import make_fixture, predict_args

# any text, with the forbidden characters over-represented so the rule is exercised
ANY_ID = st.text(alphabet=st.one_of(st.characters(blacklist_categories=("Cs",)),
                                    st.sampled_from(list(ga.ID_FORBIDDEN) + [" ", '"', "\\"])),
                 min_size=1, max_size=12)
ACCEPTED_ID = ANY_ID.filter(lambda s: s.strip() and ga.id_separator_reason("user_id", s) is None)


def _csv_line(*fields) -> bytes:
    out = []
    for field in fields:
        out.append('"' + field.replace('"', '""') + '"' if any(c in field for c in ',"\r\n') else field)
    return ",".join(out).encode("utf-8")


@settings(max_examples=300, deadline=None)
@given(user=ANY_ID, item=ANY_ID)
def test_the_interactions_reader_accepts_exactly_the_ids_the_rule_allows(user, item):
    parse = interactions.InteractionsParser(interactions.parse_header("user_id,item_id,rating"))
    parsed = parse([_csv_line(user, item, "3")])
    expected = None
    for side, value in (("user_id", user), ("item_id", item)):
        if expected is None and not value.strip():
            expected = f"empty_{side}"
        elif expected is None and ga.id_separator_reason(side, value):
            expected = f"separator_in_{side}"
    if expected:
        assert [reason for _, reason in parsed.rejects] == [expected]
    else:
        assert parsed.rejects == []
        (row,) = parsed.rows.to_pylist()
        assert (row["visitorId"].decode("utf-8"), row["contentId"].decode("utf-8")) == (user, item)


def _text_rows(path):
    with open(path, encoding="utf-8", newline="\n") as f:
        text = f.read()
    lines = text.split("\n")[:-1]
    assert text.splitlines() == lines  # no id adds a line for readers that split more eagerly
    return [line.split("\t") for line in lines]


def _read_everything(out: str) -> dict[str, set]:
    """Every id each output mentions, read back the standard way."""
    seen: dict[str, set] = {}

    def add(name, ids):
        seen.setdefault(name, set()).update(ids)

    for prefix in ("batch_pred", "users_for_item", "similar_items"):
        for path in glob.glob(os.path.join(out, prefix + "-*")) + glob.glob(
                os.path.join(out, prefix + "_scores-*")):
            if path.endswith(".jsonl"):
                for line in open(path, encoding="utf-8"):
                    record = json.loads(line)
                    add(prefix + "_scores", [record["id"]] + record["ids"])
                continue
            for query, candidates in _text_rows(path):
                add(prefix, [query] + (candidates.split(",") if candidates else []))
    for name in ("item", "user"):
        for path in glob.glob(os.path.join(out, f"{name}_embeddings-*.json")):
            add(f"{name}_embeddings", [json.loads(line)["id"] for line in open(path, encoding="utf-8")])
        with open(os.path.join(out, f"{name}_factors.csv"), encoding="utf-8", newline="") as f:
            add(f"{name}_factors", [row[0] for row in list(csv.reader(f))[1:]])
    add("popular_items", [row[0] for row in _text_rows(os.path.join(out, "popular_items.txt"))])
    return seen


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(users=st.lists(ACCEPTED_ID, min_size=2, max_size=5, unique=True),
       items=st.lists(ACCEPTED_ID, min_size=3, max_size=6, unique=True))
def test_every_output_reads_back_exactly_the_ids_that_went_in(users, items):
    with tempfile.TemporaryDirectory() as root:
        rng = np.random.default_rng(len(users) * 10 + len(items))
        seen = {u: [u % len(items)] for u in range(len(users))}
        preproc, model, _, _ = make_fixture(root, seen, rng.standard_normal((len(users), 3)),
                                            rng.standard_normal((len(items), 3)),
                                            user_ids=users, item_ids=items)
        out = os.path.join(root, "predictions")
        run(predict_args(preproc, model, out, mode="both", top_k=2, n_similar=2, write_scores=True,
                         outputs=["similar_items", "embeddings", "factors_csv", "popular_items"]), [])
        ids = _read_everything(out)
    user_outputs = ("user_embeddings", "user_factors")
    item_outputs = ("item_embeddings", "item_factors", "popular_items", "similar_items")
    for name in user_outputs:
        assert ids[name] == set(users), name
    for name in item_outputs:
        assert ids[name] == set(items), name
    for name in ("batch_pred", "users_for_item", "batch_pred_scores", "users_for_item_scores"):
        assert ids[name] <= set(users) | set(items) and ids[name] & set(users), name
    assert ids["batch_pred"] >= set(users)  # every visitor has its line, its id intact
    assert ids["users_for_item"] >= set(items)


TRICKY_IDS = ["plain", " leading and trailing ", 'quote"inside', '"fully quoted"', "back\\slash",
              "semi;colon", "pipe|bar", "nul\x00byte", "\ufeffbom", "emoji 🙂", "אבג rtl", "nbsp\u00a0x",
              "tab-like\u2003em-space", "über", "x" * 200, "#hash", "=formula", "[]{}()"]


def test_tricky_ids_read_back_exactly_through_every_stage(tmp_path):
    """The whole pipeline (TFT vocabularies, TFRecords, training, predictions, SavedModel)."""
    import subprocess
    import sys

    import tensorflow as tf
    from tensorflow_transform import TFTransformOutput

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    users = [f"user {u}" for u in TRICKY_IDS]
    items = [f"item {i}" for i in TRICKY_IDS]
    path = tmp_path / "r.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["user_id", "item_id", "rating"])
        for n, user in enumerate(users):
            for k in range(3):
                writer.writerow([user, items[(n + k * 5) % len(items)], 1 + (n + k) % 4])
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "pipeline.run", "--source=interactions",
                             f"--input={path}", f"--output_dir={out}", "--epochs=2", "--n_embeds=4",
                             "--eval_fraction=0", "--no_report", "--top_k=2", "--mode=both"],
                            cwd=root, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metadata = json.load(open(out / "preproc" / "metadata.json"))
    assert metadata["rejected_rows"] == 0 and metadata["nusers"] == len(users)
    tft_output = TFTransformOutput(str(out / "preproc"))
    assert {u.decode() for u in tft_output.vocabulary_by_name("vocab_users")} == set(users)
    assert {i.decode() for i in tft_output.vocabulary_by_name("vocab_items")} == set(items)
    ids = _read_everything(str(out / "predictions"))
    assert ids["batch_pred"] >= set(users) and ids["users_for_item"] >= set(items)
    assert ids["user_embeddings"] == set(users) and ids["item_factors"] == set(items)
    export = out / "model" / "export"
    served = tf.saved_model.load(str(export / max(os.listdir(export), key=int)))
    answer = served.signatures["serving_default"](visitorId=tf.constant(users))
    assert answer["known"].numpy().all()  # every visitor id is found by the SavedModel too
    assert {c.decode() for row in answer["contentId"].numpy() for c in row} <= set(items)
