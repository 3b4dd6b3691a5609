"""What a run's artifacts say: the one dict (`collect_run`) that the summary and the pages show.

Everything is read from the artifacts under the run's root (local or gs://); a part that was not
written (e.g. a run with --stages preprocess) is None or empty, never an error.
"""
from __future__ import annotations

import json

import numpy as np

from stagekit.artifacts import (COOC, ITEMS_FOR_USER, MODEL, PREDICTIONS, PREPROC, TUNING,
                                VOCAB_ITEMS, exists, gfile, head_lines, iter_lines, join,
                                read_json, read_vocabulary, shards, sparse_row_batches, vocab_path)

RATING_SAMPLE_RECORDS = 2000   # items_for_user records read for the rating histogram
SAMPLE_RECOMMENDATIONS = 5
TOP_ITEMS = 50                 # items with a section on similar_items.html (the most popular)
REPORT_TOP_ITEMS = 10          # of which report.html's similar-items table shows the first
SIMILAR_SHOWN = 10             # neighbours per item and source on similar_items.html

# Similar items per source: (label, folder, scored JSON lines, unscored TAB lines). The JSON
# lines carry the scores; the TAB files are read only when a run wrote no scores (older runs).
SIMILAR_SOURCES = (
    ("WALS", PREDICTIONS, "similar_items_scores-*.jsonl", "similar_items-*"),
    ("PMI", COOC, "pmi_similar_items_scores-*.jsonl", "pmi_similar_items-*"),
)

PAGES = ("report", "similar_page")  # run["paths"] keys of the pages built from the artifacts

# neighbour id, score (None when the source wrote no scores)
Neighbours = list[tuple[str, float | None]]


def _json_or_none(path: str) -> dict | None:
    return read_json(path) if exists(path) else None


def collect_run(root: str) -> dict:
    """Everything the summary and report show, read from the artifacts under root."""
    preproc, model, predictions = (join(root, d) for d in (PREPROC, MODEL, PREDICTIONS))
    metadata = _json_or_none(join(preproc, "metadata.json"))
    popular = popular_items(root, metadata)
    return {
        "root": root,
        "paths": {"preproc": preproc, "model": model, "predictions": predictions,
                  "cooc": join(root, COOC), "report": join(root, "report.html"),
                  "similar_page": join(root, "similar_items.html")},
        "metadata": metadata,
        "tuning": _json_or_none(join(root, TUNING, "best.json")),
        "model": _json_or_none(join(model, "model.json")),
        "metrics": _json_or_none(join(model, "metrics.json")),
        "recommendations": head_lines(join(predictions, "batch_pred-*"), SAMPLE_RECOMMENDATIONS),
        "cooc": _json_or_none(join(root, COOC, "manifest.json")),
        "popular": popular,
        "similar": similar_items(root, [item for item, _ in popular]),
    }


def popular_items(root: str, metadata: dict | None,
                  n: int = TOP_ITEMS) -> list[tuple[str, int | None]]:
    """(item, number of users who have it) of the n most popular: predictions/popular_items.txt,
    else the head of the items vocabulary (TFT orders it by that same count; the counts are
    not kept there: None); [] when neither was written."""
    path = join(root, PREDICTIONS, "popular_items.txt")
    if exists(path):
        rows = (line.split("\t") for line in head_lines(path, n))
        return [(row[0], int(row[1])) for row in rows if len(row) == 2]
    vocab = vocab_path(join(root, PREPROC), VOCAB_ITEMS, metadata)
    return [(item, None) for item in read_vocabulary(vocab)[:n]] if exists(vocab) else []


_DECODER = json.JSONDecoder()


def _line_id(line: str) -> str | None:
    """The "id" of a scored JSON line without parsing the whole line (our writers put "id"
    first); any other line is parsed whole."""
    if line.startswith('{"id":'):
        start = 6 + (line[6:7] == " ")
        found = _DECODER.raw_decode(line, start)[0]
        if isinstance(found, str):
            return found
    return json.loads(line).get("id") if line.strip() else None


def _scored_line(line: str) -> tuple[str, Neighbours]:
    record = json.loads(line)
    return record["id"], list(zip(record["ids"], map(float, record["scores"])))


def _tab_line(line: str) -> tuple[str, Neighbours]:
    item, _, neighbours = line.partition("\t")
    return item, [(n, None) for n in neighbours.split(",")] if neighbours else []


def read_similar(folder: str, scored: str, unscored: str, wanted: set[str] | None,
                 first: int = TOP_ITEMS) -> dict[str, Neighbours]:
    """item -> its neighbours, best first, for the wanted items (None: the first listed); from
    the scored JSON lines when the run wrote them, else from the TAB lines (scores None)."""
    if gfile().glob(join(folder, scored)):
        pattern, line_id, parse = scored, _line_id, _scored_line
    else:
        pattern, line_id, parse = unscored, lambda line: line.partition("\t")[0], _tab_line
    out: dict[str, Neighbours] = {}
    for line in iter_lines(join(folder, pattern), None if wanted else first):
        if wanted is None or line_id(line) in wanted:
            item, neighbours = parse(line)
            out[item] = neighbours
            if wanted and len(out) == len(wanted):
                break  # each item has one line: the rest of the files can be skipped
    return out


def similar_items(root: str, items: list[str]) -> dict | None:
    """{"items": the items shown, best known first; "sources": {label: {item: neighbours}}} for
    the given (popular) items, or for the first listed when there are none; None when no
    similar items were written (or none of those items has any)."""
    wanted = set(items) or None
    sources = {label: read_similar(join(root, folder), scored, unscored, wanted)
               for label, folder, scored, unscored in SIMILAR_SOURCES
               if gfile().glob(join(root, folder, unscored))}
    if not sources:
        return None
    if not items:
        items = list(dict.fromkeys(i for lists in sources.values() for i in lists))[:TOP_ITEMS]
    listed = [i for i in items if any(lists.get(i) for lists in sources.values())]
    return {"items": listed, "sources": sources} if listed else None


def epoch_losses(model_json: dict | None) -> list[float]:
    """loss_history entries are floats or {"loss": ...} dicts; both are accepted."""
    history = (model_json or {}).get("loss_history") or []
    return [float(h["loss"] if isinstance(h, dict) else h) for h in history]


def heldout_curve(model_json: dict | None) -> list[float | None]:
    """The eval phase's held-out NDCG after each epoch (model.json phases.eval.heldout_ndcg)."""
    return ((model_json or {}).get("phases") or {}).get("eval", {}).get("heldout_ndcg") or []


def metrics_table(metrics: dict | None) -> tuple[list[str], list[tuple[str, list]]]:
    """(columns, rows) from metrics.json: {model: {metric: value}} or a flat {metric: value}."""
    if not metrics:
        return [], []
    models = {k: v for k, v in metrics.items() if isinstance(v, dict)}
    models = dict(sorted(models.items(), key=lambda kv: kv[0] != "wals"))  # WALS first
    if not models:
        models = {"value": {k: v for k, v in metrics.items() if isinstance(v, (int, float))}}
    columns = list(models)
    names = list(dict.fromkeys(m for scores in models.values() for m in scores
                               if isinstance(scores[m], (int, float))))
    return columns, [(m, [models[c].get(m) for c in columns]) for m in names]


def entity_words(metadata: dict | None) -> tuple[str, str]:
    """What a row and an item are called for this run's source: user/item for interactions
    files, visitor/content item (news) or visitor/product (ecommerce) for GA sessions."""
    if not metadata or metadata.get("source") == "interactions":
        return ("user", "item") if metadata else ("visitor", "item")
    return "visitor", "product" if metadata.get("ga_preset") == "ecommerce" else "content item"


def run_words(run: dict) -> dict[str, str]:
    """The words the pages use for this run: user(s), item(s), what users do with items (seen),
    what an input row is (rows: GA4 events, GA sessions or rows) and which phase trained the
    served model (phase)."""
    user, item = entity_words(run["metadata"])
    source = (run["metadata"] or {}).get("source")
    seen = "rated" if source == "interactions" else "viewed" if item == "product" else "read"
    served = (run["model"] or {}).get("served_phase", "full")
    phase = ("eval phase: trained without the held-out interactions" if served == "eval"
             else "full phase: trained on all interactions")
    schema = (run["metadata"] or {}).get("ga_schema") or "ua"
    rows = ("file rows" if source in (None, "interactions") else "GA4 events" if schema == "ga4"
            else "GA sessions")
    return {"user": user, "users": user + "s", "item": item, "items": item + "s", "seen": seen,
            "phase": phase, "rows": rows}


def sample_ratings(preproc: str, max_records: int = RATING_SAMPLE_RECORDS) -> tuple[np.ndarray, int]:
    """(scaled ratings, number of users) of the first max_records items_for_user records: a
    sample, not a full pass. Each shard lists its users most active first, so the sample leans
    to active users."""
    chunks = [np.zeros(0, np.float32)]
    remaining = max_records
    if remaining > 0:
        batches = sparse_row_batches(shards(preproc, ITEMS_FOR_USER), min(max_records, 4096),
                                     with_values=True)
        for _, _, values, _ in batches:
            taken = values[:remaining]
            chunks.append(taken.flat_values.numpy())
            remaining -= int(taken.nrows())
            if remaining <= 0:
                break
    return np.concatenate(chunks).astype(np.float32, copy=False), max_records - max(remaining, 0)
