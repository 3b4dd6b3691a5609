"""GA360 session rows -> (visitorId, contentId, value) interactions. Pure Python: no Beam, no TF.

A session is one row of the GA360 BigQuery export (`fullVisitorId`, `visitId`, `hits[]`), either a
dict from BigQuery or a line of a `bq extract --destination_format=NEWLINE_DELIMITED_JSON` file,
where INT64 fields are written as strings ("time": "12345"); both forms are read.

Presets (the BigQuery SQL in `pipeline.sources.sql` gives the same interactions on the same sessions):

news
    Take the session's PAGE hits ordered by (time, hitNumber). A PAGE hit's time on page is the
    next PAGE hit's time minus its own; the last PAGE hit contributes nothing. contentId is the
    first custom dimension with index `content_dimension` (default 10); a PAGE hit without it
    contributes nothing but still ends the previous page's time. Non-PAGE hits are ignored.
ecommerce
    contentId = hits.product.productSKU of non-impression products (isImpression null/false).
    value = number of product detail views (eCommerceAction.action_type '2')
            + purchase_weight x number of purchases (action_type '6'); productQuantity is ignored.
    The default purchase_weight of 5 makes one purchase worth five detail views: a purchase is a
    much stronger (and much rarer) preference signal than a view.

`session_interactions` sums within one session; `aggregate` sums across sessions and drops sums
<= 0 (the Beam job does the same with a CombinePerKey).

A row that cannot be read faithfully is rejected as a whole (`RejectedRow` with a stable `.reason`)
rather than partly used: only the fields a preset actually reads are checked, so noise in
ignored hits (EVENT hits, unrelated dimensions) never rejects a session. That includes ids holding a
character of the prediction file format (`visitorId<TAB>contentId1,contentId2,...`, one user a line):
`id_separator_reason` is the one check every source applies.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Any

PRESETS = ("news", "ecommerce")
SCHEMAS = ("ua", "ga4")  # --ga_schema: Universal Analytics ga_sessions_*, GA4 events_* (ga4.py)
DEFAULT_CONTENT_DIMENSION = 10
SESSION_KEY_SEPARATOR = "\x1f"  # visitor + it + visitId: split at the last one (visitId: digits)
DEFAULT_PURCHASE_WEIGHT = 5.0
# GA ends a session after at most 4 hours of inactivity, so a longer time on page cannot be real.
DEFAULT_MAX_TIME_ON_PAGE_MS = 4 * 60 * 60 * 1000

# Every reason a row can be rejected with, so callers can pre-declare counters.
REJECT_REASONS = (
    "invalid_json",          # line is not JSON (or not UTF-8)
    "not_an_object",         # JSON value is not an object
    "missing_visitor_id",    # fullVisitorId absent, null or blank
    "invalid_visitor_id",    # fullVisitorId not a string
    "missing_visit_id",      # visitId absent, null or not an integer
    "hits_not_a_list",       # hits absent or not an array
    "malformed_hit",         # a hit (or its customDimensions/product/eCommerceAction) has the wrong type
    "non_numeric_time",      # a PAGE hit's time absent or not an integer
    "non_numeric_hit_number",  # a PAGE hit's hitNumber absent or not an integer
    "duplicate_hit_number",  # two PAGE hits share a hitNumber: page order would be ambiguous
    "empty_content_id",      # the content dimension / productSKU is present but empty
    "separator_in_user_id",  # fullVisitorId holds a comma, TAB or line break (see ID_FORBIDDEN)
    "separator_in_item_id",  # a content id / productSKU holds one
    "absurd_duration",       # a time on page above max_time_on_page_ms
)

_INT_TEXT = re.compile(r"[+-]?\d+")

# What an id may hold, decided once for every output: not the characters the text outputs
# separate with. Prediction lines are `id<TAB>id1,id2,...` on both sides (batch_pred,
# users_for_item, similar_items), vocabularies are one id per line, and Python's
# str.splitlines() also ends a line at \v \f \x1c-\x1e \x85 \u2028 \u2029. Ids holding any of these
# are rejected (counted, with a reason); CSV and JSON outputs quote and escape by their standards.
ID_FORBIDDEN = ",\t\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
ID_SEPARATORS = {"user_id": ID_FORBIDDEN, "item_id": ID_FORBIDDEN}
_SEPARATOR_RES = {side: re.compile(f"[{re.escape(chars)}]") for side, chars in ID_SEPARATORS.items()}


def re2_class(chars: str) -> str:
    """`chars` as an RE2 character class (BigQuery, DuckDB and pyarrow all use RE2)."""
    return "[" + "".join(f"\\x{{{ord(c):x}}}" for c in chars) + "]"


def id_separator_reason(side: str, value: str) -> str | None:
    """`separator_in_<side>` if `value` (side "user_id" or "item_id") holds one of its ID_SEPARATORS."""
    return f"separator_in_{side}" if _SEPARATOR_RES[side].search(value) else None


class RejectedRow(Exception):
    """A whole input row that cannot be used; `.reason` is one of REJECT_REASONS."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail

    def __reduce__(self):  # picklable with its reason (Beam may ship exceptions between workers)
        return RejectedRow, (self.reason, self.detail)


def parse_session_line(line: str | bytes) -> dict:
    """Parses one NDJSON line into a session dict; raises RejectedRow(invalid_json/not_an_object)."""
    try:
        if isinstance(line, bytes):
            line = line.decode("utf-8-sig")  # a BOM may start a file written on Windows
        session = json.loads(line.lstrip("\ufeff"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise RejectedRow("invalid_json", str(e)[:200]) from None
    if not isinstance(session, dict):
        raise RejectedRow("not_an_object", f"got {type(session).__name__}")
    return session


def session_interactions(session: Any, preset: str = "news", *,
                         content_dimension: int = DEFAULT_CONTENT_DIMENSION,
                         purchase_weight: float = DEFAULT_PURCHASE_WEIGHT,
                         max_time_on_page_ms: int = DEFAULT_MAX_TIME_ON_PAGE_MS,
                         session_key: bool = False) -> list[tuple[str, str, float]]:
    """(visitorId, contentId, value) for one session, summed within it; zero values left out.
    session_key: the first field is visitorId + SESSION_KEY_SEPARATOR + visitId instead (the
    cooc stage's --cooc_scope session groups by it).

    Raises RejectedRow for a row that cannot be used, ValueError for a bad preset/parameter.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown GA preset {preset!r}; expected one of {PRESETS}")
    if not (math.isfinite(purchase_weight) and purchase_weight >= 0):
        raise ValueError(f"purchase_weight must be finite and >= 0, got {purchase_weight}")
    if not isinstance(session, dict):
        raise RejectedRow("not_an_object", f"got {type(session).__name__}")
    visitor_id = _visitor_id(session)
    # visitId is not used here, but the SQL partitions sessions by it: keep both paths equal.
    visit_id = as_int(session.get("visitId"), "missing_visit_id", "visitId")
    if session_key:
        visitor_id = f"{visitor_id}{SESSION_KEY_SEPARATOR}{visit_id}"
    hits = _hits(session)
    if preset == "news":
        per_content = _time_on_page_ms(hits, content_dimension, max_time_on_page_ms)
    else:
        per_content = _product_scores(hits, purchase_weight)
    return [(visitor_id, content_id, float(value))
            for content_id, value in per_content.items() if value != 0]


def aggregate(triples: Iterable[tuple[str, str, float]]) -> dict[tuple[str, str], float]:
    """Sums values per (visitorId, contentId) across sessions and drops sums <= 0."""
    sums: dict[tuple[str, str], float] = {}
    for visitor_id, content_id, value in triples:
        key = (visitor_id, content_id)
        sums[key] = sums.get(key, 0.0) + value
    return {key: total for key, total in sums.items() if total > 0}


# --- news -------------------------------------------------------------------------------------

def _time_on_page_ms(hits: list, content_dimension: int, max_ms: int) -> dict[str, int]:
    pages = []  # (time, hitNumber, contentId or None)
    for hit in hits:
        if hit.get("type") != "PAGE":
            continue
        time_ms = as_int(hit.get("time"), "non_numeric_time", "hits.time")
        hit_number = as_int(hit.get("hitNumber"), "non_numeric_hit_number", "hits.hitNumber")
        pages.append((time_ms, hit_number, _content_id(hit, content_dimension)))
    hit_numbers = [hit_number for _, hit_number, _ in pages]
    if len(set(hit_numbers)) != len(hit_numbers):
        raise RejectedRow("duplicate_hit_number", "two PAGE hits share a hitNumber")
    pages.sort(key=lambda page: (page[0], page[1]))

    per_content: dict[str, int] = {}
    for (time_ms, _, content_id), (next_time_ms, _, _) in zip(pages, pages[1:]):
        duration_ms = next_time_ms - time_ms
        if duration_ms > max_ms:
            raise RejectedRow("absurd_duration", f"{duration_ms} ms on one page > {max_ms} ms")
        if content_id is not None:
            per_content[content_id] = per_content.get(content_id, 0) + duration_ms
    return per_content


def _content_id(hit: dict, content_dimension: int) -> str | None:
    """Value of the hit's first custom dimension with index `content_dimension`, else None."""
    dimensions = hit.get("customDimensions")
    if dimensions is None:
        return None
    if not isinstance(dimensions, list):
        raise RejectedRow("malformed_hit", "hits.customDimensions is not a list")
    for dimension in dimensions:
        if not isinstance(dimension, dict):
            raise RejectedRow("malformed_hit", "hits.customDimensions entry is not an object")
        index = as_int(dimension.get("index"), "malformed_hit", "hits.customDimensions.index")
        if index == content_dimension:
            return _non_empty_id(dimension.get("value"), "hits.customDimensions.value")
    return None


# --- ecommerce --------------------------------------------------------------------------------

_PRODUCT_VIEW, _PURCHASE = "2", "6"


def _product_scores(hits: list, purchase_weight: float) -> dict[str, float]:
    per_sku: dict[str, float] = {}
    for hit in hits:
        action = hit.get("eCommerceAction")
        if action is None:
            continue
        if not isinstance(action, dict):
            raise RejectedRow("malformed_hit", "hits.eCommerceAction is not an object")
        action_type = str(action.get("action_type"))
        if action_type not in (_PRODUCT_VIEW, _PURCHASE):
            continue
        weight = 1.0 if action_type == _PRODUCT_VIEW else purchase_weight
        products = hit.get("product")
        if products is None:
            continue
        if not isinstance(products, list):
            raise RejectedRow("malformed_hit", "hits.product is not a list")
        for product in products:
            if not isinstance(product, dict):
                raise RejectedRow("malformed_hit", "hits.product entry is not an object")
            if _is_impression(product.get("isImpression")):
                continue
            sku = _non_empty_id(product.get("productSKU"), "hits.product.productSKU")
            per_sku[sku] = per_sku.get(sku, 0.0) + weight
    return per_sku


def _is_impression(flag: Any) -> bool:
    if flag is None or flag is False or flag == "false":
        return False
    if flag is True or flag == "true":
        return True
    raise RejectedRow("malformed_hit", f"hits.product.isImpression is {flag!r}, not a boolean")


# --- shared field readers ---------------------------------------------------------------------

def _visitor_id(session: dict) -> str:
    visitor_id = session.get("fullVisitorId")
    if visitor_id is None:
        raise RejectedRow("missing_visitor_id", "no fullVisitorId")
    if not isinstance(visitor_id, str):
        raise RejectedRow("invalid_visitor_id", f"fullVisitorId is {type(visitor_id).__name__}")
    if not visitor_id.strip():
        raise RejectedRow("missing_visitor_id", "blank fullVisitorId")
    _check_separators("user_id", visitor_id, "fullVisitorId")
    return visitor_id


def _hits(session: dict) -> list[dict]:
    hits = session.get("hits")
    if not isinstance(hits, list):
        raise RejectedRow("hits_not_a_list", f"hits is {type(hits).__name__}")
    for hit in hits:
        if not isinstance(hit, dict):
            raise RejectedRow("malformed_hit", f"hit is {type(hit).__name__}, not an object")
    return hits


def as_int(value: Any, reason: str, field: str) -> int:
    """INT64 as BigQuery exports it: a JSON integer or a string of digits."""
    if isinstance(value, bool):
        raise RejectedRow(reason, f"{field} is a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and len(value) <= 40 and _INT_TEXT.fullmatch(value.strip()):
        return int(value)
    raise RejectedRow(reason, f"{field} is {value!r:.40}")


def _non_empty_id(value: Any, field: str) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RejectedRow("empty_content_id", f"{field} is empty")
    if not isinstance(value, str):
        raise RejectedRow("malformed_hit", f"{field} is {type(value).__name__}, not a string")
    _check_separators("item_id", value, field)
    return value


def _check_separators(side: str, value: str, field: str) -> None:
    reason = id_separator_reason(side, value)
    if reason:
        raise RejectedRow(reason, f"{field} {value!r:.60} holds a separator of the prediction files")
