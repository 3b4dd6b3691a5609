"""BigQuery standard SQL for the GA presets, with strict validation of everything interpolated.

The queries give exactly what `pipeline.sources.ga` computes on the export files (one row per
(visitorId, contentId), summed across sessions, value > 0), including the whole-session rejects
that can happen on typed BigQuery data: a session with a PAGE hit lacking time or hitNumber, two
PAGE hits sharing a hitNumber, an empty content id or an absurd time on page yields nothing, like
the row `ga.session_interactions` rejects. Sessions are partitioned by (fullVisitorId, visitId,
date): the old course query partitioned by visitor only and so carried time across sessions, and
GA360 splits a session that spans midnight into one row per daily table with the same visitId,
which the export reader also treats as two rows.

Nothing from the command line reaches the SQL unchecked: the table name must match a strict
project.dataset.table pattern, dates must be real YYYYMMDD dates, numbers are formatted from
validated ints/floats. UNNEST elements are always aliased (`UNNEST(s.hits) AS h`) so the text
also transpiles (sqlglot, BigQuery -> DuckDB) for the local execution check.

`check_bigquery_ready` is the stage's up-front check of what running the query needs (credentials,
a project, and for local runs a gs:// temp location), so a misconfigured run fails before it
starts.
"""
from __future__ import annotations

import math

from pipeline.sources import ga4
from pipeline.sources.ga import (DEFAULT_CONTENT_DIMENSION, DEFAULT_MAX_TIME_ON_PAGE_MS,
                                 DEFAULT_PURCHASE_WEIGHT, ID_SEPARATORS, PRESETS, re2_class)
from stagekit.bigquery_names import validate_date, validate_table  # noqa: F401 (checked here)

MAX_CUSTOM_DIMENSION = 200  # GA360 has custom dimensions 1..200
# Ids that would break the prediction files (pipeline.sources.ga.ID_SEPARATORS): the session is dropped,
# as pipeline.sources.ga rejects it.
_BAD_IDS = (f"REGEXP_CONTAINS(contentId, r'{re2_class(ID_SEPARATORS['item_id'])}') "
            f"OR REGEXP_CONTAINS(visitorId, r'{re2_class(ID_SEPARATORS['user_id'])}')")


def build_query(preset: str, table: str, *, content_dimension: int = DEFAULT_CONTENT_DIMENSION,
                start_date: str | None = None, end_date: str | None = None,
                purchase_weight: float = DEFAULT_PURCHASE_WEIGHT,
                max_time_on_page_ms: int = DEFAULT_MAX_TIME_ON_PAGE_MS,
                session_key: bool = False) -> str:
    """Standard SQL giving columns visitorId, contentId, value (FLOAT64 > 0), summed across sessions
    (session_key: per session, visitorId = fullVisitorId + CHR(31) + visitId, as
    pipeline.sources.ga.session_interactions keys them for the cooc stage's session scope).

    start_date / end_date (YYYYMMDD, inclusive) filter `_TABLE_SUFFIX`, so they need a wildcard
    table (`...ga_sessions_*`); they also keep out `ga_sessions_intraday_*` tables, whose
    suffix starts with a letter.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown GA preset {preset!r}; expected one of {PRESETS}")
    table = validate_table(table)
    where = ["s.fullVisitorId IS NOT NULL", "TRIM(s.fullVisitorId) != ''",
             "s.visitId IS NOT NULL"] + _date_filter(table, start_date, end_date)
    if preset == "news":
        return _news_query(table, " AND ".join(where),
                           _checked_int(content_dimension, "content_dimension", 1,
                                        MAX_CUSTOM_DIMENSION),
                           _checked_int(max_time_on_page_ms, "max_time_on_page_ms", 1, 10**12),
                           _group_key(session_key))
    return _ecommerce_query(table, " AND ".join(where), _checked_weight(purchase_weight),
                            _group_key(session_key))


def _group_key(session_key: bool) -> str:
    """The final SELECT's visitorId: the visitor, or the visitor's session."""
    return "CONCAT(visitorId, CHR(31), CAST(visitId AS STRING))" if session_key else "visitorId"


def query_for(args, session_key: bool = False) -> str:
    """The query of `--source bigquery` for the source flags (--table, --ga_schema, --ga_preset,
    --start_date, --end_date and the preset's and schema's options), every one checked: a bad one
    raises a ValueError naming it. No I/O, no Beam: the driver runs it among its up-front flag
    checks, and --print_query prints it."""
    schema = getattr(args, "ga_schema", "ua")
    if not args.table:
        example = "analytics_123456789.events_*" if schema == "ga4" else "123456789.ga_sessions_*"
        raise ValueError(f"--source bigquery needs --table, e.g. my-project.{example}")
    if schema == "ga4":
        return build_ga4_query(args.ga_preset, args.table, visitor=args.ga4_visitor,
                               content_param=args.ga4_content_param, start_date=args.start_date,
                               end_date=args.end_date, purchase_weight=args.purchase_weight,
                               session_key=session_key)
    return build_query(args.ga_preset, validate_table(args.table),
                       content_dimension=args.content_dimension, start_date=args.start_date,
                       end_date=args.end_date, purchase_weight=args.purchase_weight,
                       session_key=session_key)


def _date_filter(table: str, start_date: str | None, end_date: str | None) -> list[str]:
    if start_date is None and end_date is None:
        return []
    if not table.endswith("*"):
        raise ValueError(f"--start_date/--end_date filter _TABLE_SUFFIX and need a wildcard "
                         f"table such as project.dataset.ga_sessions_*; got {table!r}")
    conditions = []
    if start_date is not None:
        conditions.append(f"_TABLE_SUFFIX >= '{validate_date(start_date, 'start_date')}'")
    # without an end, '99999999' still keeps out ga_sessions_intraday_* ('i' sorts after digits)
    end = "99999999" if end_date is None else validate_date(end_date, "end_date")
    conditions.append(f"_TABLE_SUFFIX <= '{end}'")
    if start_date is not None and end_date is not None and start_date > end_date:
        raise ValueError(f"start_date {start_date} is after end_date {end_date}")
    return conditions


def _checked_weight(purchase_weight: float) -> float:
    if not (isinstance(purchase_weight, (int, float)) and not isinstance(purchase_weight, bool)
            and math.isfinite(purchase_weight) and purchase_weight >= 0):
        raise ValueError(f"purchase_weight must be a finite number >= 0, got {purchase_weight!r}")
    return float(purchase_weight)


def _checked_int(value: int, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return value


def _news_query(table: str, where: str, content_dimension: int, max_time_on_page_ms: int,
                key: str = "visitorId") -> str:
    return f"""\
WITH page_hits AS (
  SELECT
    s.fullVisitorId AS visitorId,
    s.visitId AS visitId,
    s.date AS session_date,
    h.time AS hit_time_ms,
    h.hitNumber AS hit_number,
    (SELECT cd.value FROM UNNEST(h.customDimensions) AS cd WITH OFFSET AS cd_pos
     WHERE cd.index = {content_dimension} ORDER BY cd_pos LIMIT 1) AS contentId,
    EXISTS(SELECT 1 FROM UNNEST(h.customDimensions) AS cd
           WHERE cd.index = {content_dimension}) AS has_content_dimension
  FROM `{table}` AS s, UNNEST(s.hits) AS h
  WHERE {where} AND h.type = 'PAGE'
),
timed_pages AS (
  SELECT
    visitorId, visitId, session_date, contentId, hit_time_ms, hit_number, has_content_dimension,
    -- time on page: next PAGE hit of the same session minus this one (NULL for the last)
    LEAD(hit_time_ms) OVER (PARTITION BY visitorId, visitId, session_date ORDER BY hit_time_ms, hit_number)
      - hit_time_ms AS time_on_page_ms,
    COUNT(*) OVER (PARTITION BY visitorId, visitId, session_date, hit_number) AS pages_with_hit_number
  FROM page_hits
),
checked_pages AS (
  SELECT
    visitorId, visitId, contentId, time_on_page_ms,
    -- a session pipeline.sources.ga would reject contributes nothing
    MAX(CASE WHEN hit_time_ms IS NULL OR hit_number IS NULL OR pages_with_hit_number > 1
               OR (has_content_dimension AND COALESCE(TRIM(contentId), '') = '')
               OR time_on_page_ms > {max_time_on_page_ms} OR {_BAD_IDS}
             THEN 1 ELSE 0 END) OVER (PARTITION BY visitorId, visitId, session_date) AS session_rejected
  FROM timed_pages
)
SELECT {key} AS visitorId, contentId, CAST(SUM(time_on_page_ms) AS FLOAT64) AS value
FROM checked_pages
WHERE session_rejected = 0 AND contentId IS NOT NULL AND time_on_page_ms IS NOT NULL
GROUP BY 1, contentId
HAVING SUM(time_on_page_ms) > 0
"""


def _ecommerce_query(table: str, where: str, purchase_weight: float, key: str = "visitorId") -> str:
    return f"""\
WITH product_actions AS (
  SELECT
    s.fullVisitorId AS visitorId,
    s.visitId AS visitId,
    s.date AS session_date,
    p.productSKU AS contentId,
    -- '2' = product detail view, '6' = purchase
    CASE WHEN h.eCommerceAction.action_type = '2' THEN 1.0
         ELSE {purchase_weight!r} END AS score
  FROM `{table}` AS s, UNNEST(s.hits) AS h, UNNEST(h.product) AS p
  WHERE {where}
    AND h.eCommerceAction.action_type IN ('2', '6')
    AND (p.isImpression IS NULL OR p.isImpression = FALSE)
),
checked_actions AS (
  SELECT
    visitorId, visitId, contentId, score,
    -- a session pipeline.sources.ga would reject (empty SKU) contributes nothing
    MAX(CASE WHEN COALESCE(TRIM(contentId), '') = '' OR {_BAD_IDS} THEN 1 ELSE 0 END)
      OVER (PARTITION BY visitorId, visitId, session_date) AS session_rejected
  FROM product_actions
)
SELECT {key} AS visitorId, contentId, CAST(SUM(score) AS FLOAT64) AS value
FROM checked_actions
WHERE session_rejected = 0
GROUP BY 1, contentId
HAVING SUM(score) > 0
"""


# --- GA4 (events_*) -----------------------------------------------------------------------------

def validate_ga4_table(table: str) -> str:
    """A GA4 export table: `project.analytics_NNN.events_*` or one day's `...events_YYYYMMDD`
    (the intraday tables are never read: GA4 replaces them with the daily table)."""
    table = validate_table(table)
    name = table.rsplit(".", 1)[1]
    if not (name == "events_*" or (name.startswith("events_") and name[7:].isdigit()
                                   and len(name) == 15)):
        raise ValueError(f"--ga_schema ga4 reads the GA4 export's daily tables: --table "
                         f"project.analytics_NNN.events_* or ...events_YYYYMMDD, got {table!r} "
                         "(events_intraday_* tables are never read)")
    return table


def build_ga4_query(preset: str, table: str, *, visitor: str = "user_pseudo_id",
                    content_param: str = ga4.DEFAULT_CONTENT_PARAM,
                    start_date: str | None = None, end_date: str | None = None,
                    purchase_weight: float = DEFAULT_PURCHASE_WEIGHT,
                    session_key: bool = False) -> str:
    """Standard SQL over GA4 events giving columns visitorId, contentId, value (FLOAT64 > 0),
    exactly what pipeline.sources.ga4 gives on the same events (session_key: visitorId is the
    visitor + CHR(31) + the ga_session_id parameter, events without one left out)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown GA preset {preset!r}; expected one of {PRESETS}")
    if visitor not in ga4.VISITORS:
        raise ValueError(f"unknown --ga4_visitor {visitor!r}; expected one of {ga4.VISITORS}")
    table = validate_ga4_table(table)
    where = ["e.user_pseudo_id IS NOT NULL", "TRIM(e.user_pseudo_id) != ''"]
    if table.endswith("*"):  # daily tables only: the intraday ones' suffix starts with a letter
        where.append("REGEXP_CONTAINS(_TABLE_SUFFIX, r'^[0-9]{8}$')")
    where += _date_filter(table, start_date, end_date)
    visitor_id = ("CASE WHEN e.user_id IS NOT NULL AND TRIM(e.user_id) != '' THEN e.user_id "
                  "ELSE e.user_pseudo_id END" if visitor == "user_id" else "e.user_pseudo_id")
    session = (f"{_ga4_param(ga4.SESSION_PARAM, 'p.value.int_value')} AS session_id,"
               if session_key else "")
    key = ("CONCAT(visitorId, CHR(31), CAST(session_id AS STRING))" if session_key
           else "visitorId")
    in_session = "session_id IS NOT NULL AND " if session_key else ""
    if preset == "news":
        return _ga4_news_query(table, " AND ".join(where), visitor_id, session, key, in_session,
                               ga4.check_param_name(content_param))
    return _ga4_ecommerce_query(table, " AND ".join(where), visitor_id, session, key, in_session,
                                _checked_weight(purchase_weight))


def _ga4_param(key: str, expression: str) -> str:
    """`expression` of the first event parameter named `key` (NULL when there is none)."""
    return (f"(SELECT {expression} FROM UNNEST(e.event_params) AS p WITH OFFSET AS p_pos "
            f"WHERE p.key = '{key}' ORDER BY p_pos LIMIT 1)")


def _ga4_news_query(table: str, where: str, visitor_id: str, session: str, key: str,
                    in_session: str, content_param: str) -> str:
    content = _ga4_param(content_param, "COALESCE(p.value.string_value, "
                                        "CAST(p.value.int_value AS STRING))")
    engagement = ga4.ENGAGEMENT_PARAM
    return f"""\
WITH events AS (
  SELECT
    {visitor_id} AS visitorId,
    {session}
    -- the page: query string and fragment cut off
    REGEXP_EXTRACT({content}, r'^[^?#]*') AS contentId,
    {_ga4_param(engagement, "COALESCE(CAST(p.value.int_value AS FLOAT64), p.value.double_value, "
                            "p.value.float_value)")} AS engagement_ms,
    -- a string where the time should be: pipeline.sources.ga4 rejects the event
    COALESCE({_ga4_param(engagement, "p.value.string_value IS NOT NULL AND p.value.int_value IS "
                                     "NULL AND p.value.double_value IS NULL AND "
                                     "p.value.float_value IS NULL")}, FALSE) AS non_numeric_engagement
  FROM `{table}` AS e
  WHERE {where}
)
SELECT {key} AS visitorId, contentId, CAST(SUM(engagement_ms) AS FLOAT64) AS value
FROM events
WHERE {in_session}contentId != '' AND engagement_ms > 0 AND NOT non_numeric_engagement
  AND NOT ({_BAD_IDS})
GROUP BY 1, contentId
HAVING SUM(engagement_ms) > 0
"""


def _ga4_ecommerce_query(table: str, where: str, visitor_id: str, session: str, key: str,
                         in_session: str, purchase_weight: float) -> str:
    bad_item = re2_class(ID_SEPARATORS["item_id"])
    bad_user = re2_class(ID_SEPARATORS["user_id"])
    return f"""\
WITH item_events AS (
  SELECT
    {visitor_id} AS visitorId,
    {session}
    e.items AS items,
    CASE WHEN e.event_name = 'view_item' THEN 1.0 ELSE {purchase_weight!r} END AS score,
    -- an item id holding a separator: pipeline.sources.ga4 rejects the whole event
    EXISTS(SELECT 1 FROM UNNEST(e.items) AS i
           WHERE REGEXP_CONTAINS(i.item_id, r'{bad_item}')) AS rejected
  FROM `{table}` AS e
  WHERE {where} AND e.event_name IN ('view_item', 'purchase')
)
SELECT {key} AS visitorId, i.item_id AS contentId, CAST(SUM(score) AS FLOAT64) AS value
FROM item_events AS ev, UNNEST(ev.items) AS i
WHERE {in_session}NOT ev.rejected AND NOT REGEXP_CONTAINS(visitorId, r'{bad_user}')
  AND i.item_id IS NOT NULL AND TRIM(i.item_id) != ''
GROUP BY 1, contentId
HAVING SUM(score) > 0
"""


def check_bigquery_ready(options) -> None:
    """Fails fast, before anything runs, on what ReadFromBigQuery would otherwise hit later
    (a query job needs credentials and a billing project; its result is exported through Cloud
    Storage, so a local run needs a gs:// --temp_location: Dataflow falls back to
    --staging_location or its default bucket by itself)."""
    import google.auth
    from apache_beam.options.pipeline_options import GoogleCloudOptions

    from stagekit import beam_runner
    gcp = options.view_as(GoogleCloudOptions)
    if beam_runner.is_local(options) and not (gcp.temp_location or "").startswith("gs://"):
        raise ValueError("--source bigquery exports the query result through Cloud Storage: pass "
                         "--temp_location=gs://BUCKET/tmp")
    try:
        _, default_project = google.auth.default()
    except google.auth.exceptions.DefaultCredentialsError as e:
        raise ValueError("--source bigquery needs Google Cloud credentials: run `gcloud auth "
                         "application-default login`, set GOOGLE_APPLICATION_CREDENTIALS to a key "
                         f"file, or run on Google Cloud ({e})") from None
    if not (gcp.project or default_project):
        raise ValueError("--source bigquery needs a project to run the query job in: pass "
                         "--project=PROJECT")
