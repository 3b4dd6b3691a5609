"""--warm_start_from: a previous model's factors as today's starting point.

Every model dir carries copies of the vocabularies it was trained with (`vocab_users`,
`vocab_items`, written by `save_vocabularies`), because the preproc folder it came from is
replaced by the next preprocess run. Factors are matched by *original* id through both runs'
vocabularies; users and items new today start as a cold run does (user factors 0, item factors
seeded N(0, (init_scale/√k)²)). The exact solver computes user factors from item factors, so
the item factors carry the warm start; CG also starts each user from their previous factor.
"""
from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf

from stagekit.artifacts import (VOCAB_ITEMS, VOCAB_USERS, exists, join, read_json, read_npy,
                                read_vocabulary, vocab_path)
from factorization import wals

LOG = logging.getLogger(__name__)


def check(args) -> None:
    """--warm_start_from before any work: a model of the same k must be there; with
    --warm_start_optional, a missing or different model means a cold start, with a warning."""
    if getattr(args, "warm_start_from", None) and not exists(join(args.warm_start_from, "model.json")):
        if not getattr(args, "warm_start_optional", False):
            raise ValueError(f"--warm_start_from {args.warm_start_from}: no model.json there "
                             "(not a trained model dir)")
        LOG.warning("train: no model in %s to warm start from (--warm_start_optional): "
                    "starting cold", args.warm_start_from)
        args.warm_start_from = None
    if getattr(args, "warm_start_from", None):
        previous_k = read_json(join(args.warm_start_from, "model.json")).get("n_embeds")
        if previous_k not in (None, args.n_embeds):
            if not getattr(args, "warm_start_optional", False):
                raise ValueError(f"--warm_start_from {args.warm_start_from} has k={previous_k} "
                                 f"factors, this run --n_embeds {args.n_embeds}: warm start "
                                 "needs the same k")
            LOG.warning("train: %s has k=%s, this run k=%d (--warm_start_optional): starting "
                        "cold", args.warm_start_from, previous_k, args.n_embeds)
            args.warm_start_from = None


def save_vocabularies(preproc_dir: str, metadata: dict, model_dir: str) -> None:
    """Copies the training vocabularies into the model dir (warm start and fold-in read them)."""
    for name in (VOCAB_USERS, VOCAB_ITEMS):
        tf.io.gfile.copy(vocab_path(preproc_dir, name, metadata), join(model_dir, name),
                         overwrite=True)


def model_vocabularies(model_dir: str) -> tuple[list[str], list[str]]:
    """(users, items) a model was trained with: its own copies, else its preproc dir's."""
    model = read_json(join(model_dir, "model.json"), missing=lambda path: ValueError(
        f"--warm_start_from {model_dir}: no model.json there (not a trained model dir)"))
    vocabularies = []
    for name in (VOCAB_USERS, VOCAB_ITEMS):
        path = join(model_dir, name)
        if not exists(path) and model.get("preproc_dir"):  # models from before the copies
            path = vocab_path(model["preproc_dir"], name)
        if not exists(path):
            raise ValueError(f"--warm_start_from {model_dir}: its vocabulary {name} is gone "
                             "(neither in the model dir nor in its preproc dir)")
        vocabularies.append(read_vocabulary(path))
    return vocabularies[0], vocabularies[1]


def id_positions(ids: list[str], vocabulary: list[str]) -> np.ndarray:
    """Each original id's position in another run's `vocabulary`, -1 when absent."""
    where = {value: row for row, value in enumerate(vocabulary)}
    return np.fromiter((where.get(value, -1) for value in ids), np.int64, len(ids))


def _match(previous: np.ndarray, previous_ids: list[str], ids: list[str],
           fresh: np.ndarray) -> tuple[np.ndarray, int]:
    """Rows of `fresh` replaced by `previous` where the original id is the same; (rows, matched)."""
    if len(previous) != len(previous_ids):
        raise ValueError(f"{len(previous)} factor rows but {len(previous_ids)} vocabulary lines")
    position = id_positions(ids, previous_ids)
    known = position >= 0
    out = np.array(fresh, np.float32, copy=True)
    out[known] = previous[position[known]]
    return out, int(known.sum())


def initial_factors(model_dir: str, vocab_users: list[str], vocab_items: list[str], k: int,
                    seed: int, init_scale: float) -> tuple[tuple[np.ndarray, np.ndarray], dict]:
    """((row factors, col factors), record for model.json) to start today's training from."""
    previous_users, previous_items = model_vocabularies(model_dir)
    row_factors, col_factors = (
        read_npy(join(model_dir, name), missing=lambda path: ValueError(
            f"--warm_start_from {model_dir}: missing {path}")).astype(np.float32)
        for name in ("row_factors.npy", "col_factors.npy"))
    if row_factors.shape[1] != k or col_factors.shape[1] != k:
        raise ValueError(f"--warm_start_from {model_dir} has k={row_factors.shape[1]} factors, "
                         f"this run --n_embeds {k}: warm start needs the same k")
    rows, users_matched = _match(row_factors, previous_users, vocab_users,
                                 np.zeros((len(vocab_users), k), np.float32))
    cols, items_matched = _match(col_factors, previous_items, vocab_items,
                                 wals.initial_factors(len(vocab_items), k, seed, 1,
                                                      init_scale).numpy())
    record = {"from": model_dir, "run_id": read_json(join(model_dir, "model.json")).get("run_id"),
              "users_matched": users_matched, "users": len(vocab_users),
              "items_matched": items_matched, "items": len(vocab_items)}
    LOG.info("train: warm start from %s: %d of %d users and %d of %d items matched by id",
             model_dir, users_matched, len(vocab_users), items_matched, len(vocab_items))
    return (rows, cols), record
