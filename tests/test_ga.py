"""GA semantics (pipeline.ga) on hand-made export rows with hand-computed results, and the sample."""
import copy
import gzip
import itertools
import json
import pickle
import random

import pytest

from pipeline import sample
from pipeline.sources import ga


def _page(hit_number, time_ms, content_id=None, **extra):
    hit = {"hitNumber": hit_number, "time": time_ms, "type": "PAGE", **extra}
    if content_id is not None:
        hit["customDimensions"] = [{"index": "11", "value": "author-1"},
                                   {"index": "10", "value": content_id}]
    return hit


def _line(session) -> str:
    return json.dumps(session)


def _interactions(line, preset="news", **kwargs):
    return ga.session_interactions(ga.parse_session_line(line), preset, **kwargs)


# Session A, hits shuffled, INT64 fields mixed as strings and ints. In time order:
#   #1 t=0      art-a  -> 60000 (until #3)
#   #2 t=30000  EVENT carrying dimension 10 -> ignored, does not end art-a
#   #3 t=60000  art-b  -> 30000 (until #4)
#   #4 t=90000  PAGE without dimension 10 -> contributes nothing, but ends art-b
#   #5 t=100000 art-a  -> 30000 (until #6)            art-a total 90000
#   #6 t=130000 art-c  -> 0 (tie with #7, hitNumber breaks it) -> zero, left out
#   #7 t=130000 art-d  -> 70000 (until #8)
#   #8 t=200000 art-e  -> last PAGE hit of the session: nothing
SESSION_A = {"fullVisitorId": "v1", "visitId": "1001", "hits": [
    _page("7", "130000", "art-d"),
    _page(3, "60000", "art-b"),
    _page("8", 200000, "art-e"),
    {"hitNumber": "2", "time": "30000", "type": "EVENT",
     "customDimensions": [{"index": "10", "value": "art-z"}]},
    _page("6", "130000", "art-c"),
    _page("4", "90000", None, customDimensions=[{"index": 12, "value": "politics"}]),
    _page(1, 0, "art-a"),
    _page("5", "100000", "art-a"),
]}
# Session B: same visitor, another session, plain ints: art-b 45000, art-a last.
SESSION_B = {"fullVisitorId": "v1", "visitId": 1002, "hits": [
    _page(2, 45000, "art-a"), _page(1, 0, "art-b")]}
# Session C: a single page -> nothing at all for v2.
SESSION_C = {"fullVisitorId": "v2", "visitId": "7", "hits": [_page("1", "0", "art-a")]}
# Session D: art-a twice (5000 + 15000) summed within the session; a front page ends it.
SESSION_D = {"fullVisitorId": "v3", "visitId": "9", "hits": [
    _page("3", "20000"), _page("2", "5000", "art-a"), _page("1", "0", "art-a")]}


def test_news_session_hand_computed():
    assert sorted(_interactions(_line(SESSION_A))) == [
        ("v1", "art-a", 90000.0), ("v1", "art-b", 30000.0), ("v1", "art-d", 70000.0)]
    assert _interactions(_line(SESSION_B)) == [("v1", "art-b", 45000.0)]
    assert _interactions(_line(SESSION_C)) == []
    assert _interactions(_line(SESSION_D)) == [("v3", "art-a", 20000.0)]


def test_news_sessions_summed_across_sessions():
    triples = itertools.chain.from_iterable(
        _interactions(_line(s)) for s in (SESSION_A, SESSION_B, SESSION_C, SESSION_D))
    assert ga.aggregate(triples) == {("v1", "art-a"): 90000.0, ("v1", "art-b"): 75000.0,
                                     ("v1", "art-d"): 70000.0, ("v3", "art-a"): 20000.0}


def test_bytes_lines_and_dicts_read_alike():
    line = _line(SESSION_A)
    assert _interactions(line.encode("utf-8")) == _interactions(line) \
        == ga.session_interactions(SESSION_A)


def test_other_content_dimension():
    # dimension 11 (author) of SESSION_A: pages #1 #3 #5 #6 #7 by author-1; #4 has none.
    assert _interactions(_line(SESSION_A), content_dimension=11) == [
        ("v1", "author-1", 60000.0 + 30000.0 + 30000.0 + 0 + 70000.0)]


def test_aggregate_drops_zero_and_negative_sums():
    triples = [("u", "x", 0.0), ("u", "x", 0.0), ("u", "y", 2.0), ("u", "y", -2.0),
               ("u", "z", 1.5), ("w", "z", 3.0), ("u", "z", 1.0), ("u", "n", -1.0)]
    assert ga.aggregate(triples) == {("u", "z"): 2.5, ("w", "z"): 3.0}


def _ecommerce_hit(hit_number, action_type, products):
    return {"hitNumber": hit_number, "time": "0", "type": "EVENT",
            "eCommerceAction": {"action_type": action_type}, "product": products}


SESSION_SHOP = {"fullVisitorId": "v5", "visitId": "1", "hits": [
    _ecommerce_hit("1", "0", [{"productSKU": "sku1", "isImpression": True},
                              {"productSKU": "sku2", "isImpression": True}]),  # impressions
    _ecommerce_hit("2", "2", [{"productSKU": "sku1", "isImpression": None}]),  # view sku1
    _ecommerce_hit("3", "2", [{"productSKU": "sku1", "isImpression": False},   # view sku1
                              {"productSKU": "sku2"},                            # view sku2
                              {"productSKU": "sku3", "isImpression": "true"}]),  # impression
    _ecommerce_hit("4", "3", [{"productSKU": "sku2"}]),  # add to cart: not counted
    _ecommerce_hit("5", "6", [{"productSKU": "sku1", "productQuantity": "3"}]),  # purchase
    _page("6", "0", "art-a"),  # news hits are ignored by the ecommerce preset
]}
SESSION_SHOP_2 = {"fullVisitorId": "v5", "visitId": 2, "hits": [
    _ecommerce_hit(1, 2, [{"productSKU": "sku2", "isImpression": False}])]}


def test_ecommerce_views_and_weighted_purchases():
    assert sorted(_interactions(_line(SESSION_SHOP), "ecommerce")) == [
        ("v5", "sku1", 2.0 + ga.DEFAULT_PURCHASE_WEIGHT), ("v5", "sku2", 1.0)]
    assert sorted(_interactions(_line(SESSION_SHOP), "ecommerce", purchase_weight=2.0)) == [
        ("v5", "sku1", 4.0), ("v5", "sku2", 1.0)]
    triples = _interactions(_line(SESSION_SHOP), "ecommerce") + \
        _interactions(_line(SESSION_SHOP_2), "ecommerce")
    assert ga.aggregate(triples) == {("v5", "sku1"): 7.0, ("v5", "sku2"): 2.0}
    assert _interactions(_line(SESSION_SHOP)) == []  # news preset: one page, nothing


def _bad_session(**changes):
    session = {"fullVisitorId": "v1", "visitId": "1",
               "hits": [_page("1", "0", "art-a"), _page("2", "1000", "art-b")]}
    session.update(changes)
    return {k: v for k, v in session.items() if v is not ...}


REJECTS = [  # (line, preset, reason)
    ('{"fullVisitorId": "v1", ', "news", "invalid_json"),
    (b"\xff\xfe{}", "news", "invalid_json"),
    ("", "news", "invalid_json"),
    ("[1, 2]", "news", "not_an_object"),
    ("null", "news", "not_an_object"),
    (_line(_bad_session(fullVisitorId=...)), "news", "missing_visitor_id"),
    (_line(_bad_session(fullVisitorId=None)), "ecommerce", "missing_visitor_id"),
    (_line(_bad_session(fullVisitorId="  ")), "news", "missing_visitor_id"),
    (_line(_bad_session(fullVisitorId=12345)), "news", "invalid_visitor_id"),
    (_line(_bad_session(visitId=...)), "news", "missing_visit_id"),
    (_line(_bad_session(visitId="abc")), "news", "missing_visit_id"),
    (_line(_bad_session(hits=...)), "news", "hits_not_a_list"),
    (_line(_bad_session(hits={"type": "PAGE"})), "ecommerce", "hits_not_a_list"),
    (_line(_bad_session(hits=[1])), "news", "malformed_hit"),
    (_line(_bad_session(hits=[_page("1", "0", customDimensions="10=a")])), "news",
     "malformed_hit"),
    (_line(_bad_session(hits=[_page("1", "0", customDimensions=[{"index": "ten"}])])), "news",
     "malformed_hit"),
    (_line(_bad_session(hits=[_page("1", "0", customDimensions=[{"index": 10, "value": 7}])])),
     "news", "malformed_hit"),
    (_line(_bad_session(hits=[_ecommerce_hit("1", "2", "sku1")])), "ecommerce", "malformed_hit"),
    (_line(_bad_session(hits=[_ecommerce_hit("1", "2", [{"productSKU": "s", "isImpression": 2}])])),
     "ecommerce", "malformed_hit"),
    (_line(_bad_session(hits=[_page("1", "12.5s", "art-a")])), "news", "non_numeric_time"),
    (_line(_bad_session(hits=[{"hitNumber": "1", "type": "PAGE"}])), "news", "non_numeric_time"),
    ('{"fullVisitorId": "v", "visitId": 1, "hits": [{"hitNumber": 1, "type": "PAGE", '
     '"time": NaN}]}', "news", "non_numeric_time"),
    (_line(_bad_session(hits=[_page("1", True, "art-a")])), "news", "non_numeric_time"),
    (_line(_bad_session(hits=[_page(None, "0", "art-a")])), "news", "non_numeric_hit_number"),
    (_line(_bad_session(hits=[_page("1", "0", "a"), _page(1, "9", "b")])), "news",
     "duplicate_hit_number"),
    (_line(_bad_session(hits=[_page("1", "0", "")])), "news", "empty_content_id"),
    (_line(_bad_session(hits=[_page("1", "0", "   ")])), "news", "empty_content_id"),
    (_line(_bad_session(hits=[_page("1", "0", customDimensions=[{"index": "10"}])])), "news",
     "empty_content_id"),
    (_line(_bad_session(hits=[_ecommerce_hit("1", "6", [{"productSKU": ""}])])), "ecommerce",
     "empty_content_id"),
    (_line(_bad_session(hits=[_page("1", "0", "a"), _page("2", str(5 * 3600 * 1000), "b")])),
     "news", "absurd_duration"),
    # ids holding a character of `visitorId<TAB>contentId1,contentId2,...` prediction lines
    (_line(_bad_session(fullVisitorId="v\t1")), "news", "separator_in_user_id"),
    (_line(_bad_session(fullVisitorId="v1\r")), "ecommerce", "separator_in_user_id"),
    (_line(_bad_session(fullVisitorId="v\n1")), "news", "separator_in_user_id"),
    (_line(_bad_session(hits=[_page("1", "0", "art,a")])), "news", "separator_in_item_id"),
    (_line(_bad_session(hits=[_page("1", "0", "a"), _page("2", "9", "art\nb")])), "news",
     "separator_in_item_id"),  # the last page adds no time, but its id is read: whole session out
    (_line(_bad_session(hits=[_ecommerce_hit("1", "2", [{"productSKU": "sku\t1"}])])),
     "ecommerce", "separator_in_item_id"),
    (_line(_bad_session(hits=[_ecommerce_hit("1", "6", [{"productSKU": "sku1\r"}])])),
     "ecommerce", "separator_in_item_id"),
]


@pytest.mark.parametrize("line,preset,reason", REJECTS)
def test_bad_rows_rejected_with_reason(line, preset, reason):
    with pytest.raises(ga.RejectedRow) as caught:
        _interactions(line, preset)
    assert caught.value.reason == reason
    assert str(caught.value).startswith(reason)


def test_every_reject_reason_is_covered_and_declared():
    assert {reason for _, _, reason in REJECTS} == set(ga.REJECT_REASONS)


def test_noise_in_ignored_fields_does_not_reject():
    session = _bad_session(hits=[
        _page("1", "0", "art-a"),
        {"hitNumber": "x", "time": "soon", "type": "EVENT", "customDimensions": "junk"},
        _page("3", "2000", "art-b", eCommerceAction={"action_type": "2"}, product=[
            {"productSKU": "sku9"}])])
    assert ga.session_interactions(session) == [("v1", "art-a", 2000.0)]
    # the news preset accepts a 5 h gap only when allowed to
    long_gap = _bad_session(hits=[_page("1", "0", "a"), _page("2", str(5 * 3600 * 1000), "b")])
    assert ga.session_interactions(long_gap, max_time_on_page_ms=6 * 3600 * 1000) == [
        ("v1", "a", 5 * 3600 * 1000.0)]


def test_one_id_rule_for_both_sides_and_every_output():
    # a comma would split a users_for_item line, any line break a line of every text output
    for c in ",\t\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029":
        assert ga.id_separator_reason("user_id", f"v{c}1") == "separator_in_user_id", repr(c)
        assert ga.id_separator_reason("item_id", f"a{c}b") == "separator_in_item_id", repr(c)
        assert len(f"a{c}b".splitlines()) == 2 or c in ",\t"  # why each one is there
    for ok in (";", " ", "é", "\u00a0", '"', "|", "\x00"):
        assert ga.id_separator_reason("user_id", f"v{ok}1") is None, repr(ok)
    with pytest.raises(ga.RejectedRow, match="separator_in_user_id"):
        ga.session_interactions(_bad_session(fullVisitorId="v,1 x"))
    # separators in ids the preset never reads reject nothing
    session = _bad_session(hits=[_page("1", "0", "art-a", eCommerceAction={"action_type": "2"},
                                       product=[{"productSKU": "sku,\t1"}]), _page("2", "1000")])
    assert ga.session_interactions(session) == [("v1", "art-a", 1000.0)]


def test_bad_arguments_are_value_errors():
    with pytest.raises(ValueError, match="preset"):
        ga.session_interactions(SESSION_A, "video")
    with pytest.raises(ValueError, match="purchase_weight"):
        ga.session_interactions(SESSION_SHOP, "ecommerce", purchase_weight=float("nan"))


# --- sample generator ---------------------------------------------------------------------------

def test_sample_is_deterministic_and_seed_dependent():
    first = list(sample.generate_sessions(40, 15, seed=11, ecommerce_rate=0.3))
    assert first == list(sample.generate_sessions(40, 15, seed=11, ecommerce_rate=0.3))
    assert first != list(sample.generate_sessions(40, 15, seed=12, ecommerce_rate=0.3))


def test_sample_looks_like_a_ga360_export(tmp_path):
    path = str(tmp_path / "s.ndjson.gz")
    sample.main(["--visitors", "120", "--articles", "30", "--seed", "5",
                 "--ecommerce_rate", "0.3", "--output", path])
    with gzip.open(path, "rt") as lines:
        sessions = [ga.parse_session_line(line) for line in lines]
    hits = [hit for s in sessions for hit in s["hits"]]
    pages = [hit for hit in hits if hit["type"] == "PAGE"]

    assert len({s["fullVisitorId"] for s in sessions}) == 120
    assert len(sessions) > 2 * 120  # several sessions per visitor
    assert len({(s["fullVisitorId"], s["visitId"]) for s in sessions}) == len(sessions)
    assert all(isinstance(hit["time"], str) and isinstance(hit["hitNumber"], str) for hit in hits)
    assert any([int(h["hitNumber"]) for h in s["hits"]] != sorted(int(h["hitNumber"]) for h in
                                                                 s["hits"]) for s in sessions)
    assert any(hit["type"] == "EVENT" for hit in hits)
    indices = [{d["index"] for d in hit.get("customDimensions", [])} for hit in pages]
    assert any("10" not in ix for ix in indices) and any({"10", "11", "12"} <= ix for ix in indices)
    assert any(hit.get("eCommerceAction", {}).get("action_type") == "6" for hit in hits)

    interactions = ga.aggregate(t for s in sessions for t in ga.session_interactions(s))
    assert len({content for _, content in interactions}) > 15
    views = sorted(interactions.values())
    assert 20_000 < views[len(views) // 2] < 200_000  # median time on page: tens of seconds

    with open(path, "rb") as f:
        written = f.read()
    again = tmp_path / "again.ndjson.gz"
    sample.write_sessions(sample.generate_sessions(120, 30, 5, ecommerce_rate=0.3), str(again))
    assert again.read_bytes() == written  # byte-reproducible gzip


def test_committed_sample_matches_generator():
    with gzip.open(sample.SAMPLE_PATH, "rt") as lines:
        head = [json.loads(line) for line in itertools.islice(lines, 200)]
        n_sessions = len(head) + sum(1 for _ in lines)
    generated = sample.generate_sessions(3000, 300, 7)
    assert head == list(itertools.islice(generated, 200))
    assert 10_000 < n_sessions < 20_000


def _mutations(value, rng):
    """Yields copies of `value` with one nested value replaced by junk of another type."""
    junk = [None, True, 0, -7, 1.5, float("nan"), "", "x", "9" * 5000, [], [None], {}, {"a": 1}]
    paths = []

    def walk(node, path):
        paths.append(path)
        children = node.items() if isinstance(node, dict) else \
            enumerate(node) if isinstance(node, list) else ()
        for key, child in children:
            walk(child, path + (key,))

    walk(value, ())
    for _ in range(400):
        mutated = copy.deepcopy(value)
        path = rng.choice(paths[1:])
        parent = mutated
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = rng.choice(junk)
        yield mutated


@pytest.mark.parametrize("preset", ga.PRESETS)
def test_any_json_gives_interactions_or_a_reject(preset):
    rng = random.Random(0)
    outcomes = set()
    for base in (SESSION_A, SESSION_SHOP):
        for mutated in _mutations(base, rng):
            try:
                triples = ga.session_interactions(
                    ga.parse_session_line(json.dumps(mutated)), preset)
            except ga.RejectedRow as rejected:
                assert rejected.reason in ga.REJECT_REASONS
                outcomes.add(rejected.reason)
            else:
                assert all(isinstance(v, str) and isinstance(c, str) and value > 0
                           for v, c, value in triples)
                outcomes.add("accepted")
    assert "accepted" in outcomes and len(outcomes) >= 4


def test_rejected_row_pickles_with_its_reason():
    restored = pickle.loads(pickle.dumps(ga.RejectedRow("absurd_duration", "9 h")))
    assert (restored.reason, restored.detail, str(restored)) == (
        "absurd_duration", "9 h", "absurd_duration: 9 h")


def test_a_byte_order_mark_does_not_make_a_row_invalid():
    line = json.dumps({"fullVisitorId": "v", "visitId": "1", "hits": []})
    assert ga.parse_session_line(("\ufeff" + line).encode("utf-8")) == json.loads(line)
    assert ga.parse_session_line("\ufeff" + line) == json.loads(line)
