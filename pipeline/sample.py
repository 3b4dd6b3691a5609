"""Deterministic generator of realistic GA360 news-site sessions, as `bq extract` writes them.

Each yielded dict is one row of the GA360 BigQuery export (`ga_sessions_YYYYMMDD`): fullVisitorId,
visitId, visitStartTime, date, totals, trafficSource, device and `hits` with PAGE and EVENT hits,
`customDimensions` (10 = article id, 11 = author, 12 = category), and a few ecommerce hits
(subscription / shop products with detail views, impressions and purchases). As in NDJSON exports,
INT64 fields are strings and the hits of a row are not in time order.

What makes it useful for WALS: article popularity is Zipf-distributed, each visitor prefers one
or two categories (the latent structure to recover), visitors have several sessions, time on page
is log-normal in seconds, and some PAGE hits (home page, section fronts) carry no article id.

    python -m pipeline.sample --visitors 3000 --articles 300 --seed 7 \\
        --output pipeline/data/ga_sessions_sample.ndjson.gz
"""
from __future__ import annotations

import argparse
import bisect
import dataclasses
import datetime
import gzip
import itertools
import json
import logging
import math
import pathlib
import random
import time
from collections.abc import Iterable, Iterator

from stagekit.cli import LOG_FORMAT

# the committed sample `make demo` reads by default
SAMPLE_PATH = str(pathlib.Path(__file__).resolve().parent / "data" / "ga_sessions_sample.ndjson.gz")
CATEGORIES = ("politics", "world", "business", "technology", "science", "sports", "culture",
              "travel", "food", "opinion")
HOSTNAME = "news.example.com"
PRODUCTS = tuple(f"SUB-{plan}" for plan in ("DIGITAL-M", "DIGITAL-Y", "PRINT-M", "PRINT-Y")) + \
    tuple(f"SHOP-{i:03d}" for i in range(1, 17))
_EVENTS = (("engagement", "scroll", "75%"), ("engagement", "scroll", "100%"),
           ("social", "share", "twitter"), ("video", "play", "inline"),
           ("newsletter", "signup", "footer"))


class Catalog:
    """Articles with Zipf popularity, grouped by category for preference-weighted draws."""

    def __init__(self, n_articles: int, rng: random.Random, zipf_exponent: float):
        ids = rng.sample(range(100_000_000, 999_999_999), n_articles)
        ranks = list(range(1, n_articles + 1))
        rng.shuffle(ranks)
        n_authors = max(1, n_articles // 8)
        self.articles = [
            {"id": str(article_id), "category": rng.choice(CATEGORIES),
             "author": f"author-{rng.randrange(n_authors):03d}", "weight": rank ** -zipf_exponent}
            for article_id, rank in zip(ids, ranks)]
        self.by_category = {c: [a for a in self.articles if a["category"] == c] for c in CATEGORIES}
        self._cumulative = {c: list(itertools.accumulate(a["weight"] for a in arts))
                            for c, arts in self.by_category.items()}
        self._cumulative[None] = list(itertools.accumulate(a["weight"] for a in self.articles))
        self.by_category[None] = self.articles

    def draw(self, rng: random.Random, category: str | None) -> dict:
        """A Zipf-weighted article, within `category` if it has any (None = whole site)."""
        if not self.by_category.get(category):
            category = None
        cumulative = self._cumulative[category]
        position = bisect.bisect_right(cumulative, rng.random() * cumulative[-1])
        return self.by_category[category][min(position, len(cumulative) - 1)]


def generate_sessions(n_visitors: int, n_articles: int, seed: int, *,
                      sessions_per_visitor: float = 5.0, pages_per_session: float = 6.0,
                      zipf_exponent: float = 1.0, preference_strength: float = 0.75,
                      no_content_page_rate: float = 0.2, event_rate: float = 0.5,
                      ecommerce_rate: float = 0.03, median_seconds_on_page: float = 45.0,
                      start_date: str = "20240101", days: int = 28) -> Iterator[dict]:
    """Yields GA360 session rows; the same arguments always give the same rows.

    sessions_per_visitor / pages_per_session are means of 1 + geometric counts;
    preference_strength is the chance an article is drawn from the visitor's favourite
    categories rather than the whole site; no_content_page_rate the share of PAGE hits that are
    home/section pages without an article id; event_rate the mean EVENT hits per page;
    ecommerce_rate the share of sessions with product hits.
    """
    if n_visitors < 1 or n_articles < 1:
        raise ValueError("n_visitors and n_articles must be >= 1")
    rng = random.Random(seed)
    catalog = Catalog(n_articles, rng, zipf_exponent)
    first_day = datetime.datetime.strptime(start_date, "%Y%m%d").replace(
        tzinfo=datetime.timezone.utc)
    period_seconds = days * 86_400
    visitor_ids = rng.sample(range(10**18, 10**19), n_visitors)
    for visitor_id in visitor_ids:
        favourites = rng.sample(CATEGORIES, rng.choice((1, 1, 2)))
        n_sessions = one_plus_geometric(rng, sessions_per_visitor)
        # distinct start seconds keep (fullVisitorId, visitId) unique, as in GA
        starts = sorted(rng.sample(range(period_seconds), n_sessions))
        for visit_number, offset in enumerate(starts, start=1):
            start = first_day + datetime.timedelta(seconds=offset)
            hits = _session_hits(rng, catalog, favourites, start, _SessionShape(
                pages=one_plus_geometric(rng, pages_per_session),
                preference_strength=preference_strength, no_content_page_rate=no_content_page_rate,
                event_rate=event_rate, ecommerce=rng.random() < ecommerce_rate,
                median_seconds=median_seconds_on_page))
            yield _session_row(rng, str(visitor_id), visit_number, start, hits)


def one_plus_geometric(rng: random.Random, mean: float) -> int:
    """1 + Geometric with the given mean (>= 1)."""
    if mean <= 1:
        return 1
    p = 1.0 / mean
    return 1 + int(math.log(1.0 - rng.random()) / math.log(1.0 - p))


@dataclasses.dataclass(frozen=True)
class _SessionShape:
    pages: int
    preference_strength: float
    no_content_page_rate: float
    event_rate: float
    ecommerce: bool
    median_seconds: float


def _session_hits(rng: random.Random, catalog: Catalog, favourites: list[str],
                  start: datetime.datetime, shape: _SessionShape) -> list[dict]:
    hits: list[dict] = []
    time_ms = 0
    for page_number in range(shape.pages):
        # half the sessions land on the home page; some later pages are section fronts
        landed_on_front = page_number == 0 and rng.random() < 0.5
        if landed_on_front or rng.random() < shape.no_content_page_rate:
            hits.append(_hit(start, time_ms, "PAGE", _front_page(rng)))
        else:
            category = rng.choice(favourites) if rng.random() < shape.preference_strength \
                else None
            hits.append(_hit(start, time_ms, "PAGE", _article_page(catalog.draw(rng, category))))
        dwell_ms = time_on_page_ms(rng, shape.median_seconds)
        for _ in range(poisson(rng, shape.event_rate)):
            category, action, label = rng.choice(_EVENTS)
            hits.append(_hit(start, time_ms + rng.randrange(1, dwell_ms), "EVENT", {
                "eventInfo": {"eventCategory": category, "eventAction": action,
                              "eventLabel": label}}))
        time_ms += dwell_ms
    if shape.ecommerce:
        hits.extend(_ecommerce_hits(rng, start, time_ms))
    for hit_number, hit in enumerate(sorted(hits, key=lambda h: h["_t"]), start=1):
        hit["hitNumber"] = str(hit_number)
        if hit_number == 1:
            hit["isEntrance"] = True
        del hit["_t"]
    rng.shuffle(hits)  # NDJSON exports do not promise time order
    return hits


def time_on_page_ms(rng: random.Random, median_seconds: float) -> int:
    """Log-normal time on page in ms: median `median_seconds`, clipped to 2 s .. 30 min."""
    seconds = rng.lognormvariate(math.log(median_seconds), 1.0)
    return int(min(max(seconds, 2.0), 1800.0) * 1000) + rng.randrange(1000)


def poisson(rng: random.Random, mean: float) -> int:
    """A Poisson count with the given mean."""
    count, threshold, product = 0, math.exp(-mean), rng.random()
    while product > threshold:
        count += 1
        product *= rng.random()
    return count


def _hit(start: datetime.datetime, time_ms: int, hit_type: str, fields: dict) -> dict:
    at = start + datetime.timedelta(milliseconds=time_ms)
    return {"_t": time_ms, "time": str(time_ms), "hour": str(at.hour), "minute": str(at.minute),
            "type": hit_type, **fields}


def _article_page(article: dict) -> dict:
    return {"page": {"pagePath": f"/{article['category']}/{article['id']}", "hostname": HOSTNAME,
                     "pageTitle": f"{article['category'].title()} story {article['id']}"},
            "customDimensions": [{"index": "10", "value": article["id"]},
                                 {"index": "11", "value": article["author"]},
                                 {"index": "12", "value": article["category"]}]}


def _front_page(rng: random.Random) -> dict:
    section = rng.choice(("",) + CATEGORIES)
    return {"page": {"pagePath": f"/{section}", "hostname": HOSTNAME,
                     "pageTitle": section.title() or "Home"},
            "customDimensions": [{"index": "12", "value": section}] if section else []}


def _ecommerce_hits(rng: random.Random, start: datetime.datetime, time_ms: int) -> list[dict]:
    shown = rng.sample(PRODUCTS, 4)
    viewed = rng.sample(shown, rng.choice((1, 1, 2)))
    hits = [_hit(start, time_ms, "EVENT", {
        "eCommerceAction": {"action_type": "0", "step": "1"},
        "product": [{"productSKU": sku, "isImpression": True} for sku in shown]})]
    for sku in viewed:
        time_ms += rng.randrange(5_000, 60_000)
        hits.append(_hit(start, time_ms, "EVENT", {
            "eCommerceAction": {"action_type": "2", "step": "1"},
            "product": [{"productSKU": sku, "isImpression": None}]}))
    if rng.random() < 0.3:
        time_ms += rng.randrange(30_000, 300_000)
        hits.append(_hit(start, time_ms, "EVENT", {
            "eCommerceAction": {"action_type": "6", "step": "1"},
            "product": [{"productSKU": viewed[0], "isImpression": None,
                         "productQuantity": "1"}]}))
    return hits


def _session_row(rng: random.Random, visitor_id: str, visit_number: int,
                 start: datetime.datetime, hits: list[dict]) -> dict:
    start_seconds = int(start.timestamp())
    hit_times = [int(h["time"]) for h in hits]
    pageviews = sum(h["type"] == "PAGE" for h in hits)
    return {
        "visitNumber": str(visit_number), "visitId": str(start_seconds),
        "visitStartTime": str(start_seconds), "date": start.strftime("%Y%m%d"),
        "totals": {"visits": "1", "hits": str(len(hits)), "pageviews": str(pageviews),
                   "timeOnSite": str(max(hit_times) // 1000) if len(hits) > 1 else None,
                   "bounces": "1" if pageviews == 1 else None},
        "trafficSource": {"source": rng.choice(("google", "(direct)", "twitter.com",
                                                "newsletter")), "medium": "organic"},
        "device": {"deviceCategory": rng.choice(("mobile", "mobile", "desktop", "tablet"))},
        "fullVisitorId": visitor_id, "channelGrouping": "Organic Search", "hits": hits}


def write_sessions(sessions: Iterable[dict], path: str) -> int:
    """Writes sessions as NDJSON (gzip if path ends in .gz, byte-reproducible); returns the count.

    Local paths use plain files; other schemes (gs://) go through tf.io.gfile.
    """
    if "://" in path:
        import tensorflow as tf  # only for remote output
        raw = tf.io.gfile.GFile(path, "wb")
    else:
        raw = open(path, "wb")
    count = 0
    with raw:
        out = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") \
            if path.endswith(".gz") else raw
        with out:
            for session in sessions:
                out.write(json.dumps(session, separators=(",", ":")).encode("utf-8") + b"\n")
                count += 1
    return count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.sample", description=__doc__.split("\n\n")[0])
    parser.add_argument("--visitors", type=int, default=3000)
    parser.add_argument("--articles", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--ecommerce_rate", type=float, default=0.03)
    parser.add_argument("--output", default=SAMPLE_PATH, help=".ndjson or .ndjson.gz")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    started = time.monotonic()
    count = write_sessions(generate_sessions(args.visitors, args.articles, args.seed,
                                             ecommerce_rate=args.ecommerce_rate), args.output)
    logging.info("sample: wrote %d sessions of %d visitors, %d articles to %s in %.1f s",
                 count, args.visitors, args.articles, args.output, time.monotonic() - started)


if __name__ == "__main__":
    main()
