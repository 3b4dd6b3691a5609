"""Benchmark: the preprocess stage vs a pandas+numpy reference writing the same TFRecords.

`python -m benchmarks.preprocess [--rows 1000000 --users 100000 --items 10000]` writes a Zipf
interactions file, then times two fresh Python processes on it, alternating for --rounds rounds:
`python -m pipeline.preprocess --source interactions` (all of it: imports, Beam start-up, TFT
analysis, both group-bys, writing) and the pandas+numpy reference writing the same TFRecords and
vocabularies. Both are timed the same way, launch to exit, so interpreter start-up and imports count
on both sides (TensorFlow's import alone is ~3 s); the ratio of the best rounds is the target
figure. It also prints the after-import figures: the stage's own seconds vs the reference function
alone. The comparison of outputs is exact: counts, median, both vocabularies in order, and every
Example of both sides (bytes, else canonical bytes). Timings on a shared machine are noisy:
compare the ratio.
"""
import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd
import tensorflow as tf

from benchmarks.processes import timed_process  # noqa: F401 (used below and re-exported)
from pipeline.examples import serialized_examples  # the same Example encoding on both sides

LOG = logging.getLogger("benchmarks.preprocess")


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


def pandas_reference(path: str, out_dir: str, scale: float = 0.3) -> dict:
    """Same outputs as the stage (vocabularies by descending frequency, median rating scale)."""
    frame = pd.read_csv(path, dtype={"user_id": str, "item_id": str},
                        usecols=["user_id", "item_id", "rating"])
    frame["rating"] = pd.to_numeric(frame["rating"], errors="coerce")
    frame = frame[np.isfinite(frame["rating"]) & (frame["rating"] >= 0)]
    sums = frame.groupby(["user_id", "item_id"], sort=False)["rating"].sum()
    sums = sums[sums > 0].reset_index()
    vocabs = {}
    for column in ("user_id", "item_id"):
        counts = sums[column].value_counts()
        # TFT's order: frequency descending, ties by token descending.
        vocab = counts.reset_index().sort_values(["count", column], ascending=False)[column]
        vocabs[column] = pd.Index(vocab.to_numpy())
    user_ids = vocabs["user_id"].get_indexer(sums["user_id"])
    item_ids = vocabs["item_id"].get_indexer(sums["item_id"])
    value = sums["rating"].to_numpy(np.float32)
    median = float(np.median(value))
    rating = np.minimum(scale * value / median, 1.0).astype(np.float32)
    for name, keys, indices in (("users_for_item", item_ids, user_ids),
                                ("items_for_user", user_ids, item_ids)):
        with tf.io.TFRecordWriter(os.path.join(out_dir, name + "-00000-of-00001")) as writer:
            for record in serialized_examples(keys, indices, rating):
                writer.write(record)
    return {"nusers": len(vocabs["user_id"]), "nitems": len(vocabs["item_id"]),
            "interactions": len(sums), "median_value": median,
            "vocab_users": vocabs["user_id"].tolist(), "vocab_items": vocabs["item_id"].tolist()}


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


def run_reference(data: str, ref_dir: str) -> None:
    """The reference as its own process: prints its summary (and in-process seconds) as JSON."""
    started = time.perf_counter()
    reference = pandas_reference(data, ref_dir)
    reference["compute_seconds"] = time.perf_counter() - started
    print(json.dumps(reference))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=2,
                        help="Alternating rounds; the best (least disturbed) of each side counts.")
    parser.add_argument("--work_dir", default=None, help="default: a fresh temp dir")
    parser.add_argument("--reference_only", nargs=2, metavar=("DATA", "OUT_DIR"),
                        help=argparse.SUPPRESS)  # internal: the reference's own process
    args, beam_argv = parser.parse_known_args(argv)
    if args.reference_only:
        return run_reference(*args.reference_only)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    work = args.work_dir or tempfile.mkdtemp(prefix="bench_preprocess_")
    os.makedirs(work, exist_ok=True)
    data = os.path.join(work, "interactions.csv")
    started = time.time()
    write_interactions(data, args.rows, args.users, args.items, args.seed)
    LOG.info("wrote %d rows to %s in %.1f s (%.1f MB)", args.rows, data, time.time() - started,
             os.path.getsize(data) / 2**20)

    ref_dir = os.path.join(work, "pandas")
    os.makedirs(ref_dir, exist_ok=True)
    stage_cmd = [sys.executable, "-m", "pipeline.preprocess", "--source", "interactions",
                 "--input", data, "--output_dir", os.path.join(work, "beam"), "--overwrite",
                 *beam_argv]
    reference_cmd = [sys.executable, "-m", "benchmarks.preprocess", "--reference_only", data, ref_dir]
    beam, pandas = [], []
    for round_ in range(args.rounds):
        beam.append(timed_process(stage_cmd))
        pandas.append(timed_process(reference_cmd))
        LOG.info("round %d: stage %.2f s, reference %.2f s", round_ + 1, beam[-1][0], pandas[-1][0])
    beam_seconds, beam_rss, stage_out = min(beam)
    pandas_seconds, pandas_rss, reference_out = min(pandas)
    metadata = json.loads(stage_out[stage_out.index("{"):])
    reference = json.loads(reference_out.strip().splitlines()[-1])

    problems = same_outputs(metadata, reference, os.path.join(work, "beam"), ref_dir)
    result = {
        "rows": args.rows, "interactions": metadata["interactions"], "rounds": args.rounds,
        # the target figure: both sides as fresh processes, launch to exit
        "beam_seconds": round(beam_seconds, 2), "pandas_seconds": round(pandas_seconds, 2),
        "ratio_beam_over_pandas": round(beam_seconds / pandas_seconds, 2),
        "beam_rows_per_s": round(args.rows / beam_seconds),
        "pandas_rows_per_s": round(args.rows / pandas_seconds),
        "beam_peak_rss_mb": round(beam_rss), "pandas_peak_rss_mb": round(pandas_rss),
        # after imports: the stage's own seconds (build + run the pipeline, write metadata) vs
        # the reference function alone
        "beam_stage_seconds": metadata["seconds"],
        "pandas_compute_seconds": round(reference["compute_seconds"], 2),
        "ratio_after_imports": round(metadata["seconds"] / reference["compute_seconds"], 2),
        "rounds_seconds": {"beam": [round(b[0], 2) for b in beam],
                           "pandas": [round(p[0], 2) for p in pandas]},
        "same_outputs": not problems, "work_dir": work,
    }
    print(json.dumps(result, indent=2))
    if problems:
        raise SystemExit(f"outputs differ in {problems}: stage {metadata['rating']} vs reference "
                         f"median {reference['median_value']}")


if __name__ == "__main__":
    main()
