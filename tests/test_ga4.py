"""GA4 events (events_*): the export-file reader's semantics and rejects (pipeline.sources.ga4),
and the BigQuery SQL of both presets run in DuckDB (sqlglot) over the same events, giving exactly
the rows the reader gives."""
import json

import pytest

from pipeline.sources import ga, ga4, sql
from tests.ga4_fixtures import DATES, event, mixed_events, param
from tests.ga_fixtures import run_bigquery_sql_on_ndjson, write_ndjson

TABLE = "my-project.analytics_123456789.events_*"
ENGAGED = "engagement_time_msec"


def interactions(events, preset="news", **options):
    """The reader's answer over events: accepted events' triples summed per pair (> 0 kept),
    and the reject reasons."""
    triples, rejects = [], []
    for row in events:
        try:
            line = row if isinstance(row, (str, bytes)) else json.dumps(row)
            triples += ga4.event_interactions(ga.parse_session_line(line), preset, **options)
        except ga.RejectedRow as rejected:
            rejects.append(rejected.reason)
    return ga.aggregate(triples), rejects


def page(url, ms, name="user_engagement", **kwargs):
    params = [param("page_location", string_value=url)]
    if ms is not None:
        params.append(param(ENGAGED, int_value=str(ms)))
    return event(name, params=params, **kwargs)


def test_news_sums_engaged_time_per_page_cut_at_query_and_fragment():
    got, rejects = interactions([
        page("https://x.com/a?utm=1", 1000), page("https://x.com/a#top", 500),
        page("https://x.com/b", 0), page("https://x.com/c", None), page("?only-query", 700),
        event("session_start", params=[param("ga_session_id", int_value="9")])])
    assert rejects == []
    assert got == {("p1", "https://x.com/a"): 1500.0}


def test_news_content_param_reads_string_or_int_values():
    events = [event("page_view", params=[param("article_id", int_value="42"),
                                         param(ENGAGED, int_value="300")]),
              event("page_view", params=[param("article_id", string_value="42"),
                                         param(ENGAGED, double_value=200.5)]),
              event("page_view", params=[param("article_id", string_value="7#x"),
                                         param(ENGAGED, int_value=100)])]
    got, _ = interactions(events, content_param="article_id")
    assert got == {("p1", "42"): 500.5, ("p1", "7"): 100.0}
    assert interactions(events)[0] == {}  # no page_location on these events


def test_explicit_nulls_read_as_omitted_ones():
    explicit = event("user_engagement", user_id=None, omit_nulls=False, items=None, params=[
        param("page_location", True, string_value="https://x.com/a"),
        param(ENGAGED, True, int_value="250")])
    omitted = page("https://x.com/a", 250)
    assert "user_id" in explicit and explicit["items"] is None and "user_id" not in omitted
    assert interactions([explicit]) == interactions([omitted]) == (
        {("p1", "https://x.com/a"): 250.0}, [])


def test_visitor_is_user_id_where_set_and_not_blank():
    events = [page("https://x.com/a", 100, user_id="u1"), page("https://x.com/a", 10, user_id=""),
              page("https://x.com/a", 1, user_id="  "), page("https://x.com/a", 1000)]
    assert interactions(events)[0] == {("p1", "https://x.com/a"): 1111.0}
    assert interactions(events, visitor="user_id")[0] == {
        ("u1", "https://x.com/a"): 100.0, ("p1", "https://x.com/a"): 1011.0}


def test_ecommerce_counts_views_and_weighted_purchases_per_listed_item():
    items = [{"item_id": "SKU-1", "quantity": "3"}, {"item_id": ""}, {"item_id": "SKU-2"}]
    events = [event("view_item", items=items), event("view_item", items=[{"item_id": "SKU-1"}]),
              event("purchase", items=[{"item_id": "SKU-1", "quantity": "9"}]),
              event("add_to_cart", items=[{"item_id": "SKU-3"}]), event("view_item"),
              event("purchase", items=[])]
    got, rejects = interactions(events, "ecommerce", purchase_weight=5.0)
    assert rejects == []
    assert got == {("p1", "SKU-1"): 7.0, ("p1", "SKU-2"): 1.0}


def test_session_key_is_the_ga_session_id_parameter():
    with_session = page("https://x.com/a", 100)
    with_session["event_params"].append(param("ga_session_id", int_value="1700000000"))
    got, _ = interactions([with_session, page("https://x.com/a", 5)], session_key=True)
    assert got == {(f"p1{ga.SESSION_KEY_SEPARATOR}1700000000", "https://x.com/a"): 100.0}


@pytest.mark.parametrize("row, reason", [
    ("not json", "invalid_json"),
    ("[1, 2]", "not_an_object"),
    (event("page_view", None), "missing_user_pseudo_id"),
    (event("page_view", "  "), "missing_user_pseudo_id"),
    (event("page_view", 42), "invalid_visitor_id"),
    ({**event("page_view"), "event_params": {"key": "page_location"}}, "event_params_not_a_list"),
    ({**event("view_item"), "items": "SKU-1"}, "items_not_a_list"),
    (event("view_item", items=[{"item_id": 7}]), "malformed_event"),
    (event("page_view", params=["page_location"]), "malformed_event"),
    (event("page_view", params=[param("page_location", string_value="https://x.com/a"),
                                param(ENGAGED, string_value="ten")]), "non_numeric_engagement_time"),
    (event("page_view", params=[param("page_location", string_value="https://x.com/a"),
                                param(ENGAGED, int_value="1.5s")]), "non_numeric_engagement_time"),
    (page("https://x.com/a,b", 10), "separator_in_item_id"),
    (page("https://x.com/a", 10, pseudo_id="p\t1"), "separator_in_user_id"),
    (event("purchase", items=[{"item_id": "SKU\n1"}]), "separator_in_item_id"),
])
def test_every_reject_class_has_its_reason(row, reason):
    got, rejects = interactions([row], "ecommerce" if "item" in json.dumps(row) else "news")
    assert (got, rejects) == ({}, [reason])
    assert reason in ga4.REJECT_REASONS


def test_valid_events_that_contribute_nothing_are_accepted():
    got, rejects = interactions([event("session_start"), page("https://x.com/a", None),
                                 event("scroll", params=[])])
    assert (got, rejects) == ({}, [])


# --- the SQL, run in DuckDB over the same events ------------------------------------------------

@pytest.fixture(scope="module")
def export(tmp_path_factory):
    events = mixed_events()
    return events, write_ndjson(events, tmp_path_factory.mktemp("ga4") / "events.ndjson")


@pytest.mark.parametrize("preset, options", [
    ("news", {}),
    ("news", {"visitor": "user_id"}),
    ("news", {"content_param": "article_id"}),
    ("news", {"session_key": True}),
    ("ecommerce", {}),
    ("ecommerce", {"visitor": "user_id", "purchase_weight": 2.5}),
    ("ecommerce", {"session_key": True, "purchase_weight": 0.0}),
])
def test_sql_gives_exactly_the_readers_rows(export, preset, options):
    events, path = export
    expected, rejects = interactions(events, preset, **options)
    assert rejects == [] and len(expected) > 5  # a meaningful comparison
    query = sql.build_ga4_query(preset, TABLE, **options)
    assert run_bigquery_sql_on_ndjson(query, path, "ga4") == pytest.approx(expected)


@pytest.mark.parametrize("preset", ["news", "ecommerce"])
def test_sql_date_window_reads_those_days_only(export, preset):
    events, path = export
    window = [e for e in events if DATES[1] <= e["event_date"] <= DATES[2]]
    expected, _ = interactions(window, preset)
    got = run_bigquery_sql_on_ndjson(
        sql.build_ga4_query(preset, TABLE, start_date=DATES[1], end_date=DATES[2]), path, "ga4")
    assert got == pytest.approx(expected) and got != interactions(events, preset)[0]


def test_sql_never_reads_intraday_tables(tmp_path):
    daily = page("https://x.com/a", 100)
    intraday = {**page("https://x.com/a", 5), "event_date": "intraday_20240101"}
    path = write_ndjson([daily, intraday], tmp_path / "e.ndjson")
    got = run_bigquery_sql_on_ndjson(sql.build_ga4_query("news", TABLE), path, "ga4")
    assert got == {("p1", "https://x.com/a"): 100.0}


@pytest.mark.parametrize("table", ["p-roject.analytics_1.events_intraday_*",
                                   "p-roject.analytics_1.ga_sessions_*", "p-roject.analytics_1.events_2024*",
                                   "p-roject.analytics_1.events_2024010", "p-roject.a.events_*`; --"])
def test_ga4_tables_are_the_daily_export_tables(table):
    with pytest.raises(ValueError, match="table"):
        sql.build_ga4_query("news", table)
    assert sql.validate_ga4_table("p-roject.analytics_1.events_20240101")


@pytest.mark.parametrize("name", ["page location", "a'b", "", "1abc", "x" * 101, None])
def test_content_param_is_checked_before_it_reaches_sql(name):
    with pytest.raises(ValueError, match="ga4_content_param"):
        sql.build_ga4_query("news", TABLE, content_param=name)
