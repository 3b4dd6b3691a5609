"""report.html: one static, self-contained page (inline SVG charts, nothing fetched) that a
product owner can read without the code: each section says how to read it."""
from __future__ import annotations

import datetime as dt
import html
import logging

from pipeline.report.figures import figures
from pipeline.report.markup import breakable, document, link, read_line, table, write_page
from stagekit.artifacts import exists
from pipeline.report.run_data import PAGES, REPORT_TOP_ITEMS, collect_run, metrics_table, run_words
from pipeline.report.similar_page import PAGE as SIMILAR_PAGE
from pipeline.report.similar_page import render_similar_page, section_links
from pipeline.report.summary import fmt

log = logging.getLogger("pipeline.report")

READ = {  # "how to read this", one line per section
    "data": "What the run read: {users} and {items} are those with at least one interaction; "
            "input rows ({rows}) = accepted + rejected, and every rejected row is kept with its reason "
            "in preproc/rejected-*. Ratings are the scaled interaction strengths the model saw.",
    "metrics": "Scores of the model trained without the held-out interactions, on those: the share "
               "of each {user}'s held-out {items} found in their top k (recall), how high they rank "
               "(NDCG, MAP) and how many of the k are right (precision); coverage is the share of "
               "the catalog ever recommended. Popularity recommends the most {seen} {items} to "
               "everyone. RMSE compares predicted with held-out ratings: popularity predicts each "
               "item's mean rating, while WALS fits a preference (by default 1 with a confidence), "
               "not the rating, so its RMSE is not its goal.",
    "tuning": "The search tried these settings on held-out data; train used the chosen values "
              "(an explicit flag wins).",
    "model": "The settings this model was trained with (trainer flags; python -m trainer.task "
             "--help explains each).",
    "Training loss": "The weighted loss after each epoch of the served model ({phase}): it should "
                     "fall and flatten; a rise means the settings do not suit the data.",
    "Held-out NDCG per epoch": "How well the model trained without the held-out interactions "
                               "(the eval phase) ranks them after each epoch, on a sample of up "
                               "to 2,000 {users}: it should rise and level off; a fall means "
                               "more epochs overfit.",
    "Rating distribution": "The scaled ratings of a sample of {users} (the first records of each "
                           "items_for_user shard, where the most active come first). Ratings "
                           "are min(scale x value / median, 1): every value above median / "
                           "scale (e.g. a long read) is capped at 1, hence the bar at 1.",
    "Hyperparameter search": "Each trial's held-out metric and the best so far; the dashed line "
                             "is the flags as given.",
    "Item embeddings (PCA)": "Items close together are recommended to the same people; the "
                             "labels name a few of the most distinctive items.",
    "similar": "For the most popular {items}, the most similar ones by the model's item factors "
               "(WALS, cosine) and by co-occurrence (PMI: {seen} together more often than their "
               "popularity predicts), best first; '-' where that source has none. Each {item} "
               "links to its page of neighbours with their scores.",
    "recommendations": "The first {users} of predictions/batch_pred-*, each with their top "
                       "{items}, best first; {items} they already have are never recommended.",
    "artifacts": "Where this run's outputs are (the file formats are in the README).",
}


def better(metric: str) -> str:
    """Which direction of a metric is better ("" for counts such as users_evaluated)."""
    if metric.startswith("rmse"):
        return "lower"
    return "" if metric.startswith("users") or metric.endswith("interactions") else "higher"


def flag_meanings() -> dict[str, str]:
    """The trainer flags' help texts ({dest: help}), the meaning column of the Model table."""
    import argparse

    from stagekit import cli
    from trainer import flags
    parser = argparse.ArgumentParser(add_help=False)
    flags.add_args(parser)
    cli.add_shared_args(parser)
    meanings = {a.dest: a.help or "" for a in parser._actions}
    meanings["refit_full"] = ("True: the served model was retrained on all interactions after "
                              "the held-out evaluation (--no_refit_full turns it off).")
    meanings["epochs_completed"] = "Epochs the served model ran."
    return meanings


def _section(title: str, how_to_read: str, body: str) -> str:
    return f"<h2>{html.escape(title)}</h2>{read_line(how_to_read)}{body}"


def render_html(run: dict, images: dict[str, str]) -> str:
    words = run_words(run)
    user, item = words["user"], words["item"]
    parts = [f"<h1>WALS run report</h1><p>{html.escape(run['root'])} &middot; generated "
             f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}</p>"]
    meta = run["metadata"]
    if meta:
        keys = ["nusers", "nitems", "interactions", "input_rows", "accepted_rows", "rejected_rows",
                "source", "ga_schema", "ga_preset"]
        body = table(["", "value"], [[k, meta.get(k)] for k in keys if k in meta], ids=(1,))
        if meta.get("rejected_by_reason"):
            body += table(["reject reason", "rows"], sorted(meta["rejected_by_reason"].items()))
        if meta.get("rating"):
            body += table(["rating", "value"], sorted(meta["rating"].items()))
        parts.append(_section("Data", READ["data"].format(**words), body))
    else:
        parts.append("<p>No preprocessing artifacts (preproc/metadata.json) found.</p>")
    columns, rows = metrics_table(run["metrics"])
    if rows:
        parts.append(_section("Held-out metrics", READ["metrics"].format(**words),
                              table(["metric"] + columns + ["better"],
                                    [[n] + v + [better(n)] for n, v in rows])))
    tuning = run.get("tuning")
    if tuning:
        parts.append(_section(
            "Tuning", READ["tuning"],
            f"<p>{tuning['n_trials']} trials in {tuning['seconds']:.0f} s "
            f"({html.escape(tuning['search'])}); held-out {html.escape(tuning['metric'])} "
            f"{fmt(tuning['best_value'])} (trial {tuning['best_trial']}) against "
            f"{fmt(tuning.get('default_value'))} with the flags' values (trial 0).</p>"
            + table(["chosen", "value"],
                    [[breakable(k), v] for k, v in sorted(tuning["chosen"].items())], ids=(1,))))
    if run["model"]:
        settings = {"n_embeds": run["model"].get("n_embeds"),
                    "epochs_completed": run["model"].get("epochs_completed")}
        settings.update(run["model"].get("hyperparameters") or {})
        meaning = flag_meanings()
        parts.append(_section("Model", READ["model"], table(
            ["setting", "value", "meaning"],
            [[breakable(k), v, meaning.get(k, "")] for k, v in sorted(settings.items())],
            ids=(1,))))
    for title, svg in images.items():
        parts.append(_section(title, READ.get(title, "").format(**words), f'<figure role="img" aria-label='
                                                          f'"{html.escape(title)}">{svg}</figure>'))
    if run.get("similar"):
        parts.append(_section("Similar items", READ["similar"].format(**words)
                              + ("" if run["popular"] else " (No popularity list was written: "
                                 "the first items listed are shown.)"),
                              _cooc_line(run.get("cooc")) + _similar_table(run, item)))
    if run["recommendations"]:
        recs = [line.split("\t", 1) + [""] for line in run["recommendations"]]
        parts.append(_section("Sample recommendations", READ["recommendations"].format(**words),
                              table([user, f"{item}s (best first)"],
                                    [[r[0], r[1].replace(",", ", ")] for r in recs], ids=(0, 1))))
    written = [[k, v] for k, v in run["paths"].items()
               if k == "report" or (k == "similar_page" and run.get("similar")) or
               (k not in PAGES and exists(v))]  # only what exists (or is being written now)
    parts.append(_section("Artifacts", READ["artifacts"], table(["", "path"], written, ids=(1,))))
    return document("WALS run report", "".join(parts))


def _cooc_line(cooc: dict | None) -> str:
    if not cooc:
        return ""
    return (f"<p>Co-occurrence: {cooc['groups']} {html.escape(str(cooc.get('scope', 'visitor')))} "
            f"groups, {cooc['pairs']} co-occurring pairs.</p>")


def _similar_table(run: dict, item: str, shown: int = 5) -> str:
    """The first popular items with both sources' first neighbours, each linked to its section."""
    similar = run["similar"]
    sections = section_links(similar["items"])
    rows = [[link(i, f"{SIMILAR_PAGE}#{sections[i]}")]
            + [", ".join(n for n, _ in lists.get(i, [])[:shown]) or "-"
               for lists in similar["sources"].values()]
            for i in similar["items"][:REPORT_TOP_ITEMS]]
    return table([item] + [f"{source} similar" for source in similar["sources"]], rows,
                 ids=tuple(range(len(similar["sources"]) + 1)))


def write_report(root: str, run: dict | None = None) -> str:
    """Writes root/report.html (and root/similar_items.html when similar items were written);
    returns report.html's path."""
    run = run or collect_run(root)
    images = figures(run)
    if run.get("similar"):
        write_page(run["paths"]["similar_page"], render_similar_page(run))
    write_page(run["paths"]["report"], render_html(run, images))
    log.info("report written to %s (%d figures)%s", run["paths"]["report"], len(images),
             f", similar items of {len(run['similar']['items'])} items in "
             f"{run['paths']['similar_page']}" if run.get("similar") else "")
    return run["paths"]["report"]
