"""GA4 export events -> (visitorId, contentId, value) interactions. Pure Python: no Beam, no TF.

An event is one row of a GA4 BigQuery export table `events_YYYYMMDD` (`event_name`,
`user_pseudo_id`, `user_id`, repeated `event_params` {key, value.string_value | int_value |
float_value | double_value}, repeated `items` {item_id, ...}), either a dict from BigQuery or a
line of a `bq extract --destination_format NEWLINE_DELIMITED_JSON` file: INT64 fields written as
strings, NULL fields omitted or explicit, empty repeated fields omitted. The BigQuery SQL in
`pipeline.sources.sql` gives the same interactions on the same events.

Visitor: `user_pseudo_id`; with visitor="user_id", `user_id` where it is set and not blank, else
`user_pseudo_id`.

Presets:

news
    contentId = the event parameter `content_param` (default page_location): its string_value,
    else its int_value in decimal, cut at the first `?` or `#` (query strings and fragments name
    the same page); empty means no content. An event with a content id and an
    `engagement_time_msec` parameter > 0 adds that time. value = the sum per (visitor, content),
    in ms: GA4 measures engaged time itself, so there is no time-difference logic as in UA.
ecommerce
    Per (visitor, items[].item_id): the number of `view_item` events listing the item +
    purchase_weight x the number of `purchase` events listing it. Each items entry counts once
    (quantity is ignored); an empty item_id is skipped; other events are ignored.

Session (the cooc stage's --cooc_scope session): (visitor, the `ga_session_id` parameter); an
event without one belongs to no session and adds nothing in that scope.

Rejected (`ga.RejectedRow`, whole event): a line that is not a JSON object, no user_pseudo_id
(consent-mode cookieless pings), event_params present but not a list, a non-numeric
engagement_time_msec, and, as for every source, malformed fields the preset reads and ids holding
a separator of the prediction files. A valid event that contributes nothing (a session_start, a
page without engaged time) is accepted.
"""
from __future__ import annotations

import math
import re
from typing import Any

from pipeline.sources import ga

VISITORS = ("user_pseudo_id", "user_id")
DEFAULT_CONTENT_PARAM = "page_location"
ENGAGEMENT_PARAM = "engagement_time_msec"
SESSION_PARAM = "ga_session_id"
VIEW_ITEM, PURCHASE = "view_item", "purchase"
# An event parameter name the SQL may quote: GA4 allows letters, digits and underscores (40 max).
PARAM_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,99}")
VALUE_FIELDS = ("string_value", "int_value", "float_value", "double_value")

REJECT_REASONS = (
    "invalid_json",              # line is not JSON (or not UTF-8)
    "not_an_object",             # JSON value is not an object
    "missing_user_pseudo_id",    # user_pseudo_id absent, null or blank
    "invalid_visitor_id",        # user_pseudo_id / user_id not a string
    "event_params_not_a_list",   # event_params present but not an array
    "items_not_a_list",          # items present but not an array
    "malformed_event",           # an event_params / items entry (or a value read) has the wrong type
    "non_numeric_engagement_time",  # engagement_time_msec holds no number
    "separator_in_user_id",      # the visitor id holds a separator of the prediction files
    "separator_in_item_id",      # the content id / item_id holds one
)


def check_param_name(name: str, flag: str = "--ga4_content_param") -> str:
    if not isinstance(name, str) or not PARAM_NAME.fullmatch(name):
        raise ValueError(f"invalid {flag} {name!r}: an event parameter name (letters, digits, "
                         "underscores; starting with a letter), e.g. page_location")
    return name


def event_interactions(event: Any, preset: str = "news", *, visitor: str = "user_pseudo_id",
                       content_param: str = DEFAULT_CONTENT_PARAM,
                       purchase_weight: float = ga.DEFAULT_PURCHASE_WEIGHT,
                       session_key: bool = False) -> list[tuple[str, str, float]]:
    """(visitorId, contentId, value) of one event, summed within it; zero values left out.
    session_key: the first field is visitorId + ga.SESSION_KEY_SEPARATOR + ga_session_id.

    Raises ga.RejectedRow for an event that cannot be used, ValueError for a bad option."""
    if preset not in ga.PRESETS:
        raise ValueError(f"unknown GA preset {preset!r}; expected one of {ga.PRESETS}")
    if visitor not in VISITORS:
        raise ValueError(f"unknown GA4 visitor {visitor!r}; expected one of {VISITORS}")
    if not (math.isfinite(purchase_weight) and purchase_weight >= 0):
        raise ValueError(f"purchase_weight must be finite and >= 0, got {purchase_weight}")
    if not isinstance(event, dict):
        raise ga.RejectedRow("not_an_object", f"got {type(event).__name__}")
    visitor_id = _visitor_id(event, visitor)
    params = _repeated(event, "event_params", "event_params_not_a_list")
    if preset == "news":
        per_content = _engaged_time(params, content_param)
    else:
        per_content = _item_scores(event, purchase_weight)
    if session_key and per_content:
        session = _param_value(params, SESSION_PARAM)
        session_id = None if session is None else _int_field(session, "int_value", SESSION_PARAM)
        if session_id is None:
            return []  # no session to co-occur in
        visitor_id = f"{visitor_id}{ga.SESSION_KEY_SEPARATOR}{session_id}"
    return [(visitor_id, content_id, float(value))
            for content_id, value in per_content.items() if value != 0]


# --- news -------------------------------------------------------------------------------------

def _engaged_time(params: list, content_param: str) -> dict[str, float]:
    content = _param_value(params, content_param)
    content_id = None if content is None else _content_id(content, content_param)
    engagement = _param_value(params, ENGAGEMENT_PARAM)
    milliseconds = None if engagement is None else _engagement_ms(engagement)
    if not content_id or milliseconds is None or not milliseconds > 0:
        return {}
    _check_separators("item_id", content_id)
    return {content_id: milliseconds}


def _content_id(value: dict, name: str) -> str | None:
    """string_value, else int_value in decimal, cut at the first ? or #; None when empty."""
    text = value.get("string_value")
    if text is not None:
        if not isinstance(text, str):
            raise ga.RejectedRow("malformed_event", f"{name}.string_value is {type(text).__name__}")
    else:
        number = _int_field(value, "int_value", name)
        if number is None:
            return None
        text = str(number)
    return re.split(r"[?#]", text, maxsplit=1)[0] or None


def _engagement_ms(value: dict) -> float | None:
    """The first numeric field (int_value, double_value, float_value); None when none is set.
    A string_value (and no number) or a value of the wrong type is not a number: rejected."""
    number = _int_field(value, "int_value", ENGAGEMENT_PARAM, "non_numeric_engagement_time")
    if number is not None:
        return float(number)
    for field in ("double_value", "float_value"):
        number = value.get(field)
        if number is None:
            continue
        if isinstance(number, bool) or not isinstance(number, (int, float)) \
                or not math.isfinite(number):
            raise ga.RejectedRow("non_numeric_engagement_time",
                                 f"{ENGAGEMENT_PARAM}.{field} is {number!r:.40}")
        return float(number)
    if value.get("string_value") is not None:
        raise ga.RejectedRow("non_numeric_engagement_time",
                             f"{ENGAGEMENT_PARAM} is the string {value['string_value']!r:.40}")
    return None


# --- ecommerce --------------------------------------------------------------------------------

def _item_scores(event: dict, purchase_weight: float) -> dict[str, float]:
    name = event.get("event_name")
    if name not in (VIEW_ITEM, PURCHASE):
        return {}
    weight = 1.0 if name == VIEW_ITEM else purchase_weight
    per_item: dict[str, float] = {}
    for item in _repeated(event, "items", "items_not_a_list"):
        item_id = item.get("item_id")
        if item_id is None or (isinstance(item_id, str) and not item_id.strip()):
            continue  # an empty item_id names no product
        if not isinstance(item_id, str):
            raise ga.RejectedRow("malformed_event", f"items.item_id is {type(item_id).__name__}")
        _check_separators("item_id", item_id)
        per_item[item_id] = per_item.get(item_id, 0.0) + weight
    return per_item


# --- shared field readers ---------------------------------------------------------------------

def _visitor_id(event: dict, visitor: str) -> str:
    pseudo_id = event.get("user_pseudo_id")
    if pseudo_id is None or (isinstance(pseudo_id, str) and not pseudo_id.strip()):
        raise ga.RejectedRow("missing_user_pseudo_id", "no user_pseudo_id (a cookieless ping?)")
    if not isinstance(pseudo_id, str):
        raise ga.RejectedRow("invalid_visitor_id", f"user_pseudo_id is {type(pseudo_id).__name__}")
    chosen = pseudo_id
    if visitor == "user_id":
        user_id = event.get("user_id")
        if user_id is not None and not isinstance(user_id, str):
            raise ga.RejectedRow("invalid_visitor_id", f"user_id is {type(user_id).__name__}")
        if user_id is not None and user_id.strip():
            chosen = user_id
    _check_separators("user_id", chosen)
    return chosen


def _repeated(event: dict, field: str, reason: str) -> list[dict]:
    """A repeated record: missing or null is empty (exports omit empty arrays)."""
    entries = event.get(field)
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ga.RejectedRow(reason, f"{field} is {type(entries).__name__}")
    for entry in entries:
        if not isinstance(entry, dict):
            raise ga.RejectedRow("malformed_event", f"{field} entry is {type(entry).__name__}")
    return entries


def _param_value(params: list[dict], key: str) -> dict | None:
    """The value record of the first parameter named `key`, else None."""
    for param in params:
        if param.get("key") == key:
            value = param.get("value")
            if value is None:
                return {}
            if not isinstance(value, dict):
                raise ga.RejectedRow("malformed_event", f"event_params {key} value is not an object")
            return value
    return None


def _int_field(value: dict, field: str, name: str, reason: str = "malformed_event") -> int | None:
    number = value.get(field)
    return None if number is None else ga.as_int(number, reason, f"{name}.{field}")


def _check_separators(side: str, value: str) -> None:
    reason = ga.id_separator_reason(side, value)
    if reason:
        raise ga.RejectedRow(reason, f"{value!r:.60} holds a separator of the prediction files")
