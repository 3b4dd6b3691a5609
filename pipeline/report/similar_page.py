"""similar_items.html: for each of the most popular items, its neighbours with their scores, by
the model's item factors (WALS, cosine) and by co-occurrence (PMI), side by side.

Each item has its own section (similar_items.html#item-N, N its popularity rank) that report.html
links to; neighbours that have a section of their own link to it.
"""
from __future__ import annotations

import html

from pipeline.report.markup import document, link, read_line, table
from pipeline.report.run_data import SIMILAR_SHOWN, run_words

PAGE = "similar_items.html"
SCORE_NAMES = {"WALS": "cosine", "PMI": "PMI"}

READ = "For each of the most popular {items}, the {items} most similar to it, best first. "
READ_UNRANKED = ("For each of the first {items} listed (this run wrote no popularity list), the "
                 "{items} most similar to it, best first. ")
SOURCE_READ = {
    "WALS": "WALS: cosine similarity of the model's item factors (1 = the same taste profile, "
            "0 = unrelated), so it also finds {items} that similar people {seen}, even if rarely "
            "together. ",
    "PMI": "PMI: shifted positive pointwise mutual information of co-occurrence (how many times "
           "more often two {items} are {seen} together than their popularity predicts, on a log "
           "scale, less the shift of --pmi_shift; 0 = not more than that). ",
}
READ_END = ("Scores compare within a column, not across columns. '-' means that source lists "
            "nothing for the {item}; a score of '-' means the run wrote no scores.")


def anchor(rank: int) -> str:
    return f"item-{rank}"


def section_links(items: list[str]) -> dict[str, str]:
    """item -> the fragment of its section on this page."""
    return {item: anchor(rank) for rank, item in enumerate(items, start=1)}


def render_similar_page(run: dict) -> str:
    similar, popular = run["similar"], dict(run["popular"])
    words = run_words(run)
    user, item = words["user"], words["item"]
    items = similar["items"]
    sections = section_links(items)
    how_to_read = (READ if popular else READ_UNRANKED) + "".join(SOURCE_READ.get(s, "") for s in similar["sources"]) + READ_END
    parts = [f"<h1>Similar {html.escape(item)}s</h1><p>{html.escape(run['root'])} &middot; "
             f'<a href="report.html">run report</a></p>', read_line(how_to_read.format(**words))]
    parts.append(table(["#", item, f"{user}s who have it", "sources"],
                       [[rank, link(i, "#" + sections[i]), popular.get(i),
                         ", ".join(s for s, lists in similar["sources"].items() if lists.get(i))]
                        for rank, i in enumerate(items, start=1)], ids=(1,)))
    for rank, i in enumerate(items, start=1):
        count = f" &middot; {popular[i]} {user}s" if popular.get(i) is not None else ""
        columns = []
        for source, lists in similar["sources"].items():
            neighbours = lists.get(i, [])[:SIMILAR_SHOWN]
            rows = [[n, link(other, "#" + sections[other]) if other in sections else other, score]
                    for n, (other, score) in enumerate(neighbours, start=1)]
            columns.append(f"<div><h3>{source}</h3>"
                           + (table(["#", item, SCORE_NAMES.get(source, "score")], rows, ids=(1,))
                              if rows else "<p>-</p>") + "</div>")
        parts.append(f'<section id="{anchor(rank)}"><h2>#{rank} <span class=ids>{html.escape(i)}</span>'
                     f"<small>{count}</small></h2>"
                     f'<div class="pair">{"".join(columns)}</div></section>')
    return document(f"Similar {item}s", "".join(parts))
