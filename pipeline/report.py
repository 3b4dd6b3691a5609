"""The run summary (printed by pipeline.run) and output/report.html, built only from artifacts.

    python -m pipeline.report --output_dir output     # (re)build report.html for any run

report.html is static and self-contained (matplotlib PNGs inlined as base64): loss curve,
held-out metrics (WALS vs popularity), rating distribution, a 2-D PCA of the item embeddings
labelled with original ids, sample recommendations. Missing parts (e.g. a run with
--stages preprocess) are reported as missing, not as errors.
"""
from __future__ import annotations

import argparse
import base64
import datetime as dt
import html
import io
import logging
import sys

import numpy as np
import tensorflow as tf

from pipeline.artifacts import (COOC, ITEMS_FOR_USER, MODEL, PREDICTIONS, PREPROC, TUNING, VOCAB_ITEMS, exists,
                                head_lines, join, read_json, read_npy, read_vocabulary, shards,
                                sparse_row_batches, vocab_path)
from pipeline.cli import LOG_FORMAT

log = logging.getLogger("pipeline.report")

RATING_SAMPLE_RECORDS = 2000   # items_for_user records read for the rating histogram
PCA_MAX_POINTS = 5000          # items drawn in the scatter (all are used for the projection)
LABELLED_ITEMS = 10
SAMPLE_RECOMMENDATIONS = 5
SIMILAR_ITEMS_READ = 100_000  # lines per source read for the similar-items table


def _json_or_none(path: str) -> dict | None:
    return read_json(path) if exists(path) else None


def collect_run(root: str) -> dict:
    """Everything the summary and report show, read from the artifacts under root."""
    preproc, model, predictions = (join(root, d) for d in (PREPROC, MODEL, PREDICTIONS))
    return {
        "root": root,
        "paths": {"preproc": preproc, "model": model, "predictions": predictions,
                  "cooc": join(root, COOC), "report": join(root, "report.html")},
        "metadata": _json_or_none(join(preproc, "metadata.json")),
        "tuning": _json_or_none(join(root, TUNING, "best.json")),
        "model": _json_or_none(join(model, "model.json")),
        "metrics": _json_or_none(join(model, "metrics.json")),
        "recommendations": head_lines(join(predictions, "batch_pred-*"), SAMPLE_RECOMMENDATIONS),
        "cooc": _json_or_none(join(root, COOC, "manifest.json")),
        "similar_items": similar_items(root),
    }


def _lists(pattern: str) -> dict[str, list[str]]:
    """contentId -> its similar contentIds, from TAB lines (at most SIMILAR_ITEMS_READ lines)."""
    return {key: value.split(",") if value else []
            for key, _, value in (line.partition("\t")
                                  for line in head_lines(pattern, SIMILAR_ITEMS_READ))}


def similar_items(root: str, n_items: int = 10, n_similar: int = 5) -> list[list[str]] | None:
    """[contentId, WALS similar, PMI similar] for the most popular items (predictions'
    popular_items.txt, else the first listed), when similar items were written."""
    wals = _lists(join(root, PREDICTIONS, "similar_items-*"))
    pmi = _lists(join(root, COOC, "pmi_similar_items-*"))
    if not wals and not pmi:
        return None
    popular = [line.split("\t", 1)[0] for line in
               head_lines(join(root, PREDICTIONS, "popular_items.txt"), n_items)]
    items = [i for i in popular if i in wals or i in pmi] or list(wals or pmi)[:n_items]
    return [[item, ", ".join(wals.get(item, [])[:n_similar]) or "-",
             ", ".join(pmi.get(item, [])[:n_similar]) or "-"] for item in items[:n_items]]


def epoch_losses(model_json: dict | None) -> list[float]:
    """loss_history entries are floats or {"loss": ...} dicts; both are accepted."""
    history = (model_json or {}).get("loss_history") or []
    return [float(h["loss"] if isinstance(h, dict) else h) for h in history]


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


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}"
    return "-" if value is None else str(value)


def entity_words(metadata: dict | None) -> tuple[str, str]:
    """What a row and an item are called for this run's source: user/item for interactions
    files, visitor/content (news) or visitor/product (ecommerce) for GA sessions."""
    if not metadata or metadata.get("source") == "interactions":
        return ("user", "item") if metadata else ("visitor", "item")
    return "visitor", "product" if metadata.get("ga_preset") == "ecommerce" else "content"


def format_summary(run: dict, seconds: dict | None = None) -> str:
    """The short plain-text summary printed at the end of pipeline.run."""
    user, item = entity_words(run["metadata"])
    lines = [f"== run summary: {run['root']} =="]
    if seconds:
        lines.append("stages: " + ", ".join(f"{s} {t:.1f} s" for s, t in seconds.items()))
    meta = run["metadata"]
    if meta:
        lines.append(f"data: {meta['nusers']} {user}s x {meta['nitems']} {item}s, "
                     f"{meta.get('interactions', '?')} interactions from {meta.get('input_rows', '?')} "
                     f"input rows ({meta.get('rejected_rows', 0)} rejected"
                     + (f": {meta['rejected_by_reason']}" if meta.get("rejected_by_reason") else "") + ")")
        rating = meta.get("rating") or {}
        if rating:
            lines.append(f"ratings: median raw value {_fmt(rating.get('median_value'))}, scaled "
                         f"min/mean/max {_fmt(rating.get('min'))}/{_fmt(rating.get('mean'))}/"
                         f"{_fmt(rating.get('max'))}")
    losses = epoch_losses(run["model"])
    if losses:
        lines.append(f"training: {len(losses)} epochs, loss per epoch: "
                     + " ".join(_fmt(loss) for loss in losses))
        epoch_seconds = (run["model"] or {}).get("epoch_seconds") or []
        if epoch_seconds:
            lines.append("seconds per epoch: " + " ".join(f"{s:.2f}" for s in epoch_seconds))
    columns, rows = metrics_table(run["metrics"])
    if rows:
        about = ", ".join(f"{k}={run['metrics'][k]}" for k in ("k", "heldout_interactions")
                          if k in run["metrics"])
        lines.append(f"held-out metrics ({about}): " + " | ".join(columns))
        lines += [f"  {name:<16}" + "  ".join(f"{_fmt(v):>10}" for v in values) for name, values in rows]
    written = {name: path for name, path in run["paths"].items() if exists(path)}
    if written:  # only what exists (the report itself is written after this summary)
        lines.append("artifacts:")
        lines += [f"  {name:<12} {path}" for name, path in written.items()]
    if run["recommendations"]:
        lines.append(f"sample recommendations ({user} -> {item}s, best first):")
        lines += [f"  {line.replace(chr(9), ' -> ', 1)}" for line in run["recommendations"]]
    return "\n".join(lines)


# ---- figures -------------------------------------------------------------------------------

def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def sample_ratings(preproc: str, max_records: int = RATING_SAMPLE_RECORDS) -> np.ndarray:
    """Scaled ratings of the first max_records items_for_user records (a sample, not a full pass)."""
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
    return np.concatenate(chunks).astype(np.float32, copy=False)


def pca_2d(factors: np.ndarray) -> np.ndarray:
    """Rows projected on the two leading principal axes (thin SVD of the centred factors)."""
    centred = factors - factors.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T


def figures(run: dict) -> dict[str, str]:
    """{title: base64 PNG} for every figure whose artifacts exist."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    losses = epoch_losses(run["model"])
    if losses:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(range(1, len(losses) + 1), losses, marker="o")
        ax.set(xlabel="epoch", ylabel="weighted loss", title="Training loss")
        out["Training loss"] = _png(fig)
    if run["metadata"]:
        ratings = sample_ratings(run["paths"]["preproc"])
        if ratings.size:
            fig, ax = plt.subplots(figsize=(6, 3.5))
            ax.hist(ratings, bins=40)
            ax.set(xlabel="scaled rating", ylabel="interactions",
                   title=f"Rating distribution ({ratings.size} ratings of the most active users)")
            out["Rating distribution"] = _png(fig)
    curve = ((run["model"] or {}).get("phases") or {}).get("eval", {}).get("heldout_ndcg") or []
    if any(value is not None for value in curve):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(range(1, len(curve) + 1), [np.nan if v is None else v for v in curve], marker="o")
        ax.set(xlabel="epoch", ylabel="held-out NDCG (2,000 users)",
               title="Held-out NDCG per epoch (eval phase)")
        out["Held-out NDCG per epoch"] = _png(fig)
    if run.get("tuning"):
        out["Hyperparameter search"] = _tuning_figure(plt, run["tuning"])
    col_path = join(run["paths"]["model"], "col_factors.npy")
    if run["metadata"] and exists(col_path):
        item_factors = read_npy(col_path)
        if item_factors.ndim == 2 and item_factors.shape[0] >= 3 and item_factors.shape[1] >= 2:
            out["Item embeddings (PCA)"] = _pca_figure(plt, item_factors, run)
    return out


def _tuning_figure(plt, tuning: dict) -> str:
    """Each trial's held-out metric (pruned trials at their last report) and the best so far."""
    trials = [t for t in tuning["trials"] if t.get("value") is not None or t.get("curve")]
    numbers = [t["number"] for t in trials]
    values = [t["value"] if t.get("value") is not None else max(t["curve"]) for t in trials]
    complete = [t["state"] == "COMPLETE" for t in trials]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.scatter([n for n, c in zip(numbers, complete) if c],
               [v for v, c in zip(values, complete) if c], s=14, label="trial")
    ax.scatter([n for n, c in zip(numbers, complete) if not c],
               [v for v, c in zip(values, complete) if not c], s=14, marker="x", label="pruned")
    best = np.maximum.accumulate([v if c else -np.inf for v, c in zip(values, complete)])
    ax.step(numbers, best, where="post", color="k", label="best so far")
    if tuning.get("default_value") is not None:
        ax.axhline(tuning["default_value"], color="grey", ls="--", label="current flags (trial 0)")
    ax.set(xlabel="trial", ylabel=f"held-out {tuning['metric']}", title="Hyperparameter search")
    ax.legend(fontsize=7)
    return _png(fig)


def spread_labels(points: np.ndarray, n: int, min_gap: float = 0.08) -> list[int]:
    """Up to n points to label: the outermost first (the most distinctive items), each at least
    min_gap × the plot's extent from every label taken, so labels do not overlap into a blob."""
    gap = min_gap * float(np.ptp(points, axis=0).max() or 1.0)
    taken: list[int] = []
    for j in np.argsort(-np.linalg.norm(points, axis=1), kind="stable"):
        if all(np.linalg.norm(points[j] - points[t]) >= gap for t in taken):
            taken.append(int(j))
            if len(taken) == n:
                break
    return taken


def _pca_figure(plt, item_factors: np.ndarray, run: dict) -> str:
    points = pca_2d(item_factors)
    shown = np.random.default_rng(0).permutation(len(points))[:PCA_MAX_POINTS]
    item_ids = read_vocabulary(vocab_path(run["paths"]["preproc"], VOCAB_ITEMS, run["metadata"]))
    labelled = spread_labels(points, LABELLED_ITEMS)
    fig, ax = plt.subplots(figsize=(7, 5.5))
    ax.scatter(points[shown, 0], points[shown, 1], s=6, alpha=0.5)
    for j in labelled:
        ax.annotate(item_ids[j] if j < len(item_ids) else str(j), points[j], fontsize=7)
    ax.set(xlabel="PC 1", ylabel="PC 2", title=f"Item embeddings, 2-D PCA ({len(points)} items)")
    return _png(fig)


# ---- HTML ----------------------------------------------------------------------------------

def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


READ = {  # "how to read this", one line per section
    "metrics": "Scores of the model trained without the held-out interactions, on those: the share "
               "of each user's held-out items found in their top k (recall), how high they rank "
               "(NDCG, MAP) and how many of the k are right (precision); coverage is the share of "
               "the catalog ever recommended. Popularity recommends the most read items to "
               "everyone. RMSE compares predicted with held-out ratings: popularity predicts each "
               "item's mean rating, while WALS fits a preference (by default 1 with a confidence), "
               "not the rating, so its RMSE is not its goal.",
    "model": "The settings this model was trained with (trainer flags; python -m trainer.task "
             "--help explains each).",
    "Training loss": "The weighted loss after each epoch: it should fall and flatten; a rise "
                     "means the settings do not suit the data.",
    "Held-out NDCG per epoch": "How well the model trained without the held-out interactions "
                               "ranks them after each epoch (a sample of users): it should rise "
                               "and level off; a fall means more epochs overfit.",
    "Rating distribution": "Ratings are min(scale x value / median, 1): every value above "
                           "median / scale (e.g. a long read) is capped at 1, hence the bar at 1.",
    "Hyperparameter search": "Each trial's held-out metric and the best so far; the dashed line "
                             "is the flags as given.",
    "Item embeddings (PCA)": "Items close together are recommended to the same people; the "
                             "labels name a few of the most distinctive items.",
}


def _read(text: str) -> str:
    return f'<p class="read">{html.escape(text)}</p>' if text else ""


def _better(metric: str) -> str:
    return "lower" if metric.startswith("rmse") else "higher"


def flag_meanings() -> dict[str, str]:
    """The trainer flags' help texts ({dest: help}), the meaning column of the Model table."""
    import argparse

    from trainer import task
    parser = argparse.ArgumentParser(add_help=False)
    task.add_args(parser)
    return {a.dest: a.help or "" for a in parser._actions}


def render_html(run: dict, images: dict[str, str]) -> str:
    esc = html.escape
    parts = [f"<h1>WALS run report</h1><p>{esc(run['root'])} &middot; generated "
             f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}</p>"]
    meta = run["metadata"]
    if meta:
        keys = ["nusers", "nitems", "interactions", "input_rows", "accepted_rows", "rejected_rows",
                "source", "ga_preset"]
        parts.append("<h2>Data</h2>" + _table(["", "value"], [[k, meta.get(k)] for k in keys if k in meta]))
        if meta.get("rejected_by_reason"):
            parts.append(_table(["reject reason", "rows"], sorted(meta["rejected_by_reason"].items())))
        if meta.get("rating"):
            parts.append(_table(["rating", "value"], sorted(meta["rating"].items())))
    else:
        parts.append("<p>No preprocessing artifacts (preproc/metadata.json) found.</p>")
    columns, rows = metrics_table(run["metrics"])
    if rows:
        parts.append("<h2>Held-out metrics</h2>" + _read(READ["metrics"])
                     + _table(["metric"] + columns + ["better"],
                              [[n] + v + [_better(n)] for n, v in rows]))
    tuning = run.get("tuning")
    if tuning:
        parts.append(
            f"<h2>Tuning</h2><p>{tuning['n_trials']} trials in {tuning['seconds']:.0f} s "
            f"({esc(tuning['search'])}); held-out {esc(tuning['metric'])} "
            f"{_fmt(tuning['best_value'])} (trial {tuning['best_trial']}) against "
            f"{_fmt(tuning.get('default_value'))} with the flags' values (trial 0).</p>"
            + _table(["chosen", "value"], sorted([k, v] for k, v in tuning["chosen"].items())))
    if run["model"]:
        rows = {"n_embeds": run["model"].get("n_embeds"),
                "epochs_completed": run["model"].get("epochs_completed")}
        rows.update(run["model"].get("hyperparameters") or {})
        meaning = flag_meanings()
        parts.append("<h2>Model</h2>" + _read(READ["model"])
                     + _table(["setting", "value", "meaning"],
                              sorted([k, v, meaning.get(k, "")] for k, v in rows.items())))
    for title, png in images.items():
        parts.append(f"<h2>{esc(title)}</h2>" + _read(READ.get(title, ""))
                     + f"<img alt=\"{esc(title)}\" src=\"data:image/png;base64,{png}\">")
    if run.get("similar_items"):
        cooc = run.get("cooc") or {}
        parts.append(
            "<h2>Similar items</h2><p>How to read this: for the most popular items, the items "
            "most similar by the model's item factors (WALS, cosine) and by co-occurrence (PMI: "
            "viewed together more often than their popularity predicts"
            + (f"; {cooc['groups']} {esc(str(cooc.get('scope', 'visitor')))} groups, "
               f"{cooc['pairs']} co-occurring pairs" if cooc else "")
            + "), best first; '-' where that source has none.</p>"
            + _table(["contentId", "WALS similar", "PMI similar"], run["similar_items"]))
    if run["recommendations"]:
        recs = [line.split("\t", 1) + [""] for line in run["recommendations"]]
        parts.append("<h2>Sample recommendations</h2>"
                     + _table(["visitorId", "contentIds (best first)"], [r[:2] for r in recs]))
    parts.append("<h2>Artifacts</h2>" + _table(["", "path"], [[k, v] for k, v in run["paths"].items()]))
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse;"
             "margin:.5em 0;max-width:100%}td,th{border:1px solid #ccc;padding:.2em .6em;"
             "text-align:left;overflow-wrap:anywhere}img{max-width:100%}p.read{color:#555}")
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>WALS run report</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")


def write_report(root: str, run: dict | None = None) -> str:
    """Writes root/report.html and returns its path."""
    run = run or collect_run(root)
    page = render_html(run, figures(run))
    path = run["paths"]["report"]
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(page)
    log.info("report written to %s (%d figures)", path, page.count("<img"))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.report", description=__doc__.split("\n")[0])
    parser.add_argument("--output_dir", default="output", help="Root of the run's artifacts.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    if not tf.io.gfile.isdir(args.output_dir):
        log.error("error: %s is not a directory of run artifacts", args.output_dir)
        return 2
    run = collect_run(args.output_dir)
    print(format_summary(run))
    print(f"report: {write_report(args.output_dir, run)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
