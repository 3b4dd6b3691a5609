"""End-to-end tests of the preprocess stage (real Beam + TFT pipeline, local runner, tiny data).

Each module-scoped fixture runs the stage once; several tests check different properties of
that one run (Beam + TFT start-up is the slow part).
"""
import json
import os
import random
import re
import subprocess
import sys

import pytest
import tensorflow_transform as tft

from pipeline import preprocess
from pipeline.sources import ga
from tests.preprocess_fixtures import (assert_median_is_learned, decode_interactions,
                                       expected_ratings, read_rejects, run_stage, write_lines)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# --- interactions source, comma, with planted bad rows -----------------------------------------

GOOD_ROWS = ["u1,i1,3,100", "u1,i2,1,100", "u2,i1,5,100", "u3,i3,2,100", "u2,i3,4,100",
             "u1,i1,2,100",            # same pair again: summed to 5
             "u4,i2,0,100",            # valid row, but its pair sums to 0 and is dropped
             '"u ""5""",i2,6,100',     # quoted id with a space and escaped quotes
             "u6,i4,1.5,100"]
BAD_ROWS = {"u7,,3,100": "empty_item_id", " ,i1,3,100": "empty_user_id",
            "u8,i1,nan,100": "rating_nan", "u8,i1,-2,100": "rating_negative",
            "u8,i1,abc,100": "rating_not_numeric", "u8,i1,inf,100": "rating_infinite",
            "u8,i1,1e300,100": "rating_out_of_range",  # beyond what float32 sums can hold
            "u9,i1,3": "wrong_column_count", "": "wrong_column_count",
            'u10,"i1,3,100': "malformed_quoting",
            # would corrupt batch_pred lines (visitorId<TAB>contentId1,contentId2,...)
            'u12,"i,1",3,100': "separator_in_item_id", '"u\t13",i1,3,100': "separator_in_user_id",
            '"u,15",i1,3,100': "separator_in_user_id",  # a comma splits users_for_item lines
            'u14,"i\r1",3,100': "separator_in_item_id"}
NOT_UTF8 = b"u11,\xff\xfe,3,100"
EXPECTED_VALUES = {("u1", "i1"): 5.0, ("u1", "i2"): 1.0, ("u2", "i1"): 5.0, ("u3", "i3"): 2.0,
                   ("u2", "i3"): 4.0, ('u "5"', "i2"): 6.0, ("u6", "i4"): 1.5}


@pytest.fixture(scope="module")
def comma_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("comma")
    lines = ["user_id,item_id,rating,ts"] + GOOD_ROWS + list(BAD_ROWS)
    random.Random(3).shuffle(lines[1:])
    data = ("\n".join(lines) + "\n").encode() + NOT_UTF8 + b"\n"
    path = tmp / "interactions.csv"
    path.write_bytes(data)
    metadata = run_stage(tmp / "out", "--source", "interactions", "--input", str(path),
                         "--max_rejected_fraction", "0.7")
    return metadata, str(tmp / "out" / "preproc")


def test_round_trip_gives_back_exactly_the_input_interactions(comma_run):
    metadata, preproc = comma_run
    sides = decode_interactions(preproc)
    median = metadata["rating"]["median_value"]
    assert_median_is_learned(list(EXPECTED_VALUES.values()), median)
    expected = expected_ratings(EXPECTED_VALUES, median)
    for side, pairs in sides.items():
        assert set(pairs) == set(expected), side
        for pair, rating in pairs.items():
            assert rating == pytest.approx(expected[pair], rel=1e-5), (side, pair)
    assert (metadata["nusers"], metadata["nitems"], metadata["interactions"]) == (5, 4, 7)
    assert metadata["rating"]["max"] == pytest.approx(max(expected.values()), rel=1e-5)
    assert metadata["rating"]["min"] == pytest.approx(min(expected.values()), rel=1e-5)


def test_bad_input_identity_and_reasons(comma_run):
    metadata, preproc = comma_run
    planted = {}
    for reason in list(BAD_ROWS.values()) + ["not_utf8"]:
        planted[reason] = planted.get(reason, 0) + 1
    assert metadata["rejected_by_reason"] == planted
    assert metadata["input_rows"] == len(GOOD_ROWS) + len(BAD_ROWS) + 1
    assert metadata["accepted_rows"] == len(GOOD_ROWS)
    assert metadata["input_rows"] == metadata["accepted_rows"] + metadata["rejected_rows"]
    assert metadata["dropped_nonpositive_pairs"] == 1
    rejects = read_rejects(preproc)
    assert len(rejects) == metadata["rejected_rows"]
    assert {r["source"] for r in rejects} == {"interactions"}
    by_raw = {r["raw"]: r["reason"] for r in rejects if r["reason"] != "not_utf8"}
    assert by_raw == BAD_ROWS


def test_metadata_file_and_tft_output(comma_run):
    metadata, preproc = comma_run
    with open(os.path.join(preproc, "metadata.json")) as f:
        strict = json.loads(f.read(), parse_constant=lambda c: pytest.fail(f"{c} in metadata.json"))
    assert strict == metadata
    output = tft.TFTransformOutput(preproc)
    assert set(output.raw_feature_spec()) == {"visitorId", "contentId", "value"}
    assert set(output.transformed_feature_spec()) == {"userId", "itemId", "rating"}
    assert output.vocabulary_size_by_name("vocab_users") == metadata["nusers"]
    for name in ("vocab_users", "vocab_items"):
        assert os.path.isabs(metadata[name]) and os.path.exists(metadata[name])
    assert not [n for n in os.listdir(os.path.dirname(preproc)) if n.startswith("_tmp")]
    assert metadata["source"] == "interactions" and metadata["ga_preset"] is None  # no GA semantics
    assert len(metadata["run_id"]) == 32  # the identity the trainer records for predict to check


# --- interactions source, tab, CRLF, reordered columns, via the CLI --------------------------------

@pytest.fixture(scope="module")
def tab_cli_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tab")
    values = {(f"user {u}", f"item/{i}"): float(1 + (u * 7 + i) % 9)
              for u in range(12) for i in range(5) if (u + i) % 3}
    lines = ["item_id\tuser_id\trating"] + [f"{i}\t{u}\t{v:g}" for (u, i), v in values.items()]
    path = tmp / "interactions.tsv"
    path.write_bytes("\r\n".join(lines).encode())  # CRLF, no newline at the end
    out = tmp / "out"
    proc = subprocess.run([sys.executable, "-m", "pipeline.preprocess", "--source", "interactions",
                           "--input", str(path), "--output_dir", str(out), "--rating_scale", "0.5"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    return proc, values, str(out / "preproc")


def test_cli_exits_zero_and_prints_metadata(tab_cli_run):
    proc, values, preproc = tab_cli_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert printed["interactions"] == len(values) and printed["rejected_rows"] == 0
    assert printed["rating"]["scale"] == 0.5


def test_cli_exits_non_zero_with_a_clear_message(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pipeline.preprocess", "--source", "interactions",
                           "--input", str(tmp_path / "missing-*.csv"), "--output_dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "matches no files" in proc.stderr


def test_tab_file_round_trip(tab_cli_run):
    proc, values, preproc = tab_cli_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(preproc, "metadata.json")) as f:
        median = json.load(f)["rating"]["median_value"]
    assert_median_is_learned(list(values.values()), median)
    expected = expected_ratings(values, median, scale=0.5)
    for pairs in decode_interactions(preproc).values():
        assert pairs.keys() == expected.keys()
        assert all(pairs[p] == pytest.approx(expected[p], rel=1e-5) for p in expected)


# --- ga_export source: hand-computed interactions, shuffled hits, INT64 as strings, gz -------------

def _page(number, time, content=None, as_string=True):
    hit = {"hitNumber": str(number) if as_string else number,
           "time": str(time) if as_string else time, "type": "PAGE"}
    if content is not None:
        hit["customDimensions"] = [{"index": "1", "value": "author"}, {"index": "10", "value": content}]
    return hit


def _ga_lines():
    s1 = [_page(1, 0, "a1"), {"hitNumber": "2", "time": "30000", "type": "EVENT"},
          _page(3, 60000, "a2"), _page(4, 90000), _page(5, 100000, "a1")]
    random.Random(0).shuffle(s1)
    sessions = [
        {"fullVisitorId": "v1", "visitId": "1", "hits": s1},  # a1: 60 s, a2: 30 s, last page: nothing
        {"fullVisitorId": "v1", "visitId": "2", "hits": [_page(2, 5000, "a3"), _page(1, 0, "a2")]},
        {"fullVisitorId": "v2", "visitId": 7, "hits": [_page(1, 0, "a1", False), _page(2, 20000, "a3", False)]},
        {"fullVisitorId": "v3", "visitId": "1", "hits": [_page(1, 0, "a1")]},  # one page: no interaction
    ]
    bad = ['{"fullVisitorId": "v9", "visitId": "1", "hits": {"not": "a list"}}', "not json", "[1, 2]"]
    separators = [  # ids that would corrupt batch_pred lines: the whole session is rejected
        {"fullVisitorId": "v1\t", "visitId": "3", "hits": [_page(1, 0, "a1"), _page(2, 900, "a2")]},
        {"fullVisitorId": "v2", "visitId": "8", "hits": [_page(1, 0, "a1"), _page(2, 900, "a,2"),
                                                         _page(3, 1900, "a3")]}]
    return [json.dumps(s) for s in sessions] + bad + [json.dumps(s) for s in separators], {
        "hits_not_a_list": 1, "invalid_json": 1, "not_an_object": 1, "separator_in_user_id": 1,
        "separator_in_item_id": 1}


GA_EXPECTED = {("v1", "a1"): 60000.0, ("v1", "a2"): 35000.0, ("v2", "a1"): 20000.0}


@pytest.fixture(scope="module")
def ga_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ga")
    lines, bad_reasons = _ga_lines()
    # a UTF-8 BOM before the first row and blank lines are file noise, not rows
    path = write_lines(tmp / "sessions.ndjson.gz", ["\ufeff" + lines[0], *lines[1:], "", "  "],
                       gz=True)
    preproc = tmp / "out" / "preproc"
    preproc.mkdir(parents=True)
    (preproc / "users_for_item-00099").write_bytes(b"stale shard of an older run")
    (tmp / "out" / "_tmp_preprocess_killed").mkdir()  # scratch of an interrupted run
    metadata = run_stage(tmp / "out", "--source", "ga_export", "--input", path, "--overwrite",
                         "--max_rejected_fraction", "0.6")
    return metadata, str(preproc), lines, bad_reasons


def test_ga_export_interactions_match_hand_computed(ga_run):
    metadata, preproc, lines, bad_reasons = ga_run
    # the pure-Python GA layer agrees with the hand computation, and the pipeline with both
    triples = [t for line in lines[:4] for t in ga.session_interactions(ga.parse_session_line(line))]
    assert ga.aggregate(triples) == GA_EXPECTED
    expected = expected_ratings(GA_EXPECTED, metadata["rating"]["median_value"])
    assert_median_is_learned(list(GA_EXPECTED.values()), metadata["rating"]["median_value"])
    for pairs in decode_interactions(preproc).values():
        assert pairs.keys() == expected.keys()
        assert all(pairs[p] == pytest.approx(expected[p], rel=1e-5) for p in expected)
    assert metadata["rejected_by_reason"] == bad_reasons
    assert (metadata["input_rows"], metadata["accepted_rows"]) == (len(lines), 4)
    assert metadata["source"] == "ga_export" and metadata["ga_preset"] == "news"


def test_overwrite_replaces_the_whole_preproc_dir(ga_run):
    _, preproc, _, _ = ga_run
    assert not os.path.exists(os.path.join(preproc, "users_for_item-00099"))
    assert sorted(os.listdir(preproc))  # the new run's files are there
    assert not [n for n in os.listdir(os.path.dirname(preproc)) if n.startswith("_tmp")]


# --- failures --------------------------------------------------------------------------------------

def _rejects_path(error: pytest.ExceptionInfo) -> str:
    """The rejected-* pattern a refusal names (they stay in the run's scratch dir)."""
    return re.search(r"see (\S+)/rejected-\*", str(error.value)).group(1)


def test_too_many_rejects_fails_after_writing_them(tmp_path):
    path = write_lines(tmp_path / "i.csv", ["user_id,item_id,rating", "u1,i1,1", "u2,i1,2",
                                             "u3,,1", "u4,i1,-1", "u5,i1"])
    with pytest.raises(preprocess.PreprocessError, match="max_rejected_fraction") as error:
        run_stage(tmp_path / "out", "--source", "interactions", "--input", path)
    assert sorted(r["reason"] for r in read_rejects(_rejects_path(error))) == [
        "empty_item_id", "rating_negative", "wrong_column_count"]
    assert not (tmp_path / "out" / "preproc").exists()  # nothing published


def test_failed_overwrite_leaves_the_previous_output_as_it_was(tmp_path):
    good = write_lines(tmp_path / "good.csv", ["user_id,item_id,rating", "u1,i1,1", "u2,i2,2"])
    bad = write_lines(tmp_path / "bad.csv", ["user_id,item_id,rating", "u1,i1,1", "u3,,1", "u4,i1"])
    out, preproc = tmp_path / "out", tmp_path / "out" / "preproc"
    first = run_stage(out, "--source", "interactions", "--input", good)
    before = {p.relative_to(preproc): p.read_bytes() for p in preproc.rglob("*") if p.is_file()}
    with pytest.raises(preprocess.PreprocessError, match="was left as it was") as error:
        run_stage(out, "--source", "interactions", "--input", bad, "--overwrite")
    assert {p.relative_to(preproc): p.read_bytes() for p in preproc.rglob("*") if p.is_file()} == before
    assert len(read_rejects(_rejects_path(error))) == 2
    second = run_stage(out, "--source", "interactions", "--input", good, "--overwrite",
                       "--rating_scale", "0.5")
    assert second["run_id"] != first["run_id"] and second["rating"]["scale"] == 0.5
    assert not [n for n in os.listdir(out) if n.startswith("_tmp")]  # the failed run's scratch too


def test_refuses_non_empty_output_without_overwrite(tmp_path):
    path = write_lines(tmp_path / "i.csv", ["user_id,item_id,rating", "u1,i1,1"])
    preproc = tmp_path / "out" / "preproc"
    preproc.mkdir(parents=True)
    (preproc / "items_for_user-00000").write_bytes(b"old")
    with pytest.raises(preprocess.PreprocessError, match="interrupted or failed run.*--overwrite"):
        run_stage(tmp_path / "out", "--source", "interactions", "--input", path)
    assert (preproc / "items_for_user-00000").read_bytes() == b"old"


def test_missing_input_and_bad_header_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="needs --input"):
        run_stage(tmp_path / "out", "--source", "interactions")
    with pytest.raises(FileNotFoundError, match="matches no files"):
        run_stage(tmp_path / "out", "--source", "interactions", "--input", str(tmp_path / "nope*.csv"))
    path = write_lines(tmp_path / "i.csv", ["user,item_id,rating", "u1,i1,1"])
    with pytest.raises(ValueError, match="user_id"):
        run_stage(tmp_path / "out", "--source", "interactions", "--input", path)
    assert not (tmp_path / "out" / "preproc").exists()
