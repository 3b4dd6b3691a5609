"""Batch fold-in: fresh recommendations for visitors whose items changed since the model was
trained, without retraining (factorization/fold_in.py solves their factors, item factors fixed).

    python -m batch_predict.fold_in --model_dir OUTPUT/model --preproc_dir TODAY/preproc \
        --output_dir TODAY/fold_in [--top_k 10] [--exclude_items FILE] [--include_items FILE]

TODAY/preproc is a preprocess run over recent sessions (any window; its vocabularies may differ
from the model's). Ids are matched by their original strings. A visitor is folded in when the
model has never seen them, or when today has an item of theirs (one the model knows) that the model
was not trained on (model/trained_items.npz); everyone else already has up-to-date
recommendations in the nightly batch_pred-*. A returning visitor is solved on their trained items
plus today's, so a short recent window does not erase their history. Items the model does not know are ignored (and counted). Output: batch_pred-*
lines (visitorId<TAB>contentId1,...) for the folded-in visitors only, excluding everything they
have (today's items and the trained ones), published whole with a manifest like predictions/.
"""
from __future__ import annotations

import argparse
import logging
import time

import numpy as np

from batch_predict import artifacts as art
from batch_predict import filters
from stagekit import cli
from stagekit.artifacts import VOCAB_ITEMS, VOCAB_USERS, join, read_json, read_vocabulary, vocab_path
from factorization.objective import Objective

log = logging.getLogger(__name__)


def to_fold_in(users: np.ndarray, items: np.ndarray, ratings: np.ndarray, n_today: int,
               model_user: np.ndarray, trained: tuple | None, nitems: int):
    """Who to fold in, and on what: (folded visitors [today ids], their rows' (row, item,
    rating) entries). A visitor is folded in when new to the model or when today has a
    (visitor, item) pair the model was not trained on; a returning visitor is solved on the union
    of their trained and today's entries (today's rating wins where both have the item), so a
    short recent window does not erase their history. Without trained_items.npz (older models)
    every visitor counts as changed and is solved on today's entries."""
    today_codes = users * nitems + items
    if trained is None:
        folded = np.arange(n_today)
        union = (users, items, ratings)
    else:
        to_today = np.full(max(int(model_user.max(initial=-1)) + 1, 1), -1, np.int64)
        to_today[model_user[model_user >= 0]] = np.flatnonzero(model_user >= 0)
        t_users, t_items, t_ratings = trained
        t_users = np.where(t_users < len(to_today), to_today[np.minimum(t_users, len(to_today) - 1)], -1)
        here = t_users >= 0                           # trained visitors absent today: not ours
        t_codes = t_users[here] * nitems + t_items[here]
        new_pair = ~np.isin(today_codes, t_codes)
        changed = model_user < 0
        changed[users[new_pair]] = True
        folded = np.flatnonzero(changed)
        codes = np.concatenate([today_codes, t_codes])  # today first: its rating wins
        all_ratings = np.concatenate([ratings, t_ratings[here]])
        codes, first = np.unique(codes, return_index=True)
        union = (codes // nitems, codes % nitems, all_ratings[first])
    row_of = np.full(n_today, -1, np.int64)
    row_of[folded] = np.arange(len(folded))
    mine = row_of[union[0]] >= 0
    return folded, (row_of[union[0][mine]], union[1][mine], union[2][mine])


def run(args: argparse.Namespace) -> dict:
    # TensorFlow (input, top-k, fold-in solve, outputs): imported here, not for --help
    from batch_predict import outputs as out
    from batch_predict.topk import recommendation_scorer
    from factorization import input as wals_input
    from factorization import warm_start
    from factorization.fold_in import fold_in_factors, load_trained_entries

    started = time.time()
    filters.check_files(args)
    model = read_json(join(args.model_dir, "model.json"), missing=lambda p: art.ArtifactError(
        f"missing file {p}: --model_dir must be a trained model dir"))
    col_factors = art.read_factors(join(args.model_dir, "col_factors.npy"))
    model_users, model_items = warm_start.model_vocabularies(args.model_dir)
    matrix, metadata = wals_input.load_matrix(args.preproc_dir, 1024)
    today_users, today_items = (read_vocabulary(vocab_path(args.preproc_dir, name, metadata))
                                for name in (VOCAB_USERS, VOCAB_ITEMS))
    item_position = warm_start.id_positions(today_items, model_items)
    known = item_position[matrix.items] >= 0
    users, items, ratings = matrix.users[known], item_position[matrix.items[known]], matrix.ratings[known]
    model_user = warm_start.id_positions(today_users, model_users)
    trained = load_trained_entries(args.model_dir, float(model.get("fold_in_rating", 1.0)))
    folded, (rows, row_items, row_ratings) = to_fold_in(users, items, ratings, matrix.nusers,
                                                        model_user, trained, len(model_items))
    item_counts = np.bincount(trained[1] if trained is not None else items,
                              minlength=len(model_items))
    factors = fold_in_factors(col_factors, rows, row_items, row_ratings, len(folded),
                              Objective.from_settings(model.get("hyperparameters", {})),
                              item_counts)
    # everything they have is excluded
    seen = art.SeenMatrix.from_pairs(rows, row_items, len(folded), len(model_items))
    left_out = filters.filtered_items(args, model_items)
    staging = out.Staging(args.output_dir, args.overwrite)
    try:
        scorer = recommendation_scorer(factors, col_factors, item_counts, excluded=left_out)
        rows = out.write_topk(scorer.blocks(seen, args.top_k, args.block_size),
                              [today_users[v] for v in folded], model_items,
                              staging.path(out.shard_name("batch_pred")))
        counts = {"visitors": matrix.nusers, "new": int((model_user < 0).sum()),
                  "changed": int(len(folded) - (model_user < 0).sum()),
                  "unchanged": int(matrix.nusers - len(folded)), "folded_in": int(len(folded)),
                  "interactions": matrix.nnz, "on_unknown_items": int((~known).sum())}
        files = staging.commit({"rows": {"batch_pred": rows}, "fold_in": counts,
                                "model_run_id": model.get("run_id"),
                                "preproc_run_id": metadata.get("run_id")})
    except BaseException:
        staging.abort()
        raise
    seconds = time.time() - started
    log.info("fold_in: %(visitors)d visitors = %(new)d new + %(changed)d changed + %(unchanged)d "
             "unchanged; %(folded_in)d folded in; %(on_unknown_items)d of %(interactions)d "
             "interactions on items the model does not know (ignored)", counts)
    log.info("fold_in: %d lines in %.2fs", rows, seconds)
    return {**counts, "rows": rows, "files": files, "seconds": round(seconds, 3)}


def add_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("fold-in")
    group.add_argument("--block_size", type=int, default=2048,
                       help="Visitors scored per matrix product (memory ~ block_size x catalog).")
    group.add_argument("--exclude_items", default=None, metavar="FILE",
                       help="contentIds never to recommend, one a line (local or gs://).")
    group.add_argument("--include_items", default=None, metavar="FILE",
                       help="contentIds that alone may be recommended, one a line.")


def build_parser() -> argparse.ArgumentParser:
    return cli.stage_parser(
        "python -m batch_predict.fold_in", __doc__,
        {"--model_dir": "trained model/ folder (local or gs://).",
         "--preproc_dir": "preproc/ folder of recent sessions (local or gs://).",
         "--output_dir": "folder to write (batch_pred-* of the folded-in visitors)."},
        add_args)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format=cli.LOG_FORMAT)
    args = build_parser().parse_args(argv)
    try:
        cli.check_range(args, "top_k", 1)
        cli.check_range(args, "block_size", 1)
        run(args)
    except (art.ArtifactError, ValueError) as exc:
        log.error("fold_in: %s", exc)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
