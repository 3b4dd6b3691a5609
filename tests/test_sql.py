"""pipeline.sources.sql: strict validation of the SQL inputs, and the preset queries executed (sqlglot ->
DuckDB) over NDJSON sessions give exactly what pipeline.sources.ga computes on the same sessions."""
import copy

import pytest

from pipeline import sample
from pipeline.sources import ga, sql
from tests.ga_fixtures import run_bigquery_sql_on_ndjson, write_ndjson

TABLE = "my-project.analytics_123.ga_sessions_*"


@pytest.mark.parametrize("table", [
    TABLE, "my-project.ds.ga_sessions_20240101", "example.com:my-project.ds.ga_sessions_*",
    "bigquery-public-data.google_analytics_sample.ga_sessions_*", "proj-1.DS_2.*",
    # GA360 exports live in a dataset named after the numeric view id.
    "my-project.123456789.ga_sessions_*"])
def test_valid_tables_accepted(table):
    assert sql.validate_table(table) == table


@pytest.mark.parametrize("table", [
    "my-project.ds.t`; DROP TABLE x; --", "my-project.ds.t' OR '1'='1", "my-project.ds",
    "my-project.ds.t.x", "my-project.ds.t WHERE 1=1", "", " my-project.ds.t", "my-project.ds.t\n",
    "`my-project.ds.t`", "my-project.ds.t*x", "my-project.d s.t", "My-Project.ds.t",
    "my-project:ds.t", "ab.ds.t", "my-project.ds.t/*", "my-project.ds.t;", None])
def test_invalid_tables_rejected(table):
    with pytest.raises(ValueError, match="invalid BigQuery table"):
        sql.validate_table(table)
    with pytest.raises(ValueError, match="invalid BigQuery table"):
        sql.build_query("news", table)


def test_query_text_shape():
    news = sql.build_query("news", TABLE, content_dimension=12)
    assert f"FROM `{TABLE}` AS s, UNNEST(s.hits) AS h" in news
    assert "UNNEST(h.customDimensions) AS cd" in news
    assert "cd.index = 12" in news and "cd.index = 10" not in news
    # sessions, not visitors: every window is per (fullVisitorId, visitId)
    assert news.count("PARTITION BY visitorId, visitId") == 3
    assert "_TABLE_SUFFIX" not in news
    shop = sql.build_query("ecommerce", TABLE, purchase_weight=2.5)
    assert "UNNEST(h.product) AS p" in shop and "ELSE 2.5 END" in shop


@pytest.mark.parametrize("start,end,expected", [
    ("20240101", "20240131", ["_TABLE_SUFFIX >= '20240101'", "_TABLE_SUFFIX <= '20240131'"]),
    # an open end must still exclude the intraday tables (suffix 'intraday_2024...')
    ("20240105", None, ["_TABLE_SUFFIX >= '20240105'", "_TABLE_SUFFIX <= '99999999'"]),
    (None, "20240105", ["_TABLE_SUFFIX <= '20240105'"])])
def test_dates_filter_table_suffix(start, end, expected):
    query = sql.build_query("ecommerce", TABLE, start_date=start, end_date=end)
    assert all(condition in query for condition in expected)
    assert query.count("_TABLE_SUFFIX") == len(expected)


@pytest.mark.parametrize("kwargs,message", [
    ({"start_date": "2024-01-01"}, "YYYYMMDD"),
    ({"start_date": "20241301"}, "calendar date"),
    ({"end_date": "20240230"}, "calendar date"),
    ({"end_date": "20240101' OR '1'='1"}, "YYYYMMDD"),
    ({"start_date": 20240101}, "YYYYMMDD"),
    ({"start_date": "20240201", "end_date": "20240101"}, "after"),
    ({"content_dimension": 0}, "content_dimension"),
    ({"content_dimension": 201}, "content_dimension"),
    ({"content_dimension": "10 OR 1=1"}, "content_dimension"),
    ({"content_dimension": True}, "content_dimension"),
    ({"max_time_on_page_ms": -1}, "max_time_on_page_ms"),
])
def test_bad_news_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sql.build_query("news", TABLE, **kwargs)


def test_bad_preset_weight_and_dates_on_plain_table():
    with pytest.raises(ValueError, match="preset"):
        sql.build_query("video", TABLE)
    for weight in (float("nan"), float("inf"), -1.0, "5", True):
        with pytest.raises(ValueError, match="purchase_weight"):
            sql.build_query("ecommerce", TABLE, purchase_weight=weight)
    with pytest.raises(ValueError, match="wildcard"):
        sql.build_query("news", "my-project.ds.ga_sessions_20240101", start_date="20240101")


# --- execution: the SQL and pipeline.sources.ga agree on the same sessions -------------------------------

def _rejected_by_ga_but_typed(sessions):
    """Sessions BigQuery can hold (typed fields) that pipeline.sources.ga rejects as a whole."""
    base = next(s for s in sessions
                if sum(h["type"] == "PAGE" and any(d["index"] == "10" for d in
                       h.get("customDimensions", [])) for h in s["hits"]) >= 3)
    pages = sorted((h for h in base["hits"] if h["type"] == "PAGE"),
                   key=lambda h: int(h["time"]))

    def variant(visit_id, change):
        session = copy.deepcopy(base)
        session["visitId"] = str(visit_id)
        change(session["hits"][base["hits"].index(pages[0])], session)
        return session

    def absurd(hit, _):
        hit["time"] = str(int(pages[1]["time"]) - 5 * 3600 * 1000)

    def empty_content(hit, _):
        hit["customDimensions"] = [{"index": "10", "value": ""}]

    def duplicate_hit_number(hit, _):
        hit["hitNumber"] = pages[1]["hitNumber"]

    def null_time(hit, _):
        hit["time"] = None

    def empty_sku(_, session):
        session["hits"].append({"hitNumber": "99", "time": "1", "type": "EVENT",
                                "eCommerceAction": {"action_type": "2"},
                                "product": [{"productSKU": "", "isImpression": None}]})
        session["hits"].append({"hitNumber": "98", "time": "1", "type": "EVENT",
                                "eCommerceAction": {"action_type": "6"},
                                "product": [{"productSKU": "sku-ok", "isImpression": None}]})

    def comma_in_content(hit, _):
        hit["customDimensions"] = [{"index": "10", "value": "article,42"}]

    def tab_in_visitor(_, session):
        session["fullVisitorId"] = "visitor\t7"

    def comma_in_visitor(_, session):  # would split a users_for_item line
        session["fullVisitorId"] = "visitor,8"

    def line_separator_in_content(hit, _):  # str.splitlines() ends a line at U+2028
        hit["customDimensions"] = [{"index": "10", "value": "article\u202843"}]

    def newline_in_sku(_, session):
        session["hits"].append({"hitNumber": "97", "time": "1", "type": "EVENT",
                                "eCommerceAction": {"action_type": "2"},
                                "product": [{"productSKU": "sku\n1", "isImpression": None}]})

    changes = (absurd, empty_content, duplicate_hit_number, null_time, empty_sku,
               comma_in_content, tab_in_visitor, newline_in_sku, comma_in_visitor,
               line_separator_in_content)
    # as extra sessions of a real visitor (only that session may vanish) and as lone visitors
    return [variant(100 + i, change) for i, change in enumerate(changes)] + [
        dict(variant(1, change), fullVisitorId=f"bad-{i}") for i, change in enumerate(changes)]


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    sessions = list(sample.generate_sessions(120, 40, seed=3, ecommerce_rate=0.3, days=10))
    sessions += _rejected_by_ga_but_typed(sessions)
    # GA360 splits a session spanning midnight into a row per daily table, same visitId
    split = copy.deepcopy(next(s for s in sessions if len(s["hits"]) > 3))
    split["date"] = str(int(split["date"]) + 1)
    sessions.append(split)
    path = write_ndjson(sessions, tmp_path_factory.mktemp("ga") / "sessions.ndjson")
    return sessions, path


def _ga_interactions(sessions, preset, **kwargs):
    triples = []
    for session in sessions:
        try:
            triples += ga.session_interactions(session, preset, **kwargs)
        except ga.RejectedRow:
            pass
    return ga.aggregate(triples)


@pytest.mark.parametrize("preset,kwargs", [
    ("news", {}), ("news", {"content_dimension": 12}),
    ("ecommerce", {}), ("ecommerce", {"purchase_weight": 0.0}),
    ("news", {"session_key": True}), ("ecommerce", {"session_key": True})])  # cooc's session scope
def test_sql_matches_export_semantics(export, preset, kwargs):
    sessions, path = export
    by_sql = run_bigquery_sql_on_ndjson(sql.build_query(preset, TABLE, **kwargs), path)
    by_ga = _ga_interactions(sessions, preset, **kwargs)
    assert len(by_ga) > 30
    assert by_sql.keys() == by_ga.keys()
    assert all(by_sql[key] == pytest.approx(by_ga[key], rel=1e-12) for key in by_ga)


def test_planted_sessions_are_rejected_by_ga(export):
    sessions, _ = export
    planted = [s for s in sessions if s["fullVisitorId"].startswith("bad-")]
    reasons = set()
    for session in planted:
        for preset in ("news", "ecommerce"):
            try:
                ga.session_interactions(session, preset)
            except ga.RejectedRow as rejected:
                reasons.add(rejected.reason)
    assert reasons == {"absurd_duration", "empty_content_id", "duplicate_hit_number",
                       "non_numeric_time", "separator_in_item_id"}
    tabbed = [s for s in sessions if "\t" in s["fullVisitorId"]]
    with pytest.raises(ga.RejectedRow, match="separator_in_user_id"):
        ga.session_interactions(tabbed[0], "news")


def test_sql_date_range_matches_sessions_of_those_days(export):
    sessions, path = export
    query = sql.build_query("news", TABLE, start_date="20240103", end_date="20240106")
    in_range = [s for s in sessions if "20240103" <= s["date"] <= "20240106"]
    assert 0 < len(in_range) < len(sessions)
    assert run_bigquery_sql_on_ndjson(query, path) == pytest.approx(
        _ga_interactions(in_range, "news"))
