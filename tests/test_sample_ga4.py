"""The GA4 sample generator (pipeline.sample_ga4) and the bundled GA4 export sample."""
import collections
import datetime
import gzip
import json

import pytest

from pipeline import sample_ga4

NEWS_EVENTS = {"first_visit", "session_start", "page_view", "scroll", "user_engagement"}
SHOP_EVENTS = {"view_item", "add_to_cart", "purchase"}
VALUE_FIELDS = {"string_value", "int_value", "float_value", "double_value"}


@pytest.fixture(scope="module")
def bundled() -> list[dict]:
    with gzip.open(sample_ga4.SAMPLE_PATH, "rt", encoding="utf-8") as lines:
        events = [json.loads(line) for line in lines]
    assert all(isinstance(event, dict) for event in events)
    return events


def params(event: dict) -> dict:
    """key -> the one non-null value (int_value as its string), checking the value struct."""
    out = {}
    for param in event["event_params"]:
        assert set(param) == {"key", "value"} and set(param["value"]) <= VALUE_FIELDS, param
        given = [(f, v) for f, v in param["value"].items() if v is not None]
        assert len(given) == 1, param
        field, value = given[0]
        assert isinstance(value, str if field in ("string_value", "int_value") else float), param
        if field == "int_value":
            assert value.lstrip("-").isdigit(), param
        out[param["key"]] = value
    return out


def content(value) -> str:
    return value.split("?", 1)[0].split("#", 1)[0] if value is not None else ""


def news_matrix(events: list[dict], content_param: str) -> dict:
    """The news preset's value: engaged ms per (user_pseudo_id, content id)."""
    totals = collections.Counter()
    for event in events:
        p = params(event)
        ms = int(p.get("engagement_time_msec", "0"))
        if content(p.get(content_param)) and ms > 0:
            totals[event["user_pseudo_id"], content(p[content_param])] += ms
    return totals


def test_generator_is_deterministic_and_seed_dependent():
    first = list(sample_ga4.generate_events(60, 20, seed=11, shop_rate=0.3))
    assert first == list(sample_ga4.generate_events(60, 20, seed=11, shop_rate=0.3))
    assert first != list(sample_ga4.generate_events(60, 20, seed=12, shop_rate=0.3))
    assert {e["event_name"] for e in first} == NEWS_EVENTS | SHOP_EVENTS
    with pytest.raises(ValueError):
        list(sample_ga4.generate_events(0, 20, seed=1))


def test_main_writes_a_byte_reproducible_gzip_of_the_asked_days(tmp_path):
    paths = [tmp_path / f"{name}.ndjson.gz" for name in ("a", "b")]
    for path in paths:
        sample_ga4.main(["--visitors", "80", "--articles", "25", "--seed", "3", "--days", "3",
                         "--start_date", "20231230", "--output", str(path)])
    written = paths[0].read_bytes()
    assert written == paths[1].read_bytes()
    assert written[4:8] == b"\0\0\0\0"  # gzip mtime 0
    with gzip.open(paths[0], "rt") as lines:
        events = [json.loads(line) for line in lines]
    assert events == list(sample_ga4.generate_events(80, 25, 3, start_date="20231230", days=3))
    assert {e["event_date"] for e in events} == {"20231230", "20231231", "20240101"}
    plain = tmp_path / "c.ndjson"
    sample_ga4.main(["--visitors", "80", "--articles", "25", "--seed", "3", "--days", "3",
                     "--start_date", "20231230", "--output", str(plain)])
    assert plain.read_bytes() == gzip.decompress(written)


def test_regenerating_with_the_defaults_reproduces_the_bundled_file(tmp_path):
    path = tmp_path / "again.ndjson.gz"
    sample_ga4.main(["--output", str(path)])
    with open(sample_ga4.SAMPLE_PATH, "rb") as f:
        assert path.read_bytes() == f.read()


def test_bundled_events_look_like_a_ga4_ndjson_extract(bundled):
    assert 20_000 < len(bundled) < 100_000
    for event in bundled:
        assert {"event_date", "event_timestamp", "event_name", "event_params",
                "user_pseudo_id"} <= set(event) <= {"event_date", "event_timestamp", "event_name",
                                                    "event_params", "user_id", "user_pseudo_id",
                                                    "items"}, event
        assert isinstance(event["event_timestamp"], str) and event["event_timestamp"].isdigit()
        at = datetime.datetime.fromtimestamp(int(event["event_timestamp"]) / 1e6, datetime.UTC)
        assert event["event_date"] == at.strftime("%Y%m%d")
        p = params(event)
        assert {"ga_session_id", "ga_session_number"} <= set(p), event
        if event["event_name"] in SHOP_EVENTS:
            assert event["items"], event
            for item in event["items"]:
                assert set(item) == {"item_id", "item_name", "quantity", "price"}
                assert isinstance(item["quantity"], str) and item["quantity"].isdigit()
                assert isinstance(item["price"], float)
        else:
            assert event["event_name"] in NEWS_EVENTS and event.get("items", []) == [], event
            assert p["page_location"].startswith("https://news.example.com/"), event
        if event["event_name"] == "user_engagement":
            assert int(p["engagement_time_msec"]) > 0
        if event["event_name"] == "scroll":
            assert p["percent_scrolled"] == "90"

    names = collections.Counter(e["event_name"] for e in bundled)
    assert set(names) == NEWS_EVENTS | SHOP_EVENTS
    assert names["page_view"] > names["session_start"] > names["purchase"] > 0
    dates = sorted({e["event_date"] for e in bundled})
    first = datetime.date(int(dates[0][:4]), int(dates[0][4:6]), int(dates[0][6:]))
    assert dates == [(first + datetime.timedelta(days=d)).strftime("%Y%m%d") for d in range(7)]


def test_bundled_sample_mixes_the_forms_an_export_takes(bundled):
    values = [p["value"] for e in bundled for p in e["event_params"]]
    assert any(set(v) == VALUE_FIELDS for v in values)  # explicit nulls
    assert any(len(v) == 1 for v in values)  # nulls omitted
    assert {f for v in values for f, x in v.items() if x is not None} == \
        {"string_value", "int_value", "double_value"}
    assert any("user_id" in e and e["user_id"] is None for e in bundled)
    assert any("user_id" not in e for e in bundled)
    news = [e for e in bundled if e["event_name"] in NEWS_EVENTS]
    assert any("items" not in e for e in news) and any(e.get("items") == [] for e in news)

    locations = [params(e)["page_location"] for e in news]
    assert any("?" in x for x in locations) and any("#" in x for x in locations)
    assert any("?" in x and "#" in x for x in locations)
    article_fields = collections.Counter(
        f for e in bundled for p in e["event_params"] if p["key"] == "article_id"
        for f, x in p["value"].items() if x is not None)
    assert article_fields["int_value"] > 100 and article_fields["string_value"] > 100
    pv_ms = [("engagement_time_msec" in params(e)) for e in news if e["event_name"] == "page_view"]
    assert any(pv_ms) and not all(pv_ms)
    item_ids = [i["item_id"] for e in bundled for i in e.get("items", [])]
    assert "" in item_ids and sum(bool(i) for i in item_ids) > 10 * item_ids.count("")


def test_user_id_is_set_on_some_events_of_some_readers(bundled):
    with_id = [e for e in bundled if e.get("user_id")]
    assert 0.02 * len(bundled) < len(with_id) < 0.5 * len(bundled)
    devices = collections.defaultdict(set)
    for event in with_id:
        devices[event["user_id"]].add(event["user_pseudo_id"])
    assert any(len(d) > 1 for d in devices.values())  # one subscriber, two devices
    logged = {e["user_pseudo_id"] for e in with_id}
    assert any(not e.get("user_id") and e["user_pseudo_id"] in logged for e in bundled)
    assert all(e["user_id"].startswith("sub-") for e in with_id)


def test_the_presets_find_a_useful_matrix_in_the_bundled_sample(bundled):
    by_location = news_matrix(bundled, "page_location")
    by_article = news_matrix(bundled, "article_id")
    for matrix in (by_location, by_article):
        assert 5_000 < len(matrix) < 50_000
        assert 1_500 < len({visitor for visitor, _ in matrix}) < 5_000
        views = sorted(matrix.values())
        assert 10_000 < views[len(views) // 2] < 200_000  # median: tens of seconds
    articles = {c for _, c in by_article}
    assert 200 < len(articles) <= 300
    # the URL of an article page, cut at ? or #, names the same article as article_id
    from_urls = {c.rsplit("article-", 1)[1] for _, c in by_location if "/article-" in c}
    assert from_urls == articles
    assert len({c for _, c in by_location}) > len(articles)  # home and section fronts too

    shop = collections.Counter()
    for event in bundled:
        weight = {"view_item": 1, "purchase": 10}.get(event["event_name"], 0)
        for item in event.get("items", []) if weight else []:
            if item["item_id"]:
                shop[event["user_pseudo_id"], item["item_id"]] += weight
    assert len(shop) > 100 and any(value > 10 for value in shop.values())
