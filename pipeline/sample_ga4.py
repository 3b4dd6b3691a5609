"""Deterministic generator of GA4 news-site events, as `bq extract` writes the `events_*` tables.

Each yielded dict is one event of the GA4 BigQuery export (`events_YYYYMMDD`), in the form
`bq extract --destination_format NEWLINE_DELIMITED_JSON` writes it: `event_date`,
`event_timestamp` (INT64 as a string, microseconds), `event_name`, `event_params` (INT64
`int_value`s as strings; some events spell out the null value fields, others omit them),
`user_id` (set while a subscriber is logged in; omitted or explicit null otherwise),
`user_pseudo_id` and, on shop events, `items` (other events omit `items` or give []).

News events: `first_visit`, `session_start`, `page_view`, `scroll` (percent_scrolled 90) and
`user_engagement`, with `page_location` (full URLs; landing pages carry utm query strings, some
links a #fragment), `page_title`, `ga_session_id`, `ga_session_number`, `engagement_time_msec`
and, on article pages, the custom parameter `article_id` (int_value on some events, string_value
on others). Shop events: `view_item`, `add_to_cart` and `purchase` of the subscription / shop
products of pipeline.sample, some items with a blank `item_id`.

The taste model is pipeline.sample's: Zipf article popularity, one or two favourite categories
per reader, log-normal engaged time. Some subscribers read on two devices (two user_pseudo_ids,
one user_id). Days are UTC; events past the last day are left out, as if its table were not
extracted.

    python -m pipeline.sample_ga4 --visitors 2500 --articles 300 --seed 7 \\
        --output pipeline/data/ga4_events_sample.ndjson.gz
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import logging
import pathlib
import random
import time
from collections.abc import Iterator

from pipeline import sample
from pipeline.sample import CATEGORIES, HOSTNAME
from stagekit.cli import LOG_FORMAT

# the committed GA4 sample
SAMPLE_PATH = str(pathlib.Path(__file__).resolve().parent / "data" / "ga4_events_sample.ndjson.gz")
ARTICLE_PARAM = "article_id"  # the custom event parameter for --ga4_content_param
_DAY_SECONDS = 86_400
_PLANS = {"SUB-DIGITAL-M": ("Digital monthly", 9.99), "SUB-DIGITAL-Y": ("Digital yearly", 99.0),
          "SUB-PRINT-M": ("Print + digital monthly", 24.99),
          "SUB-PRINT-Y": ("Print + digital yearly", 249.0)}
_ITEMS = {sku: _PLANS.get(sku) or (f"Shop item {sku[5:]}", 4.99 + 5 * (int(sku[5:]) % 7))
          for sku in sample.PRODUCTS}
_BLANK_ITEMS = (("Gift card", 25.0), ("Donation", 5.0))  # tagged without an item_id
_CAMPAIGNS = ("?utm_source=newsletter&utm_medium=email&utm_campaign=morning",
              "?utm_source=twitter.com&utm_medium=social", "?utm_source=google&utm_medium=cpc",
              "?fbclid=IwAR0x")
_FRAGMENTS = ("#top", "#comments", "#main")
_VALUE_FIELDS = ("string_value", "int_value", "float_value", "double_value")


@dataclasses.dataclass(frozen=True)
class _Shape:
    sessions_per_visitor: float
    pages_per_session: float
    preference_strength: float
    front_page_rate: float
    shop_rate: float
    explicit_null_rate: float


@dataclasses.dataclass(frozen=True)
class _Device:
    pseudo_id: str
    user_id: str | None
    favourites: list[str]


def generate_events(n_visitors: int, n_articles: int, seed: int, *,
                    sessions_per_visitor: float = 2.5, pages_per_session: float = 3.0,
                    zipf_exponent: float = 1.0, preference_strength: float = 0.75,
                    front_page_rate: float = 0.15, subscriber_rate: float = 0.12,
                    shop_rate: float = 0.05, explicit_null_rate: float = 0.25,
                    start_date: str = "20240304", days: int = 7) -> Iterator[dict]:
    """Yields GA4 export events, day by day; the same arguments always give the same events.

    n_visitors readers (a subscriber_rate share subscribers, some of them on two devices, so
    there are a few more user_pseudo_ids than readers); sessions_per_visitor and
    pages_per_session are means of 1 + geometric counts; front_page_rate the share of pages
    (besides half the landings) that are home / section fronts without an article_id; shop_rate
    the share of sessions with shop events; explicit_null_rate the share of events that spell out
    null fields.
    """
    if n_visitors < 1 or n_articles < 1 or days < 1:
        raise ValueError("n_visitors, n_articles and days must be >= 1")
    rng = random.Random(seed)
    catalog = sample.Catalog(n_articles, rng, zipf_exponent)
    shape = _Shape(sessions_per_visitor, pages_per_session, preference_strength, front_page_rate,
                   shop_rate, explicit_null_rate)
    first_day = datetime.datetime.strptime(start_date, "%Y%m%d").replace(
        tzinfo=datetime.UTC)
    window_start = int(first_day.timestamp())
    by_day: list[list[dict]] = [[] for _ in range(days)]
    pseudo_ids: set[str] = set()
    for _ in range(n_visitors):
        favourites = rng.sample(CATEGORIES, rng.choice((1, 1, 2)))
        user_id = f"sub-{rng.randrange(10**7, 10**8)}" if rng.random() < subscriber_rate else None
        for _ in range(2 if user_id and rng.random() < 0.3 else 1):
            for event in _device_events(rng, catalog, shape, user_id, favourites, pseudo_ids,
                                        window_start, days):
                by_day[(int(event["event_timestamp"]) // 10**6 - window_start) // _DAY_SECONDS] \
                    .append(event)
    for events in by_day:
        yield from events


def _pseudo_id(rng: random.Random, first_seen: int, taken: set[str]) -> str:
    """A GA4 client id: random 31-bit number . first-seen seconds (unique in the sample)."""
    while True:
        pseudo_id = f"{rng.randrange(10**8, 2**31)}.{first_seen}"
        if pseudo_id not in taken:
            taken.add(pseudo_id)
            return pseudo_id


def _device_events(rng: random.Random, catalog: sample.Catalog, shape: _Shape,
                   user_id: str | None, favourites: list[str], pseudo_ids: set[str],
                   window_start: int, days: int) -> Iterator[dict]:
    """The events of one device (a new user_pseudo_id) in the window."""
    n_sessions = sample.one_plus_geometric(rng, shape.sessions_per_visitor)
    starts = sorted(rng.sample(range(days * _DAY_SECONDS), n_sessions))
    earlier = 0 if rng.random() < 0.4 else rng.randrange(1, 40)  # sessions before the window
    first_seen = window_start + starts[0] if earlier == 0 else \
        window_start - rng.randrange(_DAY_SECONDS, 365 * _DAY_SECONDS)
    device = _Device(_pseudo_id(rng, first_seen, pseudo_ids), user_id, favourites)
    window_end_us = (window_start + days * _DAY_SECONDS) * 10**6
    for number, offset in enumerate(starts, start=earlier + 1):
        session_id = window_start + offset
        logged_in_from = _login_page(rng) if device.user_id else None
        for at_ms, name, params, items, page in _session(rng, catalog, device, shape, number,
                                                          session_id):
            timestamp_us = session_id * 10**6 + at_ms * 1000 + rng.randrange(1000)
            if timestamp_us >= window_end_us:
                break  # that day's table is not in the sample
            logged_in = logged_in_from is not None and page >= logged_in_from
            yield _export(rng, shape, timestamp_us, name, params, items,
                          device.user_id if logged_in else None, device.pseudo_id)


def _login_page(rng: random.Random) -> int | None:
    """The page from which a subscriber's session is logged in (None: not logged in)."""
    draw = rng.random()
    return 0 if draw < 0.6 else (None if draw < 0.85 else 1 + int(rng.random() * 3))


def _session(rng: random.Random, catalog: sample.Catalog, device: _Device, shape: _Shape,
             number: int, session_id: int) -> list[tuple]:
    """(ms after session start, event name, params, items, page number) in time order."""
    events: list[tuple] = []
    session = [("ga_session_id", session_id), ("ga_session_number", number)]
    at_ms = 0
    pages = sample.one_plus_geometric(rng, shape.pages_per_session)
    for page in range(pages):
        landing = page == 0
        article = None
        if (landing and rng.random() < 0.5) or rng.random() < shape.front_page_rate:
            section = rng.choice(("",) + CATEGORIES)
            location, title = f"https://{HOSTNAME}/{section}", section.title() or "Home"
        else:
            category = rng.choice(device.favourites) \
                if rng.random() < shape.preference_strength else None
            article = catalog.draw(rng, category)
            location = f"https://{HOSTNAME}/{article['category']}/article-{article['id']}"
            title = f"{article['category'].title()} story {article['id']}"
        if landing and rng.random() < 0.35:
            location += rng.choice(_CAMPAIGNS)
        if rng.random() < 0.06:
            location += rng.choice(_FRAGMENTS)
        where = [("page_location", location), ("page_title", title)]
        if landing:
            if number == 1:
                events.append((at_ms, "first_visit", where + session, None, page))
            events.append((at_ms, "session_start", where + session, None, page))
        engaged = sample.time_on_page_ms(rng, 45.0 if article else 12.0)
        tagged = functools.partial(_page_params, rng, where + session, article)
        before = rng.randrange(1, engaged // 10) if not landing and rng.random() < 0.2 else 0
        events.append((at_ms, "page_view", tagged([], before), None, page))
        left = engaged - before
        if article and rng.random() < 0.4:
            share = int(left * rng.uniform(0.3, 0.9))
            reported = share if rng.random() < 0.6 else 0  # else it goes with user_engagement
            events.append((at_ms + before + share, "scroll",
                           tagged([("percent_scrolled", 90)], reported), None, page))
            left -= reported
        wall_ms = engaged + rng.randrange(0, 20_000)  # engaged time < wall time (hidden tabs)
        if rng.random() < 0.9:  # else the beacon is lost (tab closed)
            events.append((at_ms + wall_ms, "user_engagement", tagged([], left), None, page))
        at_ms += wall_ms + rng.randrange(200, 2_000)
    if rng.random() < shape.shop_rate:
        events.extend(_shop(rng, session, at_ms, pages - 1))
    return events


def _page_params(rng: random.Random, common: list[tuple], article: dict | None, params: list,
                 engaged_ms: int = 0) -> list[tuple]:
    """common + params + engagement_time_msec (when > 0) + article_id (int or string)."""
    extra = [("engagement_time_msec", engaged_ms)] if engaged_ms > 0 else []
    if article:
        extra.append((ARTICLE_PARAM, int(article["id"]) if rng.random() < 0.5 else article["id"]))
    return common + params + extra


def _shop(rng: random.Random, session: list[tuple], at_ms: int, page: int) -> list[tuple]:
    """view_item for 1-2 products, sometimes add_to_cart, sometimes a purchase."""
    weights = [6 if sku in _PLANS else 1 for sku in sample.PRODUCTS]
    viewed = list(dict.fromkeys(rng.choices(sample.PRODUCTS, weights, k=rng.choice((1, 1, 2)))))
    events = []
    for sku in viewed:
        at_ms += rng.randrange(5_000, 60_000)
        items = [_item(sku, 1)]
        if rng.random() < 0.1:
            items.append(_blank_item(rng))
        events.append((at_ms, "view_item", [("page_location", f"https://{HOSTNAME}/shop/{sku}")]
                       + session + [("currency", "EUR")], items, page))
    if rng.random() < 0.5:
        at_ms += rng.randrange(5_000, 60_000)
        events.append((at_ms, "add_to_cart", session + [("currency", "EUR")],
                       [_item(viewed[0], rng.choice((1, 1, 2)))], page))
        if rng.random() < 0.6:
            at_ms += rng.randrange(30_000, 300_000)
            items = [_item(sku, 1) for sku in viewed[:rng.choice((1, len(viewed)))]]
            if rng.random() < 0.2:
                items.append(_blank_item(rng))
            total = round(sum(item["price"] * int(item["quantity"]) for item in items), 2)
            events.append((at_ms, "purchase", [("page_location", f"https://{HOSTNAME}/checkout")]
                           + session + [("transaction_id", f"T-{rng.randrange(10**6, 10**7)}"),
                                        ("currency", "EUR"), ("value", total)], items, page))
    return events


def _item(sku: str, quantity: int) -> dict:
    name, price = _ITEMS[sku]
    return {"item_id": sku, "item_name": name, "quantity": str(quantity), "price": price}


def _blank_item(rng: random.Random) -> dict:
    name, price = rng.choice(_BLANK_ITEMS)
    return {"item_id": "", "item_name": name, "quantity": "1", "price": price}


def _export(rng: random.Random, shape: _Shape, timestamp_us: int, name: str, params: list,
            items: list | None, user_id: str | None, pseudo_id: str) -> dict:
    """The event as one NDJSON line of `bq extract` (schema column order)."""
    explicit = rng.random() < shape.explicit_null_rate
    date = datetime.datetime.fromtimestamp(timestamp_us // 10**6, datetime.UTC)
    event = {"event_date": date.strftime("%Y%m%d"), "event_timestamp": str(timestamp_us),
             "event_name": name,
             "event_params": [{"key": key, "value": _value(value, explicit)}
                              for key, value in params]}
    if user_id or explicit:
        event["user_id"] = user_id
    event["user_pseudo_id"] = pseudo_id
    if items:
        event["items"] = items
    elif rng.random() < 0.3:
        event["items"] = []
    return event


def _value(value: str | float, explicit: bool) -> dict:
    """An event_params value: one typed field (INT64 as a string), the others null or omitted."""
    if isinstance(value, str):
        field = {"string_value": value}
    elif isinstance(value, int):
        field = {"int_value": str(value)}
    else:
        field = {"double_value": float(value)}
    return {name: field.get(name) for name in _VALUE_FIELDS} if explicit else field


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.sample_ga4",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--visitors", type=int, default=2500, help="readers (people)")
    parser.add_argument("--articles", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--start_date", default="20240304", help="first event_date, YYYYMMDD")
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--shop_rate", type=float, default=0.05,
                        help="share of sessions with view_item / add_to_cart / purchase events")
    parser.add_argument("--output", default=SAMPLE_PATH, help=".ndjson or .ndjson.gz")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    started = time.monotonic()
    count = sample.write_sessions(
        generate_events(args.visitors, args.articles, args.seed, shop_rate=args.shop_rate,
                        start_date=args.start_date, days=args.days), args.output)
    logging.getLogger(__name__).info(
        "wrote %d events of %d visitors, %d articles, %d days to %s in %.1f s", count,
        args.visitors, args.articles, args.days, args.output, time.monotonic() - started)


if __name__ == "__main__":
    main()
