"""Helpers for the preprocess tests: run the stage in-process, decode what it wrote."""
import argparse
import glob
import gzip
import json
import os

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from stagekit import cli
from pipeline import preprocess


def stage_args(output_dir, *argv) -> argparse.Namespace:
    """Parses flags exactly as `python -m pipeline.preprocess` does."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--output_dir")
    cli.add_shared_args(parser)
    preprocess.add_args(parser)
    return parser.parse_args(["--output_dir", str(output_dir), *argv])


def run_stage(output_dir, *argv) -> dict:
    return preprocess.run(stage_args(output_dir, *argv), [])


def write_lines(path, lines, *, gz=False, newline="\n") -> str:
    data = "".join(line + newline for line in lines).encode("utf-8")
    with (gzip.open(path, "wb") if gz else open(path, "wb")) as f:
        f.write(data)
    return str(path)


def decode_side(preproc: str, prefix: str) -> dict[int, tuple[list[int], list[float]]]:
    """{key: (indices, values)} from all `prefix-*` TFRecord shards; a key must appear once."""
    spec = {"key": tf.io.FixedLenFeature([1], tf.int64),
            "indices": tf.io.VarLenFeature(tf.int64), "values": tf.io.VarLenFeature(tf.float32)}
    out = {}
    files = sorted(glob.glob(os.path.join(preproc, prefix + "-*")))
    assert files, f"no {prefix} shards in {preproc}"
    for record in tf.data.TFRecordDataset(files):
        parsed = tf.io.parse_single_example(record, spec)
        key = int(parsed["key"].numpy()[0])
        assert key not in out, f"{prefix}: key {key} written twice"
        out[key] = (parsed["indices"].values.numpy().tolist(), parsed["values"].values.numpy().tolist())
    return out


def decode_interactions(preproc: str) -> dict[str, dict[tuple[str, str], float]]:
    """Both TFRecord sides mapped back through the TFT vocabularies: {side: {(visitor, content): rating}}."""
    output = tft.TFTransformOutput(preproc)
    users = [u.decode() for u in output.vocabulary_by_name("vocab_users")]
    items = [i.decode() for i in output.vocabulary_by_name("vocab_items")]
    sides = {}
    for prefix, key_vocab, index_vocab, flip in (("users_for_item", items, users, True),
                                                 ("items_for_user", users, items, False)):
        pairs = {}
        for key, (indices, values) in decode_side(preproc, prefix).items():
            assert indices == sorted(indices), f"{prefix}: indices of key {key} not sorted"
            assert len(indices) == len(values)
            for index, value in zip(indices, values):
                pair = (index_vocab[index], key_vocab[key]) if flip else (key_vocab[key], index_vocab[index])
                pairs[pair] = value
        sides[prefix] = pairs
    return sides


def expected_ratings(values: dict, median: float, scale: float = 0.3) -> dict:
    return {pair: min(scale * value / median, 1.0) for pair, value in values.items()}


def read_rejects(preproc: str) -> list[dict]:
    rows = []
    for path in sorted(glob.glob(os.path.join(preproc, "rejected-*"))):
        with open(path) as f:
            rows.extend(json.loads(line) for line in f if line.strip())
    return rows


def assert_median_is_learned(values: list[float], median: float) -> None:
    """tft.quantiles is approximate in rank (epsilon): the median must be a middle data value,
    read back exactly (as the float32 TFT used)."""
    ordered = np.sort(values)
    n = len(ordered)
    middle = ordered[max(0, (n - 1) // 2 - 1):n // 2 + 2].astype(np.float32)
    assert np.float32(median) == median and median in middle, (median, ordered.tolist())
