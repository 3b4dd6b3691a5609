"""GA4 export events for the tests: one event builder, and a seeded mix of every awkward case an
events_* export holds (int and string parameter values, explicit and omitted NULLs, query strings
and fragments, user_id on some events only, blank item_id, several days)."""
from __future__ import annotations

import random

DATES = ("20240101", "20240102", "20240103")
PAGES = ("https://news.example.com/world/a1", "https://news.example.com/sport/a2",
         "https://news.example.com/a3", "https://news.example.com/politics/a4")


def param(key: str, explicit_nulls: bool = False, **value) -> dict:
    """An event_params entry; explicit_nulls writes the unused value fields as null, as some
    exports do, instead of leaving them out."""
    if explicit_nulls:
        value = {**{f: None for f in ("string_value", "int_value", "float_value", "double_value")},
                 **value}
    return {"key": key, "value": value}


def event(name: str, pseudo_id: str | None = "p1", *, date: str = DATES[0], user_id=None,
          params: list | None = None, items: list | None = None, omit_nulls: bool = True) -> dict:
    row = {"event_date": date, "event_timestamp": "1704067200000000", "event_name": name,
           "user_pseudo_id": pseudo_id, "user_id": user_id, "event_params": params, "items": items}
    if omit_nulls:
        row = {k: v for k, v in row.items() if v is not None}
    return row


def mixed_events(n: int = 600, seed: int = 7) -> list[dict]:
    """n valid events (the SQL sees typed rows only) over a few visitors, pages, items and days."""
    rng = random.Random(seed)
    events = []
    for _ in range(n):
        pseudo = f"p{rng.randrange(12)}"
        user_id = rng.choice([None, None, "", "  ", f"u{pseudo[1:]}", "u-shared"])
        nulls = rng.random() < 0.5
        params = []
        if rng.random() < 0.9:
            page = rng.choice(PAGES) + rng.choice(["", "?utm=x", "#top", "?a=1#b", "?", "#"])
            params.append(param("page_location", nulls, string_value=page))
        if rng.random() < 0.3:  # a custom dimension as a parameter: int or string values
            params.append(param("article_id", nulls, **rng.choice(
                [{"int_value": str(rng.randrange(3))}, {"string_value": f"{rng.randrange(3)}?x"},
                 {"string_value": ""}])))
        if rng.random() < 0.8:
            params.append(param("engagement_time_msec", nulls, **rng.choice(
                [{"int_value": str(rng.randrange(0, 5000))}, {"int_value": "0"},
                 {"double_value": rng.random() * 100}, {}])))
        if rng.random() < 0.85:
            params.append(param("ga_session_id", nulls, int_value=str(rng.randrange(3))))
        name = rng.choice(["page_view", "user_engagement", "scroll", "session_start",
                           "view_item", "purchase", "add_to_cart"])
        items = None
        if name in ("view_item", "purchase", "add_to_cart") and rng.random() < 0.9:
            items = [{"item_id": rng.choice(["SKU-1", "SKU-2", "SKU-3", "", " "]),
                      "item_name": "x", "quantity": str(rng.randrange(1, 4))}
                     for _ in range(rng.randrange(0, 3))]
        events.append(event(name, pseudo, date=rng.choice(DATES), user_id=user_id,
                            params=params if params or rng.random() < 0.5 else None,
                            items=items, omit_nulls=not nulls))
    return events
