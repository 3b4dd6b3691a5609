"""The batched vocabulary analyzer (transforms/vocabulary.py) against stock TF Transform.

The default `--vocabulary_analyzer batched` must write exactly what `tft.compute_and_apply_vocabulary`
writes: same vocabulary files byte for byte (order: count descending, then token descending), hence
the same ids in every Example.
"""
import collections
import os
import random

import pytest
import tensorflow as tf

from pipeline import preprocess
from tests.preprocess_fixtures import decode_side, run_stage, write_lines
from transforms import vocabulary


@pytest.fixture(scope="module")
def both_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vocab")
    rng = random.Random(11)
    # Many count ties, ids that sort differently as bytes than as text, one id in every shard.
    users = [f"u{n}" for n in range(60)] + ["é-user", "Z", "z", "ü"]
    items = [f"item-{n}" for n in range(25)] + ["ä", "A"]
    rows = {(rng.choice(users), rng.choice(items)): rng.randint(1, 9) for _ in range(500)}
    path = write_lines(tmp / "interactions.csv",
                       ["user_id,item_id,rating"] + [f"{u},{i},{r}" for (u, i), r in rows.items()])
    runs = {}
    for analyzer in ("batched", "tft"):
        runs[analyzer] = (run_stage(tmp / analyzer, "--source", "interactions", "--input", path,
                                    "--vocabulary_analyzer", analyzer),
                          str(tmp / analyzer / "preproc"))
    return rows, runs


def _read_bytes(path: str) -> bytes:
    with tf.io.gfile.GFile(path, "rb") as f:
        return f.read()


def test_vocabulary_files_are_byte_identical_to_stock_tft(both_runs):
    rows, runs = both_runs
    (batched, _), (stock, _) = runs["batched"], runs["tft"]
    for name, column in (("vocab_users", 0), ("vocab_items", 1)):
        ours = _read_bytes(batched[name])
        assert ours == _read_bytes(stock[name])
        assert os.path.basename(batched[name]) == name  # transform_fn/assets/<name>, as stock
        counts = collections.Counter(pair[column] for pair in rows)
        expected = sorted(counts, key=lambda token: (counts[token], token.encode()), reverse=True)
        assert ours.decode().splitlines() == expected


def test_examples_are_identical_to_stock_tft(both_runs):
    _, runs = both_runs
    for side in ("users_for_item", "items_for_user"):
        assert decode_side(runs["batched"][1], side) == decode_side(runs["tft"][1], side)
    keys = ("nusers", "nitems", "interactions", "input_rows", "rejected_rows")
    assert {k: runs["batched"][0][k] for k in keys} == {k: runs["tft"][0][k] for k in keys}


def test_no_interactions_is_a_clear_refusal_not_a_crash(tmp_path):
    # Every pair sums to 0, so the analyzer sees no ids at all: like tft.vocabulary it must still
    # write a loadable file (an empty one fails TF's lookup-table init mid-run).
    path = write_lines(tmp_path / "zero.csv", ["user_id,item_id,rating", "u1,i1,0", "u2,i2,0",
                                               "u3,,1"])
    with pytest.raises(preprocess.PreprocessError, match="no interactions left"):
        run_stage(tmp_path / "out", "--source", "interactions", "--input", path,
                  "--max_rejected_fraction", "0.5")
    assert not (tmp_path / "out" / "preproc").exists()  # nothing published


def test_empty_vocabulary_gets_tfts_placeholder_token(tmp_path):
    # a lookup table cannot be initialised from an empty file; tft.vocabulary writes one dummy token
    path = str(vocabulary._write_vocabulary([], str(tmp_path / "vocab_users")))
    assert _read_bytes(path).splitlines() == [vocabulary._EMPTY_VOCABULARY_TOKEN]
