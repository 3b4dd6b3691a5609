"""The key-remapping input_fn and the preproc-dir consistency checks."""
import json
import os

import numpy as np
import pytest

from tests.trainer_fixtures import example, write_preproc, write_records
from factorization import input as wals_input


def batches_as_lists(dataset):
    out = []
    for keys, sparse in dataset:
        out.append((keys.numpy().tolist(), sparse.indices.numpy().tolist(),
                    [round(float(v), 4) for v in sparse.values.numpy()], sparse.dense_shape.numpy().tolist()))
    return out


def test_batches_are_remapped_to_keys_with_partial_last_batch_and_empty_rows(tmp_path):
    path = str(tmp_path / "items_for_user-00000-of-00001")
    write_records(path, [example(4, [0, 2], [0.5, 0.25]),
                         example(1, [], []),                   # empty row
                         example(3, [1], [1.0]),
                         example(0, [2, 3, 4], [0.1, 0.2, 0.3]),
                         example(2, [], [])])                  # empty row alone in last batch
    got = batches_as_lists(wals_input.make_dataset([path], n_rows=5, n_cols=6, batch_size=2))
    assert got == [
        ([4, 1], [[4, 0], [4, 2]], [0.5, 0.25], [5, 6]),
        ([3, 0], [[3, 1], [0, 2], [0, 3], [0, 4]], [1.0, 0.1, 0.2, 0.3], [5, 6]),
        ([2], [], [], [5, 6]),
    ]


def test_gzip_and_plain_shards_are_both_read(tmp_path):
    plain = str(tmp_path / "rows-0")
    packed = str(tmp_path / "rows-1.gz")
    write_records(plain, [example(0, [1], [0.5])])
    write_records(packed, [example(1, [0, 1], [0.2, 0.3])])
    got = batches_as_lists(wals_input.make_dataset([plain, packed], 2, 2, batch_size=8))
    rows = sorted(index for batch in got for index in batch[1])
    assert rows == [[0, 1], [1, 0], [1, 1]]


def small_matrix():
    users = np.array([0, 0, 1, 2, 2, 2, 4])
    items = np.array([0, 3, 1, 0, 1, 2, 3])
    ratings = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    return users, items, ratings


@pytest.mark.parametrize("gz", [False, True])
def test_load_matrix_reads_both_sides(tmp_path, gz):
    users, items, ratings = small_matrix()
    root = write_preproc(str(tmp_path / "p"), users, items, ratings, nusers=5, nitems=4, gz=gz)
    matrix, metadata = wals_input.load_matrix(root, batch_size=2)
    assert (matrix.nusers, matrix.nitems, matrix.nnz) == (5, 4, 7)
    got = sorted(zip(matrix.users.tolist(), matrix.items.tolist(), [round(float(r), 4) for r in matrix.ratings]))
    assert got == sorted(zip(users.tolist(), items.tolist(), ratings.tolist()))
    assert metadata["interactions"] == 7


def test_vocab_size_mismatch_is_a_clear_error(tmp_path):
    users, items, ratings = small_matrix()
    root = write_preproc(str(tmp_path / "p"), users, items, ratings, 5, 4, metadata={"nusers": 6})
    with pytest.raises(ValueError, match="nusers=6 but .*vocab_users has 5 lines"):
        wals_input.load_matrix(root)


def test_record_ids_beyond_vocabulary_are_a_clear_error(tmp_path):
    users, items, ratings = small_matrix()
    root = write_preproc(str(tmp_path / "p"), users, items, ratings, 5, 4)
    # Shrink the item vocabulary (and metadata) so item 3 in the records is out of range.
    with open(os.path.join(root, "transform_fn", "assets", "vocab_items"), "w") as handle:
        handle.write("a\nb\nc\n")
    meta_path = os.path.join(root, "metadata.json")
    meta = json.load(open(meta_path))
    json.dump({**meta, "nitems": 3}, open(meta_path, "w"))
    with pytest.raises(ValueError, match=r"outside \[0, 3\).*do not match"):
        wals_input.load_matrix(root)


def test_interaction_count_mismatch_and_missing_shards(tmp_path):
    users, items, ratings = small_matrix()
    root = write_preproc(str(tmp_path / "p"), users, items, ratings, 5, 4,
                         metadata={"interactions": 8})
    with pytest.raises(ValueError, match="7 entries but metadata.json says interactions=8"):
        wals_input.load_matrix(root)
    empty = str(tmp_path / "empty")
    write_preproc(empty, users, items, ratings, 5, 4)
    for name in os.listdir(empty):
        if name.startswith("users_for_item"):
            os.remove(os.path.join(empty, name))
    with pytest.raises(ValueError, match="no TFRecord shards .*users_for_item"):
        wals_input.load_matrix(empty)


def test_length_mismatch_and_sides_disagreeing_are_errors(tmp_path):
    users, items, ratings = small_matrix()
    root = write_preproc(str(tmp_path / "p"), users, items, ratings, 5, 4, shards=1)
    write_records(os.path.join(root, "items_for_user-00000-of-00001"),
                  [example(0, [0, 3], [0.1])])
    with pytest.raises(ValueError, match="len\\(indices\\) != len\\(values\\)"):
        wals_input.load_matrix(root)
    other = write_preproc(str(tmp_path / "q"), users, items, ratings, 5, 4, shards=1)
    write_records(os.path.join(other, "users_for_item-00000-of-00001"),
                  [example(j, [0, 1], [0.1, 0.2]) for j in range(3)] + [example(3, [4], [0.7])])
    with pytest.raises(ValueError, match="describe different matrices"):
        wals_input.load_matrix(other)
