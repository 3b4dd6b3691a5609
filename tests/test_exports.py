"""The text exporters (stagekit/textfile.py, batch_predict/outputs.py, the vocabulary writer)
against straightforward line-by-line reference implementations, on small data with awkward ids.

Where the format fixes every byte (TAB lines, scores JSONL, popular_items.txt, vocabularies) the
files must be byte-identical to the reference; where only the number format is free (embeddings,
factor CSV: shortest float32 form) the ids must read back exactly and the values as the same
float32, read the standard way (json, csv).
"""
import csv
import io
import json

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batch_predict import outputs as out
from batch_predict.topk import TopKBlock
from stagekit import textfile
from pipeline.sources import ga
from transforms import vocabulary

# ids the inputs accept (no comma, TAB or line break), with the awkward ones of test_id_roundtrip
AWKWARD = ["plain", " leading and trailing ", 'quote"inside', '"fully quoted"', "back\\slash",
           "semi;colon", "nul\x00byte", "\ufeffbom", "emoji 🙂", "אבג rtl", "nbsp\u00a0x", "über",
           "x" * 200, "=formula", "1234567890.1234567890", "ctrl\x01\x1f\x7f", "'single'"]
ACCEPTED_ID = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=10).filter(
    lambda s: ga.id_separator_reason("user_id", s) is None)
ANY_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=10)


def read_bytes(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


# ---- references: one line at a time, the obvious way -------------------------------------------

def reference_topk(blocks, query_vocab, candidate_vocab):
    lines, records = [], []
    for block in blocks:
        for query, candidates, scores in block.rows():
            names = [candidate_vocab[c] for c in candidates.tolist()]
            lines.append(f"{query_vocab[query]}\t{','.join(names)}\n")
            records.append(json.dumps({"id": query_vocab[query], "ids": names,
                                       "scores": [float(s) for s in scores.tolist()]}) + "\n")
    return "".join(lines).encode("utf-8"), "".join(records).encode("utf-8")


def random_blocks(nrows, ncandidates, k, block_size, seed):
    """Best first, with short rows, empty rows and a hole (-inf) in the middle of a row."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, ncandidates, (nrows, k))
    scores = -np.sort(-rng.standard_normal((nrows, k)).astype(np.float32), axis=1)
    scores[rng.random(nrows) < 0.3, k // 2:] = -np.inf
    scores[rng.random(nrows) < 0.1] = -np.inf
    scores[0, 1] = -np.inf
    scores[min(1, nrows - 1), 0] = 1.0  # integral: '1.0' in JSON, as json.dumps writes it
    return [TopKBlock(s, ids[s:s + block_size], scores[s:s + block_size])
            for s in range(0, nrows, block_size)]


def read_csv_rows(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


def awkward_factors(n, k=5, seed=0):
    rng = np.random.default_rng(seed)
    factors = (rng.standard_normal((n, k)) * 10.0 ** rng.integers(-9, 9, (n, k))).astype(np.float32)
    factors.ravel()[:5] = [0.0, -0.0, 1.0, 3e8, 1e-45]  # 1e-45: the smallest subnormal
    return factors


# ---- top-k lines (batch_pred, users_for_item, similar_items, fold-in; the Beam job's lines) -----

@pytest.mark.parametrize("block_size", [1, 4, 64])
def test_topk_lines_and_scores_are_byte_identical_to_the_reference(tmp_path, block_size):
    users = AWKWARD + [f"u{i}" for i in range(20)]
    items = list(reversed(AWKWARD))
    blocks = random_blocks(len(users), len(items), 4, block_size, seed=block_size)
    lines, scores = tmp_path / "batch_pred", tmp_path / "scores.jsonl"
    assert out.write_topk(blocks, users, items, str(lines), str(scores)) == len(users)
    assert (read_bytes(lines), read_bytes(scores)) == reference_topk(blocks, users, items)
    assert out.write_topk(blocks, users, items, str(tmp_path / "alone")) == len(users)
    assert read_bytes(tmp_path / "alone") == read_bytes(lines)


def test_topk_of_no_rows_writes_empty_files(tmp_path):
    assert out.write_topk([], ["a"], ["b"], str(tmp_path / "l"), str(tmp_path / "s")) == 0
    assert read_bytes(tmp_path / "l") == read_bytes(tmp_path / "s") == b""


@settings(max_examples=60, deadline=None)
@given(users=st.lists(ACCEPTED_ID, min_size=1, max_size=6, unique=True),
       items=st.lists(ACCEPTED_ID, min_size=1, max_size=6, unique=True))
def test_topk_formatter_matches_the_reference_on_any_accepted_ids(users, items):
    blocks = random_blocks(len(users), len(items), 3, 2, seed=len(users) * 7 + len(items))
    formatter = out.TopKFormatter(users, items, scores=True)
    formatted = [formatter.lines(block) for block in blocks]
    got = tuple(b"".join(textfile.data(part[i]) for part in formatted) for i in (0, 1))
    assert got == reference_topk(blocks, users, items)
    for line in got[0].decode("utf-8").split("\n")[:-1]:  # and reads back split on TAB and ','
        query, candidates = line.split("\t")
        assert query in users and all(c in items for c in candidates.split(",") if candidates)


# ---- embeddings and factor CSV ------------------------------------------------------------------

def test_embeddings_read_back_ids_and_float32_values_exactly(tmp_path):
    factors = awkward_factors(len(AWKWARD))
    path = tmp_path / "embeddings.json"
    assert out.write_embeddings(str(path), AWKWARD, factors) == len(AWKWARD)
    text = read_bytes(path).decode("utf-8")
    records = [json.loads(line) for line in text.split("\n")[:-1]]
    assert [r["id"] for r in records] == AWKWARD
    np.testing.assert_array_equal(np.array([r["embedding"] for r in records], np.float32), factors)
    for vid, line in zip(AWKWARD, text.split("\n")):  # the layout json.dumps gives the id
        assert line.startswith('{"id": ' + json.dumps(vid) + ', "embedding": [') and line.endswith("]}")


@pytest.mark.parametrize("ids", [AWKWARD, [f"{i}.{i * 7}" for i in range(30)]],
                         ids=["awkward", "ga-like"])
def test_factor_csv_reads_back_ids_and_float32_values_exactly(tmp_path, ids):
    factors = awkward_factors(len(ids), k=3)
    path = tmp_path / "factors.csv"
    assert out.write_factors_csv(str(path), ids, factors) == len(ids)
    rows = read_csv_rows(path)
    assert rows[0] == ["id", "f0", "f1", "f2"] and [r[0] for r in rows[1:]] == ids
    np.testing.assert_array_equal(np.array([r[1:] for r in rows[1:]], np.float32), factors)
    # unquoted unless it holds a quote, as the csv module writes a field
    lines = read_bytes(path).decode("utf-8").split("\n")[1:-1]
    for vid, line in zip(ids, lines):
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow([vid])
        assert line.startswith(buffer.getvalue()[:-1] + ",")


def test_factor_rows_span_several_chunks(tmp_path, monkeypatch):
    factors = awkward_factors(50, k=4, seed=3)
    ids = [f"v{i}" for i in range(50)]
    monkeypatch.setattr(textfile, "CHUNK_NUMBERS", 12)  # 3 rows per chunk
    out.write_factors_csv(str(tmp_path / "f.csv"), ids, factors)
    rows = read_csv_rows(tmp_path / "f.csv")
    assert [r[0] for r in rows[1:]] == ids
    np.testing.assert_array_equal(np.array([r[1:] for r in rows[1:]], np.float32), factors)


@settings(max_examples=60, deadline=None)
@given(values=st.lists(ANY_TEXT, min_size=1, max_size=8))
def test_csv_and_json_fields_read_back_any_text(values):
    fields = textfile.csv_fields(values).to_pylist()
    assert next(csv.reader([",".join(fields)])) == values
    assert [json.loads(v) for v in textfile.json_strings(values).to_pylist()] == values
    assert textfile.json_strings(values).to_pylist() == [json.dumps(v) for v in values]


# ---- popular items and vocabularies -------------------------------------------------------------

def test_popular_items_are_byte_identical_to_the_reference(tmp_path):
    counts = np.array([3, 5, 5, 0, 1, 2, 9, 9, 1, 0, 12, 4, 4, 4, 7, 6, 2], np.int64)
    out.write_popular(str(tmp_path / "p.txt"), AWKWARD, counts)
    order = sorted(range(len(counts)), key=lambda j: (-counts[j], j))
    reference = "".join(f"{AWKWARD[j]}\t{int(counts[j])}\n" for j in order).encode("utf-8")
    assert read_bytes(tmp_path / "p.txt") == reference


def test_vocabulary_file_is_byte_identical_to_the_reference(tmp_path):
    tokens = [t.encode("utf-8") for t in AWKWARD] + [b"", b"line\nbreak", b"cr\rx", b"\xff\xfe"]
    counts = np.random.default_rng(1).integers(1, 4, len(tokens))
    table = pa.table({"token": pa.array(tokens, pa.binary()), "count": counts.astype(np.int64)})
    path = str(tmp_path / "vocab_users")
    vocabulary._write_vocabulary([table.slice(0, 7), table.slice(7)], path)
    ordered = sorted(zip(counts.tolist(), tokens), reverse=True)  # count desc, then token desc
    kept = [t for _, t in ordered if t and b"\n" not in t and b"\r" not in t]
    assert read_bytes(path) == b"".join(t + b"\n" for t in kept)


def test_json_floats_are_what_json_dumps_writes():
    rng = np.random.default_rng(5)
    edges = np.array([1e-4, 1e10, 1.0, 0.0, 1e16, 5e-324, 1.7976931348623157e308])
    with np.errstate(over="ignore"):
        edges = np.concatenate([edges, np.nextafter(edges, 0), np.nextafter(edges, np.inf)])
    values = np.concatenate([
        edges, -edges, [np.nan, np.inf, -np.inf],
        rng.integers(0, 2**64, 100_000, dtype=np.uint64).view(np.float64),  # any bit pattern
        rng.uniform(-3, 3, 50_000) * 10.0 ** rng.integers(-12, 14, 50_000),
        rng.standard_normal(20_000).astype(np.float32),                       # scores: float32s
        rng.integers(-10**6, 10**6, 5_000).astype(np.float64)])               # integral
    assert textfile.json_floats(values).to_pylist() == [json.dumps(v) for v in values.tolist()]


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.floats(), min_size=1, max_size=20))
def test_json_floats_match_json_dumps_on_any_floats(values):
    assert textfile.json_floats(np.array(values)).to_pylist() == [json.dumps(v) for v in values]


def test_a_vocabulary_of_only_unwritable_tokens_gets_the_placeholder(tmp_path):
    table = pa.table({"token": pa.array([b"", b"a\nb"], pa.binary()), "count": [2, 1]})
    path = str(tmp_path / "vocab_items")
    vocabulary._write_vocabulary([table], path)
    assert read_bytes(path) == vocabulary._EMPTY_VOCABULARY_TOKEN + b"\n"
