"""Business filters on what may be recommended: `--exclude_items FILE` and `--include_items FILE`
(one contentId a line, local or gs://; blank lines ignored).

An item left out by the filters is never recommended to anyone (batch_pred, the SavedModel),
never listed as similar to another item, and gets no targeting list (its users_for_item line is
empty). Lists stay k long while enough items remain: filtered items are removed before the top-k,
not after it. Ids in a file that the catalog does not have are counted and logged, not an error
(an expired article may never have been read in the window).
"""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def read_ids(path: str) -> set[str]:
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "rb") as f:
        lines = f.read().decode("utf-8").split("\n")
    return {line[:-1] if line.endswith("\r") else line for line in lines if line.strip()}


def check_files(args) -> None:
    """ValueError naming a filter file that does not exist (before any stage runs)."""
    from stagekit.artifacts import exists  # TensorFlow's gfile, imported only if a file is named

    for flag in ("exclude_items", "include_items"):
        path = getattr(args, flag, None)
        if path and not exists(path):
            raise ValueError(f"--{flag} {path}: no such file")


def filtered_items(args, vocab_items: list[str]) -> np.ndarray | None:
    """Item ids (vocabulary positions) the filters leave out, sorted; None without filters."""
    exclude_file, include_file = getattr(args, "exclude_items", None), getattr(args, "include_items", None)
    if not exclude_file and not include_file:
        return None
    catalog = set(vocab_items)
    left_out: set[str] = set()
    for flag, path in (("include_items", include_file), ("exclude_items", exclude_file)):
        if not path:
            continue
        listed = read_ids(path)
        unknown = len(listed - catalog)
        left_out |= (catalog - listed) if flag == "include_items" else (listed & catalog)
        log.info("--%s %s: %d ids, %d of them not in the catalog", flag, path, len(listed), unknown)
    position = {item: i for i, item in enumerate(vocab_items)}
    ids = np.array(sorted(position[item] for item in left_out), dtype=np.int64)
    log.info("filters: %d of %d items may not be recommended", len(ids), len(vocab_items))
    return ids
