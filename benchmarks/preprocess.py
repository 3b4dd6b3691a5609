"""Benchmark: the preprocess stage vs a straightforward pandas + tf.train.Example reference.

`python -m benchmarks.preprocess [--rows 1000000,4000000,8000000 --users 100000 --items 10000]`
writes a Zipf interactions file per size, then times fresh Python processes on it, alternating
for --rounds rounds: `python -m pipeline.preprocess --source interactions` (all of it: imports, Beam
start-up, TFT analysis, both group-bys, writing), the straightforward reference (pandas read and
group-by, one tf.train.Example per record built with the protobuf API, tf.io.TFRecordWriter) and,
for context, the fast pandas+numpy reference (`benchmarks/preprocess_reference.py`). Every process
is timed launch to exit (interpreter start-up and imports count on all sides), and its peak RSS is
read from wait4. For each size it prints the stage / straightforward ratio (min and median over
rounds: the min pairs the least disturbed runs), the memory ratio and the fast reference's ratio;
across sizes, the seconds per million rows and per extra million rows. Outputs are compared
exactly: counts, median, both vocabularies in order, and every Example of both sides (bytes, else
canonical bytes: protobuf's map order may vary). Timings on a shared machine are noisy: compare
the ratios.
"""
import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import pandas as pd
import tensorflow as tf

from benchmarks.preprocess_reference import fast_reference as pandas_reference  # noqa: F401 (old name)
from benchmarks.processes import timed_process

LOG = logging.getLogger("benchmarks.preprocess")
TIME_TARGET, MEMORY_TARGET, FLAT_TARGET = 1.0, 1.2, 0.15  # FLAT: marginal s/M may grow <= 15 %


def write_interactions(path: str, rows: int, users: int, items: int, seed: int) -> None:
    """Uniform users, Zipf(1.0)-popular items, ratings 1..5; a few pairs repeat (summed)."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, items + 1)
    user = rng.integers(0, users, rows)
    item = rng.choice(items, size=rows, p=popularity / popularity.sum())
    frame = pd.DataFrame({"user_id": np.char.add("u", user.astype(str)),
                          "item_id": np.char.add("i", item.astype(str)),
                          "rating": rng.integers(1, 6, rows)})
    frame.to_csv(path, index=False)


def _records(pattern: str) -> list[bytes]:
    files = sorted(tf.io.gfile.glob(pattern))
    return sorted(r.numpy() for r in tf.data.TFRecordDataset(files)) if files else []


def _canonical(records: list[bytes]) -> list[bytes]:
    """Equal Examples, equal bytes: protobuf's own map order can vary between processes."""
    return sorted(tf.train.Example.FromString(r).SerializeToString(deterministic=True) for r in records)


def same_outputs(metadata: dict, reference: dict, stage_dir: str, ref_dir: str) -> list[str]:
    """What differs between the stage's outputs and the reference's (empty: nothing): counts,
    median, both vocabularies (order = ids) and every Example of both sides, byte for byte."""
    problems = [k for k in ("nusers", "nitems", "interactions") if metadata[k] != reference[k]]
    if metadata["rating"]["median_value"] != reference["median_value"]:
        problems.append("median_value")  # then the ratings differ too
    for name in ("vocab_users", "vocab_items"):
        with tf.io.gfile.GFile(metadata[name]) as f:
            if f.read().splitlines() != reference[name]:
                problems.append(name)
    for side in ("users_for_item", "items_for_user"):
        ours = _records(os.path.join(stage_dir, "preproc", side + "-*"))
        theirs = _records(os.path.join(ref_dir, side + "-*"))
        if ours != theirs and _canonical(ours) != _canonical(theirs):
            problems.append(side)
    return problems


def _rows_list(text: str) -> list[int]:
    return [int(float(part)) for part in text.split(",") if part]


def _label(rows: int) -> str:
    return f"{rows / 1e6:g}M" if rows >= 1_000_000 else f"{rows / 1e3:g}k"


def measure(rows: int, args, beam_argv: list[str]) -> dict:
    """Alternating rounds of the stage and the references on one generated file of `rows` rows."""
    work = os.path.join(args.work_dir, _label(rows))
    os.makedirs(work, exist_ok=True)
    data = os.path.join(work, "interactions.csv")
    started = time.time()
    write_interactions(data, rows, args.users, args.items, args.seed)
    LOG.info("wrote %d rows to %s in %.1f s (%.1f MB)", rows, data, time.time() - started,
             os.path.getsize(data) / 2**20)
    commands = {"stage": [sys.executable, "-m", "pipeline.preprocess", "--source", "interactions",
                          "--input", data, "--output_dir", os.path.join(work, "beam"), "--overwrite",
                          *beam_argv]}
    for kind in ("straightforward", "fast")[:1 if args.no_fast_reference else 2]:
        commands[kind] = [sys.executable, "-m", "benchmarks.preprocess_reference", kind, data,
                          os.path.join(work, kind)]
    runs = {name: [] for name in commands}
    for round_ in range(args.rounds):
        order = list(commands.items())
        for name, command in (order if round_ % 2 == 0 else order[::-1]):  # sides alternate
            runs[name].append(timed_process(command))
        LOG.info("%s round %d: %s", _label(rows), round_ + 1,
                 ", ".join(f"{name} {r[-1][0]:.2f} s {r[-1][1]:.0f} MB" for name, r in runs.items()))
    metadata = json.loads(runs["stage"][-1][2][runs["stage"][-1][2].index("{"):])
    problems = {}
    for name in commands.keys() - {"stage"}:
        reference = json.loads(runs[name][-1][2].strip().splitlines()[-1])
        problems[name] = same_outputs(metadata, reference, os.path.join(work, "beam"),
                                      os.path.join(work, name))
    return {"rows": rows, "interactions": metadata["interactions"], "problems": problems,
            "stage_seconds_after_imports": metadata["seconds"],
            "seconds": {name: [r[0] for r in rs] for name, rs in runs.items()},
            "rss_mb": {name: [r[1] for r in rs] for name, rs in runs.items()}}


def _ratios(ours: list, theirs: list) -> tuple[float, float]:
    """(min over rounds / min over rounds, median of the per-round ratios)."""
    return min(ours) / min(theirs), statistics.median(o / t for o, t in zip(ours, theirs))


def report_lines(result: dict) -> list[str]:
    label, seconds, rss = _label(result["rows"]), result["seconds"], result["rss_mb"]
    best, median = _ratios(seconds["stage"], seconds["straightforward"])
    n = len(seconds["stage"])
    lines = [f"{label} rows: stage {min(seconds['stage']):.2f} s vs straightforward ref "
             f"{min(seconds['straightforward']):.2f} s: {best:.2f}x (min of {n}, median {median:.2f}x), "
             f"target <= {TIME_TARGET:.1f}x — {'met' if best <= TIME_TARGET else 'MISSED'}"]
    memory = min(rss["stage"]) / min(rss["straightforward"])
    lines.append(f"{label} rows: memory {min(rss['stage']) / 1024:.2f} GB vs "
                 f"{min(rss['straightforward']) / 1024:.2f} GB: {memory:.2f}x, target <= "
                 f"{MEMORY_TARGET:.1f}x — {'met' if memory <= MEMORY_TARGET else 'MISSED'}")
    if "fast" in seconds:
        fast_best, fast_median = _ratios(seconds["stage"], seconds["fast"])
        lines.append(f"{label} rows: (context) stage vs fast numpy ref {min(seconds['fast']):.2f} s: "
                     f"{fast_best:.2f}x (median {fast_median:.2f}x), memory "
                     f"{min(rss['stage']) / min(rss['fast']):.2f}x")
    return lines


def scaling_lines(results: list[dict]) -> list[str]:
    """Seconds per million rows at each size, and per extra million between sizes (the marginal
    cost, without the fixed imports): flat when no later step costs > FLAT_TARGET more."""
    if len(results) < 2:
        return []
    sizes = [r["rows"] for r in results]
    best = [min(r["seconds"]["stage"]) for r in results]
    reference = [min(r["seconds"]["straightforward"]) for r in results]
    per_million = ", ".join(f"{s / (n / 1e6):.2f}" for s, n in zip(best, sizes))
    marginal = [(b1 - b0) / ((n1 - n0) / 1e6) for b0, b1, n0, n1 in zip(best, best[1:], sizes, sizes[1:])]
    ref_marginal = [(b1 - b0) / ((n1 - n0) / 1e6)
                    for b0, b1, n0, n1 in zip(reference, reference[1:], sizes, sizes[1:])]
    steps = [f"{_label(n0)}→{_label(n1)}" for n0, n1 in zip(sizes, sizes[1:])]
    growth = max(marginal) / marginal[0] - 1 if marginal[0] > 0 else float("inf")
    flat = growth <= FLAT_TARGET
    return [f"per million rows {_label(sizes[0])}→{_label(sizes[-1])}: {per_million} s/M "
            f"(stage, launch to exit)",
            "per extra million rows " + ", ".join(f"{s}: {m:.2f} s/M" for s, m in zip(steps, marginal))
            + f" (straightforward ref: {', '.join(f'{m:.2f}' for m in ref_marginal)}) — "
            + f"{'flat' if flat else 'NOT flat'}: grows {100 * growth:+.0f}%, target <= "
            + f"+{100 * FLAT_TARGET:.0f}%"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=_rows_list, default=[1_000_000],
                        help="Comma-separated sizes, e.g. 1000000,4000000,8000000 (1e6 works).")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3,
                        help="Alternating rounds of fresh processes per size (min and median).")
    parser.add_argument("--no_fast_reference", action="store_true",
                        help="Skip the fast numpy reference (context only).")
    parser.add_argument("--work_dir", default=None, help="default: a fresh temp dir")
    args, beam_argv = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args.work_dir = args.work_dir or tempfile.mkdtemp(prefix="bench_preprocess_")
    results = [measure(rows, args, beam_argv) for rows in args.rows]
    lines = [line for result in results for line in report_lines(result)] + scaling_lines(results)
    print(json.dumps({"results": results, "work_dir": args.work_dir}, indent=1))
    print("\n".join(lines))
    bad = {f"{_label(r['rows'])} vs {name}": p for r in results for name, p in r["problems"].items() if p}
    if bad:
        raise SystemExit(f"outputs differ: {bad}")
    print("outputs identical to the references at every size")


if __name__ == "__main__":
    main()
