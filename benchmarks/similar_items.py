"""Benchmark: which similar-items list better predicts the next item a visitor views, WALS item
factors (cosine, as batch_predict's similar_items) or co-occurrence PMI (the cooc stage)?

    python -m benchmarks.similar_items [--datasets movielens,ga_sample] [--n 10] [--json OUT]

Each visitor's interactions in time order (MovieLens ml-latest-small by its timestamps; the
bundled GA sample by visit start + hit time, through the real GA export parser): the last one is
the held-out "next item", the one before it the query; everything before the last is training
data for both sources. For every visitor with at least two items, each source lists the `n` items
most similar to the query (the query itself excluded) and scores the next item: hit rate@n and
NDCG@n (1 / log2(rank + 2) when listed). Popularity (the `n` most frequent training items but the
query) is the floor. Both sources see exactly the same training interactions: WALS with the
trainer's defaults, PMI with the cooc stage's defaults (visitor groups capped at 50 items,
shifted positive PMI, min count 2). MovieLens is read in place (research-use licence).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np

from benchmarks import datasets
from transforms import cooccurrence


def time_ordered_split(users: np.ndarray, items: np.ndarray, times: np.ndarray):
    """(training mask, query item per user, next item per user, users evaluated): per user in
    time order, the last interaction is the next item and the one before it the query."""
    order = np.lexsort((np.arange(users.size), times, users))
    u, i = users[order], items[order]
    last = np.r_[u[1:] != u[:-1], True]                  # each user's last, in time order
    second_last = np.r_[last[1:], False] & ~last
    evaluated = u[last][np.isin(u[last], u[second_last])]
    query = dict(zip(u[second_last], i[second_last]))
    target = dict(zip(u[last], i[last]))
    train = np.ones(users.size, bool)
    train[order[last]] = False
    return train, query, target, evaluated


def pmi_neighbours(users, items, n: int) -> dict[int, list[int]]:
    """Top-n SPPMI neighbours per item from visitor groups (the cooc stage's math and defaults)."""
    groups = {}
    for user, item in zip(users.tolist(), items.tolist()):
        groups.setdefault(user, set()).add(item)
    pair_counts, item_counts = {}, {}
    for user, group in groups.items():
        kept = cooccurrence.capped_items(str(user).encode(), (str(i).encode() for i in group))
        for item in kept:
            item_counts[item] = item_counts.get(item, 0) + 1
        for pair in cooccurrence.item_pairs(kept):
            pair_counts[pair] = pair_counts.get(pair, 0) + 1
    scored = {}
    for (a, b), count in pair_counts.items():
        score = cooccurrence.sppmi(count, item_counts[a], item_counts[b], len(groups))
        if score is not None:
            scored.setdefault(a, []).append((b, score))
            scored.setdefault(b, []).append((a, score))
    return {int(item): [int(x) for x, _ in cooccurrence.top_neighbours(found, n)]
            for item, found in scored.items()}


def wals_neighbours(data, train, n: int) -> dict[int, list[int]]:
    """Top-n cosine neighbours of every item's WALS factors (trainer defaults), as batch_predict."""
    from batch_predict.artifacts import SeenMatrix
    from batch_predict.topk import similarity_scorer
    from benchmarks.models import default_args
    from factorization import wals
    settings = vars(default_args())
    solver = wals.WALS.from_settings(data.users[train], data.items[train], data.ratings[train],
                                     data.nusers, data.nitems, settings)
    for _ in range(int(settings["epochs"])):
        solver.epoch()
    scorer = similarity_scorer(solver.col_factors.numpy())
    neighbours = {}
    for block in scorer.blocks(SeenMatrix.identity(data.nitems), n, 2048):
        for item, ids, _ in block.rows():
            neighbours[item] = ids.tolist()
    return neighbours


def score(neighbours: dict, query: dict, target: dict, evaluated, n: int) -> dict:
    hits, gains = [], []
    for user in evaluated:
        listed = [x for x in neighbours.get(query[user], []) if x != query[user]][:n]
        rank = listed.index(target[user]) if target[user] in listed else None
        hits.append(rank is not None)
        gains.append(0.0 if rank is None else 1.0 / np.log2(rank + 2))
    return {f"hit@{n}": float(np.mean(hits)), f"ndcg@{n}": float(np.mean(gains)),
            "visitors": int(len(evaluated)),
            "queries_with_a_list": float(np.mean([bool(neighbours.get(query[u])) for u in evaluated]))}


def ga_sample_sequences() -> datasets.Dataset:
    """The bundled GA sample as time-ordered (visitor, content) views: each session the GA
    export parser accepts (pipeline/sources/ga.py, news preset), its contents at their first PAGE
    hit, at visit start + hit time."""
    import gzip

    from pipeline import sample
    from pipeline.sources import ga
    users, items, times, vocab_u, vocab_i = [], [], [], {}, {}
    with gzip.open(sample.SAMPLE_PATH, "rb") as lines:
        for line in lines:
            try:
                session = ga.parse_session_line(line)
                kept = {content for _, content, _ in ga.session_interactions(session)}
            except ga.RejectedRow:
                continue
            start_ms = int(session["visitStartTime"]) * 1000
            first_view = {}
            for hit in session["hits"]:
                content = (ga._content_id(hit, ga.DEFAULT_CONTENT_DIMENSION)
                           if hit.get("type") == "PAGE" else None)
                if content in kept:
                    first_view[content] = min(first_view.get(content, 1 << 62), int(hit["time"]))
            for content, time_ms in first_view.items():
                users.append(vocab_u.setdefault(session["fullVisitorId"], len(vocab_u)))
                items.append(vocab_i.setdefault(content, len(vocab_i)))
                times.append(start_ms + time_ms)
    users, items, times = (np.asarray(x, np.int64) for x in (users, items, times))
    return datasets.Dataset("ga_sample", users, items, np.ones(users.size, np.float32),
                            len(vocab_u), len(vocab_i), times)


def compare(data: datasets.Dataset, n: int) -> dict:
    train, query, target, evaluated = time_ordered_split(data.users, data.items, data.times)
    popular = np.argsort(-np.bincount(data.items[train], minlength=data.nitems), kind="stable")
    popularity = {q: [int(x) for x in popular[:n + 1] if x != q][:n] for q in set(query.values())}
    result = {"dataset": data.describe(), "evaluated_visitors": int(len(evaluated))}
    for name, neighbours in (("wals", wals_neighbours(data, train, n)),
                             ("pmi", pmi_neighbours(data.users[train], data.items[train], n)),
                             ("popularity", popularity)):
        result[name] = score(neighbours, query, target, evaluated, n)
        print(f"{data.name}: {name:10s} hit@{n}={result[name][f'hit@{n}']:.4f} "
              f"ndcg@{n}={result[name][f'ndcg@{n}']:.4f} (queries with a list: "
              f"{result[name]['queries_with_a_list']:.1%}, {len(evaluated)} visitors)", flush=True)
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="movielens,ga_sample")
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--json", help="Write the results here.")
    opts = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    loaders = {"movielens": datasets.movielens, "ga_sample": ga_sample_sequences}
    results = [compare(loaders[name](), opts.n) for name in opts.datasets.split(",")]
    if opts.json:
        with open(opts.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return {"results": results}


if __name__ == "__main__":
    main()
