"""Ids read back exactly from every output, whatever they hold (property tests, hypothesis).

The rule (pipeline/ga.py ID_FORBIDDEN): an id may hold anything but a comma, a TAB or a line break
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
from pipeline import ga, sources
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
    parse = sources._InteractionsParser(sources.parse_header("user_id,item_id,rating"))
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
