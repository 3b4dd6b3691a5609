"""Benchmark: every text file our own code exports vs pyarrow writing the same file.

    python -m benchmarks.exports [--users 100000 --items 10000 --k 128 --top_k 10 --rounds 3]

Each export is timed through its public function (writing through tf.io.gfile, as the pipeline
does) against a pyarrow writer of the same file, on GA-like data: visitorIds such as
'1234567890.1234567890', 9-digit contentIds, float32 factors, top-k lists best first (a few
short or empty). The sides alternate over rounds (the machine is shared) and every reference file
is compared with ours byte for byte. Target: ours <= 1.5x pyarrow (min over rounds).

  export                        ours                                  pyarrow reference
  batch_pred-* (also similar_   outputs.write_topk                    pyarrow.csv.write_csv, TAB
    items-*, fold-in)                                                 delimited, ids joined by ','
  batch_pred_scores-*.jsonl     outputs.write_topk(scores_path=...)   JSON assembled with
                                  (writes both files; so does ref)    pyarrow.compute, one buffer
  users_for_item-*              outputs.write_topk                    as batch_pred
  user/item_embeddings-*.json   outputs.write_embeddings              JSON assembled with
                                                                      pyarrow.compute, one buffer
  user/item_factors.csv         outputs.write_factors_csv             pyarrow.csv.write_csv
  popular_items.txt             outputs.write_popular                 pyarrow.csv.write_csv, TAB
  vocab_users/vocab_items       transforms.vocabulary (sort + write)  same sort, pyarrow.csv.write_csv

pyarrow has no JSON writer, so the JSON references are the same lines built with arrow's string
kernels; pyarrow.csv's quoting style "none" cannot write a value holding '"' (nor the delimiter),
which GA ids never do, so the references are exact on this data only (ours handle any id).

Written by Beam's WriteToText inside a Beam pipeline, not timed here: preproc/rejected-*, and
with --engine beam batch_pred-*, users_for_item-*, *_scores-*.jsonl (lines formatted by the same
block formatter as the in-process path) and the job's dead letters.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from batch_predict import outputs as out  # noqa: E402
from batch_predict.topk import TopKBlock  # noqa: E402
from transforms import vocabulary  # noqa: E402

TARGET = 1.5
BLOCK = 2048  # batch_predict's default --block_size


@dataclasses.dataclass
class Export:
    name: str
    shape: str
    ours: Callable[[str], object]
    pyarrow: Callable[[str], object]


# ---- data ----------------------------------------------------------------------------------

def visitor_ids(n: int, rng) -> list[str]:
    """GA fullVisitorId-like: '1234567890.1234567890', unique."""
    first = rng.integers(10**9, 10**10, n)
    second = 1_400_000_000 + rng.permutation(n)  # unique
    return [f"{a}.{b}" for a, b in zip(first.tolist(), second.tolist())]


def content_ids(n: int, rng) -> list[str]:
    """9-digit article ids, unique."""
    stride = 9 * 10**8 // max(n, 1)
    ids = 10**8 + np.arange(n) * stride + rng.integers(0, stride, n)
    return [str(x) for x in rng.permutation(ids).tolist()]


def topk_blocks(nrows: int, ncandidates: int, k: int, rng) -> list[TopKBlock]:
    """Best first; 2% of rows with a short list (-inf tail), 0.1% empty (all filtered out)."""
    k = min(k, ncandidates)
    ids = rng.integers(0, ncandidates, (nrows, k))
    scores = -np.sort(-rng.uniform(0.05, 1.5, (nrows, k)).astype(np.float32), axis=1)
    short = rng.random(nrows) < 0.02
    scores[short, k // 2:] = -np.inf
    scores[rng.random(nrows) < 0.001] = -np.inf
    return [TopKBlock(s, ids[s:s + BLOCK], scores[s:s + BLOCK]) for s in range(0, nrows, BLOCK)]


def vocabulary_shards(ids: list[str], rng, shards: int = 8) -> list[pa.Table]:
    """What the vocabulary analyzer's shards hold: distinct tokens (bytes) and their counts."""
    counts = rng.zipf(1.5, len(ids)).astype(np.int64)
    table = pa.table({"token": pa.array([i.encode() for i in ids], pa.binary()), "count": counts})
    cut = np.linspace(0, len(ids), shards + 1).astype(int)
    return [table.slice(a, b - a) for a, b in zip(cut[:-1], cut[1:])]


# ---- pyarrow references ----------------------------------------------------------------------

def _write_buffer(path: str, lines: pa.Array) -> None:
    with pa.OSFile(path, "wb") as f:
        f.write(pc.binary_join_element_wise(lines, "\n", "").buffers()[2])


def _flat_topk(blocks: list[TopKBlock], query_vocab: list[str], candidate_vocab: list[str]):
    ids = np.concatenate([b.ids for b in blocks])
    scores = np.concatenate([b.scores for b in blocks])
    valid = np.isfinite(scores)
    offsets = np.concatenate([[0], np.cumsum(valid.sum(axis=1))]).astype(np.int32)
    query = pa.array(query_vocab[:len(ids)], pa.string())
    candidates = pa.array(candidate_vocab, pa.string()).take(ids[valid])
    return query, candidates, offsets, scores[valid]


def _join(offsets: np.ndarray, values: pa.Array, separator: str) -> pa.Array:
    return pc.binary_join(pa.ListArray.from_arrays(offsets, values), separator)


def arrow_topk(path: str, blocks, query_vocab, candidate_vocab, scores_path: str | None = None):
    query, candidates, offsets, scores = _flat_topk(blocks, query_vocab, candidate_vocab)
    table = pa.table({"id": query, "ids": _join(offsets, candidates, ",")})
    pa_csv.write_csv(table, path, pa_csv.WriteOptions(include_header=False, quoting_style="none",
                                                      delimiter="\t"))
    if scores_path:
        quoted = pc.binary_join_element_wise('"', candidates, '"', "")
        numbers = pc.cast(pa.array(scores.astype(np.float64)), pa.string())
        _write_buffer(scores_path, pc.binary_join_element_wise(
            '{"id": "', query, '", "ids": [', _join(offsets, quoted, ", "), '], "scores": [',
            _join(offsets, numbers, ", "), "]}", ""))


def _float_rows(factors: np.ndarray) -> pa.Array:
    numbers = pc.cast(pa.array(factors.ravel()), pa.string())
    k = factors.shape[1]
    return _join(np.arange(0, len(factors) * k + 1, k, dtype=np.int32), numbers, ",")


def arrow_embeddings(path: str, vocab: list[str], factors: np.ndarray) -> None:
    _write_buffer(path, pc.binary_join_element_wise(
        '{"id": "', pa.array(vocab, pa.string()), '", "embedding": [', _float_rows(factors), "]}", ""))


def arrow_factors_csv(path: str, vocab: list[str], factors: np.ndarray) -> None:
    table = pa.table({"id": pa.array(vocab, pa.string()),
                      **{f"f{i}": pa.array(factors[:, i]) for i in range(factors.shape[1])}})
    with pa.OSFile(path, "wb") as f:  # write_csv would quote the header's names
        f.write(",".join(table.column_names).encode() + b"\n")
        pa_csv.write_csv(table, f, pa_csv.WriteOptions(include_header=False, quoting_style="none"))


def arrow_popular(path: str, vocab: list[str], counts: np.ndarray) -> None:
    order = out.popularity_order(counts)
    table = pa.table({"id": pa.array(vocab, pa.string()).take(order), "n": counts[order]})
    pa_csv.write_csv(table, path, pa_csv.WriteOptions(include_header=False, quoting_style="none",
                                                      delimiter="\t"))


def arrow_vocabulary(path: str, tables: list[pa.Table]) -> None:
    ordered = pa.concat_tables(tables).sort_by([("count", "descending"), ("token", "descending")])
    pa_csv.write_csv(ordered.select(["token"]), path,
                     pa_csv.WriteOptions(include_header=False, quoting_style="none"))


# ---- the exports -----------------------------------------------------------------------------

def exports(args) -> list[Export]:
    rng = np.random.default_rng(args.seed)
    users, items = visitor_ids(args.users, rng), content_ids(args.items, rng)
    factors = {name: (rng.standard_normal((n, args.k)) * 0.3).astype(np.float32)
               for name, n in (("user", args.users), ("item", args.items))}
    recommend = topk_blocks(args.users, args.items, args.top_k, rng)
    target = topk_blocks(args.items, args.users, args.top_k, rng)
    counts = rng.zipf(1.3, args.items).astype(np.int64)
    result = [
        Export("batch_pred", f"{args.users}x{args.top_k}",
               lambda p: out.write_topk(recommend, users, items, p),
               lambda p: arrow_topk(p, recommend, users, items)),
        Export("batch_pred + batch_pred_scores.jsonl", f"{args.users}x{args.top_k}",
               lambda p: out.write_topk(recommend, users, items, p, p + ".jsonl"),
               lambda p: arrow_topk(p, recommend, users, items, p + ".jsonl")),
        Export("users_for_item", f"{args.items}x{args.top_k}",
               lambda p: out.write_topk(target, items, users, p),
               lambda p: arrow_topk(p, target, items, users)),
    ]
    for side, vocab in (("user", users), ("item", items)):  # one helper for both sides
        result += side_exports(side, vocab, factors[side], rng)
    result.append(Export("popular_items.txt", str(args.items),
                         lambda p: out.write_popular(p, items, counts),
                         lambda p: arrow_popular(p, items, counts)))
    return result


def side_exports(side: str, vocab: list[str], factors: np.ndarray, rng) -> list[Export]:
    shape = "x".join(map(str, factors.shape))
    shards = vocabulary_shards(vocab, rng)
    return [Export(f"{side}_embeddings.json", shape,
                   lambda p: out.write_embeddings(p, vocab, factors),
                   lambda p: arrow_embeddings(p, vocab, factors)),
            Export(f"{side}_factors.csv", shape,
                   lambda p: out.write_factors_csv(p, vocab, factors),
                   lambda p: arrow_factors_csv(p, vocab, factors)),
            Export(f"vocab_{side}s", str(len(vocab)),
                   lambda p: vocabulary._write_vocabulary(shards, p),
                   lambda p: arrow_vocabulary(p, shards))]


# ---- timing ----------------------------------------------------------------------------------

def _files(path: str) -> list[str]:
    return [p for p in (path, path + ".jsonl") if os.path.exists(p)]


def identical(ours: str, theirs: str) -> bool:
    mine, other = _files(ours), _files(theirs)
    if len(mine) != len(other):
        return False
    for a, b in zip(mine, other):
        with open(a, "rb") as fa, open(b, "rb") as fb:
            if fa.read() != fb.read():
                return False
    return True


def measure(export: Export, rounds: int, repeats: int, folder: str) -> dict:
    """Seconds of every call of each side: `rounds` rounds, sides alternating, of `repeats` calls
    each (small files take milliseconds, less than the noise of a shared machine)."""
    times = {"ours": [], "pyarrow": []}
    paths = {side: os.path.join(folder, f"{side}-{export.name.split()[0]}") for side in times}
    same = None
    for r in range(rounds):
        for side in (("ours", "pyarrow") if r % 2 == 0 else ("pyarrow", "ours")):
            for _ in range(repeats):
                started = time.perf_counter()
                getattr(export, side)(paths[side])
                times[side].append(time.perf_counter() - started)
        if same is None:
            same = identical(paths["ours"], paths["pyarrow"])
        for path in paths.values():
            for written in _files(path):
                os.remove(written)
    return {"times": times, "identical": same, "repeats": repeats}


def report_line(export: Export, measured: dict, rounds: int) -> str:
    ours, theirs = measured["times"]["ours"], measured["times"]["pyarrow"]
    ratio = min(ours) / min(theirs)
    median_ratio = statistics.median(ours) / statistics.median(theirs)
    verdict = "met" if ratio <= TARGET else "MISSED"
    same = "identical bytes" if measured["identical"] else "bytes DIFFER"
    calls = f" x {measured['repeats']} calls" if measured["repeats"] > 1 else ""
    digits = 2 if min(theirs) >= 0.05 else 4
    return (f"{export.name} {export.shape}: ours {min(ours):.{digits}f} s, pyarrow "
            f"{min(theirs):.{digits}f} s, {ratio:.2f}x (min of {rounds} rounds{calls}; median "
            f"{median_ratio:.2f}x), target <= {TARGET}x — {verdict}; {same}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=128, help="factors per id")
    parser.add_argument("--top_k", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="", help="comma-separated substrings of export names")
    args = parser.parse_args(argv)
    chosen = [e for e in exports(args)
              if not args.only or any(s in e.name for s in args.only.split(","))]
    missed = 0
    with tempfile.TemporaryDirectory() as folder:
        for export in chosen:
            for side in ("ours", "pyarrow", "ours"):  # imports, first-call costs; then timed
                started = time.perf_counter()
                getattr(export, side)(os.path.join(folder, "warm-up"))
            repeats = max(1, min(50, int(0.25 / (time.perf_counter() - started))))
            for path in _files(os.path.join(folder, "warm-up")):
                os.remove(path)
            measured = measure(export, args.rounds, repeats, folder)
            line = report_line(export, measured, args.rounds)
            missed += "MISSED" in line or not measured["identical"]
            print(line, flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
