"""BigQuery outputs (--bigquery_dataset) offline: the same transforms with WriteToBigQuery swapped
for a file sink, checked against the prediction files; the table specs and dispositions; the
dataset validation."""
import datetime
import glob
import json
import os

import apache_beam as beam
import pytest

from batch_predict import bigquery, bigquery_write
from batch_predict.run import run, validate_args
from predict_fixtures import predict_args, random_fixture, read_topk

DATASET = "my-project.recs"
TEMP = ["--temp_location=gs://my-bucket/tmp"]  # FILE_LOADS needs one (unused by the file sink)


@pytest.fixture
def file_sink(tmp_path, monkeypatch):
    """Replaces WriteToBigQuery: each table's rows as JSON lines under tmp_path/bq/<table>-*;
    returns the write configs seen, {table: [config, ...]} (one per run)."""
    folder, configs = tmp_path / "bq", {}

    def sink(table, config):
        configs.setdefault(table, []).append(config)
        return (beam.Map(json.dumps)
                | beam.io.WriteToText(str(folder / table), file_name_suffix=".jsonl"))
    monkeypatch.setattr(bigquery_write, "bigquery_sink", sink)
    return folder, configs


def _rows(folder, table):
    return [json.loads(line) for path in sorted(glob.glob(str(folder / f"{table}-*")))
            for line in open(path).read().splitlines()]


def _jsonl(folder, prefix):
    return {r["id"]: r for path in sorted(glob.glob(os.path.join(folder, prefix + "-*")))
            for r in map(json.loads, open(path).read().splitlines())}


def _fixture(tmp_path):
    preproc, model, users, items, _ = random_fixture(tmp_path / "in", nusers=13, nitems=7)
    info = json.load(open(os.path.join(model, "model.json")))
    json.dump({**info, "run_id": "model-run-1"}, open(os.path.join(model, "model.json"), "w"))
    return preproc, model


def _predict(tmp_path, name, **overrides):
    preproc, model = _fixture(tmp_path) if not (tmp_path / "in").exists() else \
        (str(tmp_path / "in" / "preproc"), str(tmp_path / "in" / "model"))
    options = dict(mode="both", top_k=3, n_similar=2, outputs=["similar_items", "embeddings"],
                   bigquery_dataset=DATASET, bigquery_run_date="20240131")
    options.update(overrides)
    run(predict_args(preproc, model, str(tmp_path / name), **options), TEMP)
    return str(tmp_path / name)


def _check_topk_table(rows, predictions, prefix, query, candidate, extra=None):
    lists, scores = read_topk(predictions, prefix), _jsonl(predictions, prefix + "_scores")
    by_query = {}
    for row in rows:
        by_query.setdefault(row[query], []).append(row)
    for key, expected in lists.items():
        got = sorted(by_query.pop(key, []), key=lambda r: r["rank"])
        assert [r["rank"] for r in got] == list(range(1, len(expected) + 1))
        assert [r[candidate] for r in got] == expected == scores[key]["ids"]
        assert [r["score"] for r in got] == scores[key]["scores"]
        for r in got:
            assert r["model_run_id"] == "model-run-1" and r["run_date"] == "2024-01-31"
            assert all(r[k] == v for k, v in (extra or {}).items())
    assert not by_query  # no row for a query that is not in the files


def _check_tables(folder, predictions):
    for table in bigquery.SCHEMAS:
        for row in _rows(folder, table):
            bigquery.check_row(row, table)  # columns and types as declared
    _check_topk_table(_rows(folder, "recommendations"), predictions, "batch_pred",
                      "visitorId", "contentId")
    _check_topk_table(_rows(folder, "targeting"), predictions, "users_for_item",
                      "contentId", "visitorId")
    _check_topk_table(_rows(folder, "similar_items"), predictions, "similar_items",
                      "contentId", "similar_contentId", {"source": "wals"})
    for name in ("item_embeddings", "user_embeddings"):
        files = _jsonl(predictions, name)
        rows = {r["id"]: r for r in _rows(folder, name)}
        assert len(rows) == len(_rows(folder, name)) == len(files)
        assert {k: r["embedding"] for k, r in rows.items()} == \
            {k: r["embedding"] for k, r in files.items()}


def test_tables_are_the_prediction_files_with_declared_schemas(tmp_path, file_sink):
    folder, configs = file_sink
    predictions = _predict(tmp_path, "predictions")
    assert sorted(configs) == sorted(bigquery.SCHEMAS)
    _check_tables(folder, predictions)
    assert len(_rows(folder, "recommendations")) == 13 * 3


def test_a_rerun_of_the_day_replaces_the_same_partition(tmp_path, file_sink):
    _, configs = file_sink
    _predict(tmp_path, "predictions", outputs=[])
    _predict(tmp_path, "predictions", outputs=[], overwrite=True)
    assert sorted(configs) == ["recommendations", "targeting"]
    for table, (first, again) in configs.items():
        assert first == again
        assert first["table"] == f"my-project:recs.{table}$20240131"
        assert first["write_disposition"] == "WRITE_TRUNCATE"
        assert first["create_disposition"] == "CREATE_IF_NEEDED"
        assert first["method"] == "FILE_LOADS"
        assert first["additional_bq_parameters"] == {
            "timePartitioning": {"type": "DAY", "field": "run_date"}}
        assert first["schema"] == bigquery.SCHEMAS[table]


def test_beam_engine_writes_the_same_tables(tmp_path, file_sink):
    folder, configs = file_sink
    predictions = _predict(tmp_path, "predictions", engine="beam", block_size=5)
    assert sorted(configs) == sorted(bigquery.SCHEMAS)
    _check_tables(folder, predictions)


def test_rows_of_tab_lines_pmi_source_and_empty_lists():
    pmi = bigquery.PMI_TAB_SOURCE  # an older cooc/'s TAB lines
    day = datetime.date(2024, 2, 29)
    rows = list(bigquery.rows_of_line("a/1\ta/2,a/3", pmi, None, day))
    assert rows == [{"contentId": "a/1", "rank": 1, "similar_contentId": "a/2", "score": None,
                     "source": "pmi", "model_run_id": None, "run_date": "2024-02-29"},
                    {"contentId": "a/1", "rank": 2, "similar_contentId": "a/3", "score": None,
                     "source": "pmi", "model_run_id": None, "run_date": "2024-02-29"}]
    for row in rows:
        bigquery.check_row(row, "similar_items")
    source = bigquery.PREDICTION_SOURCES["batch_pred"]
    assert list(bigquery.rows_of_line("{x}\t", pmi, "m", day)) == []  # a TAB line is never JSON
    assert list(bigquery.rows_of_line('{"id": "v1", "ids": [], "scores": []}', source, "m", day)) == []
    with pytest.raises(ValueError):
        bigquery.check_row({**rows[0], "rank": "1"}, "similar_items")
    with pytest.raises(ValueError):
        bigquery.check_row({"id": "x", "embedding": 1.0, "model_run_id": None,
                            "run_date": "2024-02-29"}, "item_embeddings")


@pytest.mark.parametrize("dataset", [
    "my-project.recs", "my-project-123.Recs_2024", "example.com:my-project.recs",
    "my-project.123456789"])
def test_dataset_accepted(dataset):
    assert bigquery.validate_dataset(dataset) == dataset


@pytest.mark.parametrize("dataset", [
    "", "recs", "my-project", "my-project.recs.table", "my-project.recs$20240101",
    "`my-project.recs`", "my-project.`recs`", "my-project. recs", "my-project.recs ",
    "My-Project.recs", "my_project.recs", "abc.recs", "my-project.re-cs", "my-project..recs",
    "my-project.recs;DROP", "my-project.recs\n", "my-project:recs", "-my-project.recs", None])
def test_dataset_refused(dataset):
    with pytest.raises(ValueError):
        bigquery.validate_dataset(dataset)


def test_flags_are_checked_before_anything_runs(tmp_path):
    args = predict_args("p", "m", str(tmp_path / "out"), bigquery_dataset="my-project.recs.t")
    with pytest.raises(ValueError, match="invalid BigQuery dataset"):
        validate_args(args)
    args = predict_args("p", "m", str(tmp_path / "out"), bigquery_dataset=DATASET,
                        bigquery_run_date="20240230")
    with pytest.raises(ValueError, match="calendar date"):
        validate_args(args)
    with pytest.raises(ValueError, match="needs --bigquery_dataset"):
        validate_args(predict_args("p", "m", "o", bigquery_run_date="20240131"))
    for argv in ([], ["--temp_location=/tmp/x"], ["--runner=DirectRunner"]):
        with pytest.raises(ValueError, match="temp_location=gs://"):
            bigquery.check_load_location(argv)
    for argv in (TEMP, ["--temp_location", "gs://b/t"], ["--runner=DataflowRunner"]):
        bigquery.check_load_location(argv)
    assert bigquery.table_spec(DATASET, "targeting", datetime.date(2024, 1, 31)) == \
        "my-project:recs.targeting$20240131"


def test_the_real_write_to_bigquery_accepts_the_configs():
    """Graph construction only (nothing runs): WriteToBigQuery takes every table's arguments and
    parses the partition decorator."""
    from apache_beam.io.gcp.bigquery_tools import parse_table_reference
    from apache_beam.options.pipeline_options import PipelineOptions

    pipeline = beam.Pipeline(options=PipelineOptions(TEMP + ["--project=my-project"]))
    day = datetime.date(2024, 1, 31)
    results = (pipeline | beam.Create([None]) | bigquery_write.BigQueryOutputs(
        [(s, "/nowhere") for s in bigquery.PREDICTION_SOURCES.values()], DATASET, day, "m"))
    assert sorted(results) == sorted(bigquery.SCHEMAS)
    reference = parse_table_reference(bigquery.table_spec(DATASET, "similar_items", day))
    assert (reference.projectId, reference.datasetId, reference.tableId) == \
        ("my-project", "recs", "similar_items$20240131")


@pytest.mark.parametrize("with_scores", [True, False], ids=["scores-file", "older-cooc-tab-only"])
def test_pmi_similar_items_of_a_published_cooc_join_the_similar_items_table(tmp_path, file_sink,
                                                                            with_scores):
    """A published OUTPUT/cooc beside predictions/: its lists go into the same similar_items
    partition (one write) as source 'pmi', rank in list order, with the scores of
    pmi_similar_items_scores-*.jsonl, or score NULL from the TAB lines of an older cooc/ that
    has no scores file; WALS rows unchanged."""
    folder, configs = file_sink
    cooc = tmp_path / "cooc"
    cooc.mkdir()
    (cooc / "pmi_similar_items-00000-of-00001").write_text("i0\ti3,i1\ni1\ti0\n", encoding="utf-8")
    if with_scores:
        (cooc / "pmi_similar_items_scores-00000-of-00001.jsonl").write_text(
            '{"id": "i0", "ids": ["i3", "i1"], "scores": [1.5, 0.25]}\n'
            '{"id": "i1", "ids": ["i0"], "scores": [0.25]}\n', encoding="utf-8")
    (cooc / "manifest.json").write_text("{}")
    predictions = _predict(tmp_path, "predictions")
    assert len(configs["similar_items"]) == 1
    rows = _rows(folder, "similar_items")
    pmi = sorted((r["contentId"], r["rank"], r["similar_contentId"], r["score"]) for r in rows
                 if r["source"] == "pmi")
    scores = [1.5, 0.25, 0.25] if with_scores else [None] * 3
    assert pmi == [("i0", 1, "i3", scores[0]), ("i0", 2, "i1", scores[1]),
                   ("i1", 1, "i0", scores[2])]
    _check_topk_table([r for r in rows if r["source"] == "wals"], predictions, "similar_items",
                      "contentId", "similar_contentId", {"source": "wals"})


def test_readme_sql_joins_recommendations_back_to_ga_sessions(tmp_path):
    """The README's first BigQuery example, transpiled (sqlglot, bigquery -> duckdb) and run over
    GA sessions and a recommendations table: yesterday's visitors, their top 3, what they read."""
    import re

    import duckdb
    import sqlglot
    from sqlglot import exp

    from ga_fixtures import _SESSION_COLUMNS, write_ndjson
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md"), encoding="utf-8").read()
    section = readme[readme.index("## Query your recommendations in BigQuery"):]
    query = re.findall(r"```sql\n(.*?)```", section, re.S)[0]
    yesterday = datetime.date.today() - datetime.timedelta(days=1)

    def page(content):
        return {"type": "PAGE", "time": 0, "hitNumber": 1,
                "customDimensions": [{"index": 10, "value": content}]}
    sessions = [{"fullVisitorId": "A", "visitId": 1, "date": f"{yesterday:%Y%m%d}",
                 "hits": [page("c1"), page("c2"), page("c1")]},
                {"fullVisitorId": "B", "visitId": 2, "date": "20000101", "hits": [page("c3")]}]
    ndjson = write_ndjson(sessions, tmp_path / "sessions.ndjson")
    con = duckdb.connect()
    columns = "{" + ", ".join(f"'{k}': '{v}'" for k, v in _SESSION_COLUMNS.items()) + "}"
    con.execute(f"CREATE VIEW ga_sessions AS SELECT *, date AS _TABLE_SUFFIX FROM "
                f"read_json('{ndjson}', format='newline_delimited', columns={columns})")
    con.execute("CREATE TABLE recommendations (visitorId VARCHAR, rank BIGINT, contentId VARCHAR, "
                "score DOUBLE, model_run_id VARCHAR, run_date DATE)")
    con.executemany("INSERT INTO recommendations VALUES (?, ?, ?, ?, 'run', ?)",
                    [("A", 1, "x", 0.9, yesterday), ("A", 2, "y", 0.8, yesterday),
                     ("A", 4, "z", 0.1, yesterday), ("A", 1, "old", 0.9, datetime.date(2000, 1, 1)),
                     ("B", 1, "x", 0.5, yesterday)])

    def local(node):
        if isinstance(node, exp.Table) and node.args.get("db"):
            name = "ga_sessions" if "ga_sessions" in node.name else node.name
            return exp.Table(this=exp.to_identifier(name), alias=node.args.get("alias"))
        return node
    sql = sqlglot.parse_one(query, read="bigquery").transform(local).sql(dialect="duckdb")
    rows = [(v, r, c, s, sorted(read)) for v, r, c, s, read in con.execute(sql).fetchall()]
    assert rows == [("A", 1, "x", 0.9, ["c1", "c2"]), ("A", 2, "y", 0.8, ["c1", "c2"])]
