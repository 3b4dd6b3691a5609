"""HTML building blocks shared by report.html and similar_items.html, and writing a page whole."""
from __future__ import annotations

import html
import uuid

from stagekit.artifacts import gfile
from pipeline.report.summary import fmt

STYLE = (
    "body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;margin:.5em 0;max-width:100%}"
    "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left;vertical-align:top;"
    "overflow-wrap:break-word}"
    # ids and paths have no spaces to wrap at: they may break anywhere rather than overflow
    "td.ids{overflow-wrap:anywhere;min-width:6em}"
    ".ids{white-space:pre-wrap}"  # ids show exactly: two spaces stay two
    "svg{max-width:100%;height:auto}p.read{color:#555}"
    ".pair{display:flex;flex-wrap:wrap;gap:0 2em}.pair>div{flex:1 1 18em;min-width:0}"
    "small{color:#555;font-weight:normal}"
    "h1,h2,h3,p{overflow-wrap:anywhere}"  # a 200-character id in a heading wraps too
)


class Raw(str):
    """A table cell that is already HTML (a link), written as is."""


def esc(value) -> str:
    return value if isinstance(value, Raw) else html.escape(fmt(value))


def table(header: list[str], rows: list[list], ids: tuple[int, ...] = ()) -> str:
    """rows under header; the columns numbered in `ids` hold ids or paths (wrapped anywhere)."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td{" class=ids" if i in ids else ""}>{esc(c)}</td>'
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def read_line(text: str) -> str:
    """A section's "how to read this" line."""
    return f'<p class="read">{html.escape(text)}</p>' if text else ""


def breakable(name: str) -> Raw:
    """A flag or metric name that may wrap after its underscores on a narrow screen."""
    return Raw(html.escape(name).replace("_", "_<wbr>"))


def link(text: str, href: str) -> Raw:
    return Raw(f'<a href="{html.escape(href)}">{html.escape(text)}</a>')


def document(title: str, body: str) -> str:
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width,initial-scale=1"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>{body}</body></html>\n")


def write_page(path: str, page: str) -> None:
    """Writes a page whole: to a temporary name first, then renamed over the old one (one
    object on GCS), so a reader never sees half a page."""
    temporary = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with gfile().GFile(temporary, "w") as f:
        f.write(page)
    gfile().rename(temporary, path, overwrite=True)
