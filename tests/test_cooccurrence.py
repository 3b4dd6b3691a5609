"""Co-occurrence / PMI similar items (issue 13 part 1): the Beam transforms against a brute-force
count on a small fixture, the PMI values, the cap, the ranking and the line format."""
import itertools
import math

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

from pipeline.cooc import job as cooc_job
from pipeline.sources.rows import triples_batch
from transforms import cooccurrence


def fixture_rows(seed=3, visitors=40, items=12):
    """(visitor, item, value) rows: repeats, a zero-value row, non-ASCII and prefix-sharing ids."""
    rng = np.random.default_rng(seed)
    names = [f"item-{i}".encode() for i in range(items - 2)] + ["ü".encode(), b"item-1x"]
    rows = []
    for v in range(visitors):
        for item in rng.choice(len(names), size=rng.integers(1, 8)):
            rows.append((f"v{v}".encode(), names[item], float(rng.integers(1, 4))))
    rows.append((b"v0", b"item-9", 0.0))  # not an interaction
    return rows


def brute_force(rows, cap):
    groups = {}
    for visitor, item, value in rows:
        if value > 0:
            groups.setdefault(visitor, set()).add(item)
    capped = {g: cooccurrence.capped_items(g, items, cap) for g, items in groups.items()}
    pairs, counts = {}, {}
    for items in capped.values():
        for item in items:
            counts[item] = counts.get(item, 0) + 1
        for a, b in itertools.combinations(sorted(items), 2):
            pairs[(a, b)] = pairs.get((a, b), 0) + 1
    return capped, pairs, counts, len(capped)


def scored_both_ways(rows, min_count=cooccurrence.DEFAULT_MIN_COUNT):
    """{item: [(neighbour, SPPMI), ...]} of the brute-force counts (every kept pair, both ways)."""
    _, pairs, counts, groups = brute_force(rows, 50)
    scored = {}
    for (a, b), n in pairs.items():
        score = cooccurrence.sppmi(n, counts[a], counts[b], groups, min_count=min_count)
        if score is not None:
            scored.setdefault(a, []).append((b, score))
            scored.setdefault(b, []).append((a, score))
    return scored


def expected_lines(rows, n):
    return sorted(cooc_job.similar_items_line((item, cooccurrence.top_neighbours(found, n)))
                  for item, found in scored_both_ways(rows).items())


def batches_of(rows, size=17):
    return [triples_batch(rows[i:i + size]) for i in range(0, len(rows), size)]


@pytest.mark.parametrize("cap", [3, 50])
def test_counts_match_a_brute_force_count(cap):
    rows = fixture_rows()
    capped, pairs, counts, groups = brute_force(rows, cap)
    batches = batches_of(rows)
    with beam.Pipeline(runner=FnApiRunner()) as p:
        grouped = p | beam.Create(batches) | cooc_job.ItemsPerGroup(cap)
        got = grouped | cooc_job.CountCooccurrences()
        assert_that(grouped, equal_to(list(capped.items())), label="groups")
        assert_that(got["pairs"], equal_to(list(pairs.items())), label="pairs")
        assert_that(got["items"], equal_to(list(counts.items())), label="items")
        assert_that(got["groups"], equal_to([groups]), label="group count")
    assert max(len(items) for items in capped.values()) <= cap


def test_cap_is_a_stable_subset_and_bounds_the_pairs():
    items = [f"i{n}".encode() for n in range(500)]
    kept = cooccurrence.capped_items(b"crawler", items + items[:100], cap=50)
    assert len(kept) == 50 and set(kept) <= set(items) and kept == sorted(kept)
    assert kept == cooccurrence.capped_items(b"crawler", list(reversed(items)), cap=50)
    assert kept != cooccurrence.capped_items(b"another visitor", items, cap=50)
    assert len(list(cooccurrence.item_pairs(kept))) == 50 * 49 // 2
    assert cooccurrence.capped_items(b"g", [b"b", b"a", b"b"], cap=50) == [b"a", b"b"]


def test_sppmi_values():
    # 100 groups; a in 10, b in 20, together in 5: PMI = log(5 * 100 / 200) = log 2.5
    assert cooccurrence.sppmi(5, 10, 20, 100) == pytest.approx(math.log(2.5))
    assert cooccurrence.sppmi(5, 10, 20, 100, shift=2.0) == pytest.approx(math.log(1.25))
    assert cooccurrence.sppmi(5, 10, 20, 100, shift=3.0) is None       # below the shift: dropped
    assert cooccurrence.sppmi(1, 1, 1, 100) is None                    # rare pair: below min_count
    assert cooccurrence.sppmi(1, 1, 1, 100, min_count=1) == pytest.approx(math.log(100))
    assert cooccurrence.sppmi(2, 50, 50, 100) is None                  # independent or worse


def test_similar_items_are_the_best_sppmi_neighbours_best_first():
    rows = fixture_rows(seed=5, visitors=200)
    want = expected_lines(rows, 3)
    batches = batches_of(rows, size=len(rows))
    with beam.Pipeline(runner=FnApiRunner()) as p:
        counted = p | beam.Create(batches) | cooc_job.ItemsPerGroup() | cooc_job.CountCooccurrences()
        lines = (counted | cooc_job.ScorePairs() | cooc_job.TopSimilar(3)
                 | beam.Map(cooc_job.similar_items_line))
        assert_that(lines, equal_to(want))
    assert want and all(len(line.split("\t")[1].split(",")) <= 3 for line in want)


def test_ranking_puts_higher_scores_then_lower_ids_first():
    ranked = cooccurrence.top_neighbours([(b"b", 1.0), (b"ab", 2.0), (b"a", 2.0), (b"c", 0.5)], 3)
    assert [item for item, _ in ranked] == [b"a", b"ab", b"b"]


def test_stage_end_to_end_counts_add_up_and_lines_match(tmp_path):
    """`python -m pipeline.cooc` on an interactions file with a bad row: rejects accounted for,
    every id read back exactly, lines equal to the brute-force ranking, the scores file the same
    lists with their brute-force PMI; a rerun refuses without --overwrite and leaves the output
    as it was."""
    import json
    import subprocess
    import sys

    rows = fixture_rows(seed=7, visitors=150)
    data = tmp_path / "interactions.csv"
    data.write_text("user_id,item_id,rating\n"
                    + "".join(f"{v.decode()},{i.decode()},{r}\n" for v, i, r in rows)
                    + "v1,item-2,not-a-number\n")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "pipeline.cooc", "--source", "interactions", "--input",
               str(data), "--output_dir", str(out), "--cooc_top_n", "4"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((out / "cooc" / "manifest.json").read_text())
    assert manifest["input_rows"] == len(rows) + 1 == manifest["accepted_rows"] + manifest["rejected_rows"]
    assert manifest["rejected_rows"] == 1
    capped, pairs, counts, groups = brute_force([r for r in rows if r[2] > 0], 50)
    assert (manifest["groups"], manifest["pairs"]) == (groups, len(pairs))
    want = expected_lines(rows, 4)
    got = sorted(line for path in (out / "cooc").glob("pmi_similar_items-*")
                 for line in path.read_text(encoding="utf-8").splitlines())
    assert got == want and any("ü" in line for line in got)
    lists = {item: ids.split(",") for item, _, ids in (line.partition("\t") for line in got)}
    records = [json.loads(line) for path in (out / "cooc").glob("pmi_similar_items_scores-*.jsonl")
               for line in path.read_text(encoding="utf-8").splitlines()]
    assert sorted(r["id"] for r in records) == sorted(lists)
    pmi = {}  # PMI from the brute-force counts (shift 1: SPPMI = PMI where kept)
    for record in records:
        assert record["ids"] == lists[record["id"]]
        assert record["scores"] == sorted(record["scores"], reverse=True)
        a = record["id"].encode()
        for b, score in zip((i.encode() for i in record["ids"]), record["scores"]):
            together = pairs[tuple(sorted((a, b)))]
            pmi[(a, b)] = score, math.log(together * groups / (counts[a] * counts[b]))
    assert len(pmi) == sum(map(len, lists.values())) >= 10  # a score for every listed id
    assert all(score == pytest.approx(brute, abs=1e-6) for score, brute in pmi.values())
    embedded = [json.loads(line) for line in
                (out / "cooc" / "pmi_item_embeddings.json").read_text(encoding="utf-8").splitlines()]
    assert sorted(e["id"] for e in embedded) == sorted(i.decode() for i in counts)
    assert {len(e["embedding"]) for e in embedded} == {32}
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and "not empty" in again.stderr
    assert json.loads((out / "cooc" / "manifest.json").read_text())["run_id"] == manifest["run_id"]


def test_pmi_embeddings_fit_the_sppmi_matrix():
    """WALS on items x items reconstructs the kept SPPMI values far better than their mean does,
    and items without any kept pair get no direction (a zero vector)."""
    from factorization.pmi_embeddings import pmi_embeddings
    rows = fixture_rows(seed=11, visitors=300, items=30)
    counts = brute_force(rows, 50)[2]
    scored = [(a, pair) for a, found in scored_both_ways(rows, min_count=1).items() for pair in found]
    lonely = b"never-paired"
    ids, factors, solver = pmi_embeddings(list(counts) + [lonely], scored, dim=16, seed=1)
    assert ids == sorted(set(counts) | {lonely}) and factors.shape == (len(ids), 16)
    assert not factors[ids.index(lonely)].any()
    index = {item: i for i, item in enumerate(ids)}
    a = np.array([index[x] for x, _ in scored])
    b = np.array([index[y] for _, (y, _s) in scored])
    values = np.array([s for _, (_y, s) in scored])
    fitted = np.einsum("nk,nk->n", factors[a], solver.col_factors.numpy()[b])
    assert np.mean((fitted - values) ** 2) < 0.25 * np.var(values)


def test_driver_runs_the_cooc_stage_on_the_bundled_sample(tmp_path):
    """`pipeline.run --stages cooc` (the bundled GA sample): cooc/ published, counts add up."""
    import json

    from pipeline import run
    assert run.main(["--stages", "cooc", "--output_dir", str(tmp_path), "--no_report",
                     "--pmi_embedding_dim", "8"]) == 0
    manifest = json.loads((tmp_path / "cooc" / "manifest.json").read_text())
    assert manifest["input_rows"] == manifest["accepted_rows"] + manifest["rejected_rows"] > 0
    assert manifest["items_with_similar"] > 0 and manifest["embedding_dim"] == 8
    assert not list(tmp_path.glob("_tmp_cooc_*"))  # scratch gone once published


def _session(visitor: str, visit: int, contents: list[str]) -> dict:
    """A GA360 session whose PAGE hits view `contents` 10 s each (a last hit closes the visit)."""
    hits = [{"type": "PAGE", "time": str(10_000 * n), "hitNumber": str(n + 1),
             "customDimensions": [{"index": "10", "value": content}]}
            for n, content in enumerate(contents + ["exit-page"])]
    return {"fullVisitorId": visitor, "visitId": str(visit), "visitStartTime": str(1000 + visit),
            "hits": hits}


@pytest.mark.parametrize("scope,groups,pairs", [("session", 3, 2), ("visitor", 2, 6)])
def test_session_scope_counts_pairs_within_sessions_only(tmp_path, scope, groups, pairs):
    """Visitor A reads x, y in one session and z, w in another; B reads x, y: sessions give the
    pairs (x, y) x2 and (z, w), visitors give all 6 pairs of A's four items plus B's (x, y)."""
    import json

    from pipeline import run
    from tests.ga_fixtures import write_ndjson
    sessions = [_session("A", 1, ["x", "y"]), _session("A", 2, ["z", "w"]), _session("B", 3, ["x", "y"])]
    data = write_ndjson(sessions, tmp_path / "sessions.ndjson")
    assert run.main(["--stages", "cooc", "--input", data, "--output_dir", str(tmp_path / "out"),
                     "--no_report", "--cooc_scope", scope, "--pmi_min_count", "1",
                     "--pmi_embedding_dim", "0"]) == 0
    manifest = json.loads((tmp_path / "out" / "cooc" / "manifest.json").read_text())
    assert (manifest["groups"], manifest["pairs"]) == (groups, pairs)
    assert not (tmp_path / "out" / "cooc" / "pmi_item_embeddings.json").exists()


def test_session_scope_needs_ga_sessions(tmp_path):
    from pipeline import run
    data = tmp_path / "i.csv"
    data.write_text("user_id,item_id,rating\nu,i,1\n")
    assert run.main(["--stages", "cooc", "--source", "interactions", "--input", str(data),
                     "--output_dir", str(tmp_path / "out"), "--cooc_scope", "session"]) == 2
    assert not (tmp_path / "out").exists()


def test_bigquery_session_keys_are_checked_on_their_visitor_part():
    """Session-keyed BigQuery rows: the visitor part follows the id rules, the visit part must
    be digits; a key without a visit is refused."""
    from pipeline.sources.read import _parse_bigquery_rows
    rows = [{"visitorId": "A\x1f12", "contentId": "c", "value": 1.0},
            {"visitorId": "A,B\x1f1", "contentId": "c", "value": 1.0},
            {"visitorId": "A\x1fx", "contentId": "c", "value": 1.0},
            {"visitorId": "A", "contentId": "c", "value": 1.0}]
    parsed = _parse_bigquery_rows(rows, session_key=True)
    assert parsed.rows.column("visitorId").to_pylist() == [b"A\x1f12"]
    assert [reason for _, reason in parsed.rejects] == [
        "separator_in_user_id", "empty_user_id", "empty_user_id"]
    assert _parse_bigquery_rows(rows[3:]).rows.num_rows == 1  # plain keys: as before


@pytest.mark.parametrize("kill_at", ["publish:swapping", "publish:swapped"])
def test_killed_publish_leaves_cooc_wholly_old_or_wholly_new(tmp_path, kill_at):
    """kill -9 inside the cooc stage's publish: cooc/ is the previous run's, complete, or the new
    one's, complete (never a mix); a plain rerun then publishes the new run."""
    import json
    import os
    import subprocess
    import sys

    def run_stage(rows, kill=None):
        data = tmp_path / "i.csv"
        data.write_text("user_id,item_id,rating\n" + "".join(f"{v},{i},1\n" for v, i in rows))
        env = {k: v for k, v in os.environ.items() if k != "GA_WALS_KILL_AT"}
        if kill:
            env["GA_WALS_KILL_AT"] = kill
        return subprocess.run([sys.executable, "-m", "pipeline.cooc", "--source", "interactions",
                               "--input", str(data), "--output_dir", str(tmp_path / "out"),
                               "--overwrite", "--pmi_min_count", "1", "--pmi_embedding_dim", "0"],
                              env=env, capture_output=True, text=True, timeout=300)

    def state():
        folder = tmp_path / "out" / "cooc"
        manifest = json.loads((folder / "manifest.json").read_text())
        lines = sorted(line for p in folder.glob("pmi_similar_items-*")
                       for line in p.read_text().splitlines())
        return manifest["groups"], lines

    old_rows = [(f"v{n}", f"a{(n + m) % 5}") for n in range(10) for m in range(2)]
    new_rows = [(f"w{n}", f"b{(n + m) % 7}") for n in range(12) for m in range(3)]
    assert run_stage(old_rows).returncode == 0
    old = state()
    killed = run_stage(new_rows, kill_at)
    assert killed.returncode == -9, killed.stderr[-2000:]
    after = state()
    assert run_stage(new_rows).returncode == 0
    new = state()
    assert old != new and after in (old, new)
