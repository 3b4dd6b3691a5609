"""The report's charts, drawn with matplotlib as inline SVG.

SVG keeps the text as text (svg.fonttype none): it stays sharp when zoomed, can be searched, and a
browser test can check that no two labels overlap. Dense point clouds are rasterised inside the
SVG so that a 5,000-point scatter stays small.
"""
from __future__ import annotations

import io
import re

import numpy as np

from stagekit.artifacts import VOCAB_ITEMS, exists, join, read_npy, read_vocabulary, vocab_path
from pipeline.report.run_data import epoch_losses, heldout_curve, sample_ratings

PCA_MAX_POINTS = 5000   # items drawn in the scatter (all are used for the projection)
LABELLED_ITEMS = 10
LABEL_CANDIDATES = 300  # outermost items tried as labels
# A label's box is grown by this much before the overlap test: the browser draws the text in
# its own font, which may be a little wider than matplotlib's.
LABEL_MARGIN = (1.2, 1.4)
LABEL_SPOTS = ((3, 3, "left"), (-3, 3, "right"), (3, -10, "left"), (-3, -10, "right"))


def _svg(fig) -> str:
    """The figure as an <svg> element for inlining in HTML (no XML prologue, no metadata)."""
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", dpi=90,
                metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    plt.close(fig)
    text = buf.getvalue()
    return re.sub(r"<metadata>.*?</metadata>", "", text[text.index("<svg"):], flags=re.S)


def figures(run: dict) -> dict[str, str]:
    """{title: <svg>} for every figure whose artifacts exist."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # ids are shown as written: "$x$" in an id is not TeX
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "ga-wals-report",
                         "text.parse_math": False}):
        return _figures(plt, run)


def _line_chart(plt, values, title: str, ylabel: str) -> str:
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(values) + 1), [np.nan if v is None else v for v in values], marker="o")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    return _svg(fig)


def _figures(plt, run: dict) -> dict[str, str]:
    out = {}
    losses = epoch_losses(run["model"])
    if losses:
        phase = (run["model"] or {}).get("served_phase", "full")
        out["Training loss"] = _line_chart(plt, losses, f"Training loss ({phase} phase)",
                                           "weighted loss")
    if run["metadata"]:
        ratings, users = sample_ratings(run["paths"]["preproc"])
        if ratings.size:
            fig, ax = plt.subplots(figsize=(6, 3.5))
            ax.hist(ratings, bins=40)
            ax.set(xlabel="scaled rating", ylabel="interactions",
                   title=f"Rating distribution ({ratings.size:,} ratings of {users:,} users)")
            out["Rating distribution"] = _svg(fig)
    curve = heldout_curve(run["model"])
    if any(value is not None for value in curve):
        k = (run["model"].get("hyperparameters") or {}).get("top_k", 10)
        out["Held-out NDCG per epoch"] = _line_chart(
            plt, curve, "Held-out NDCG per epoch (eval phase)", f"held-out NDCG@{k}")
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
    return _svg(fig)


def pca_2d(factors: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Rows projected on the two leading principal axes: the top eigenvectors of the k × k
    covariance, summed a chunk of rows at a time in float64, so memory beside the factors stays
    one [n, 2] array whatever n is."""
    n, k = factors.shape
    mean = factors.mean(axis=0, dtype=np.float64)
    second_moment = np.zeros((k, k))
    for start in range(0, n, chunk):
        block = factors[start:start + chunk].astype(np.float64)
        second_moment += block.T @ block
    _, vectors = np.linalg.eigh(second_moment / n - np.outer(mean, mean))  # ascending
    axes = vectors[:, ::-1][:, :2]
    return (factors @ axes.astype(factors.dtype)).astype(np.float64) - mean @ axes


def place_labels(ax, points: np.ndarray, names: list[str], n: int = LABELLED_ITEMS) -> list[int]:
    """Labels up to n points, the outermost first (the most distinctive items), skipping any
    whose text would overlap a label already placed or leave the axes; returns the labelled
    rows. Text sizes come from matplotlib's renderer, so long ids are handled like short ones."""
    fig = ax.figure
    fig.canvas.draw()  # fixes the axes limits and gives a renderer to measure text with
    ax.set_autoscale_on(False)
    renderer = fig.canvas.get_renderer()
    area = ax.get_window_extent(renderer)
    placed, boxes = [], []
    for j in np.argsort(-np.linalg.norm(points, axis=1), kind="stable")[:LABEL_CANDIDATES]:
        for dx, dy, align in LABEL_SPOTS:  # right of the point, else left, above, else below
            text = ax.annotate(names[j], points[j], xytext=(dx, dy), textcoords="offset points",
                               ha=align, fontsize=7)
            box = text.get_window_extent(renderer).expanded(*LABEL_MARGIN)
            if (area.x0 <= box.x0 and box.x1 <= area.x1 and area.y0 <= box.y0 and box.y1 <= area.y1
                    and not any(box.overlaps(other) for other in boxes)):
                boxes.append(box)
                placed.append(int(j))
                break
            text.remove()
        if len(placed) == n:
            break
    return placed


def _pca_figure(plt, item_factors: np.ndarray, run: dict) -> str:
    points = pca_2d(item_factors)
    shown = np.random.default_rng(0).permutation(len(points))[:PCA_MAX_POINTS]
    item_ids = read_vocabulary(vocab_path(run["paths"]["preproc"], VOCAB_ITEMS, run["metadata"]))
    names = [item_ids[j] if j < len(item_ids) else str(j) for j in range(len(points))]
    fig, ax = plt.subplots(figsize=(7, 5.5))
    ax.scatter(points[shown, 0], points[shown, 1], s=6, alpha=0.5, rasterized=True)
    ax.margins(0.08)  # room for the outermost items' labels
    ax.set(xlabel="PC 1", ylabel="PC 2", title=f"Item embeddings, 2-D PCA ({len(points)} items)")
    place_labels(ax, points, names)
    return _svg(fig)
