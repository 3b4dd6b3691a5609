"""Test helpers for the GA layer: NDJSON fixtures and running the BigQuery preset SQL in DuckDB.

`run_bigquery_sql_on_ndjson` is the local stand-in for BigQuery: it registers the NDJSON export
file as a DuckDB view with the GA360 column types (DuckDB casts the INT64-as-string fields while
reading), points the query's table at it, transpiles BigQuery -> DuckDB with sqlglot and runs it.
"""
from __future__ import annotations

import json
from collections.abc import Iterable

import duckdb
import sqlglot
from sqlglot import exp

# The GA360 export fields the presets read, typed as in the BigQuery schema.
_HIT_TYPE = ("STRUCT(type VARCHAR, time BIGINT, hitNumber BIGINT, "
             'customDimensions STRUCT("index" BIGINT, value VARCHAR)[], '
             "product STRUCT(productSKU VARCHAR, isImpression BOOLEAN)[], "
             "eCommerceAction STRUCT(action_type VARCHAR))[]")
_SESSION_COLUMNS = {"fullVisitorId": "VARCHAR", "visitId": "BIGINT", "date": "VARCHAR",
                    "hits": _HIT_TYPE}
# The GA4 export fields the presets read (events_YYYYMMDD), typed as in its BigQuery schema.
_GA4_COLUMNS = {
    "event_date": "VARCHAR", "event_timestamp": "BIGINT", "event_name": "VARCHAR",
    "user_pseudo_id": "VARCHAR", "user_id": "VARCHAR",
    "event_params": "STRUCT(key VARCHAR, value STRUCT(string_value VARCHAR, int_value BIGINT, "
                    "float_value DOUBLE, double_value DOUBLE))[]",
    "items": "STRUCT(item_id VARCHAR, item_name VARCHAR, quantity BIGINT)[]"}
SCHEMAS = {"ua": (_SESSION_COLUMNS, "date"), "ga4": (_GA4_COLUMNS, "event_date")}


def write_ndjson(sessions: Iterable[dict], path) -> str:
    with open(path, "w", encoding="utf-8") as out:
        for session in sessions:
            out.write(json.dumps(session) + "\n")
    return str(path)


def run_bigquery_sql_on_ndjson(query: str, ndjson_path: str, schema: str = "ua"
                               ) -> dict[tuple[str, str], float]:
    """Runs a pipeline.sources.sql query over an NDJSON export (schema "ua": ga_sessions_* rows,
    "ga4": events_* rows); returns {(visitorId, contentId): value}.

    Every table in the query is replaced by the export, whose `date` (ua) or `event_date` (ga4)
    plays `_TABLE_SUFFIX`.
    """
    con = duckdb.connect()
    typed, suffix = SCHEMAS[schema]
    columns = "{" + ", ".join(f"'{k}': '{v}'" for k, v in typed.items()) + "}"
    con.execute(f"""CREATE VIEW ga_sessions AS
        SELECT *, {suffix} AS _TABLE_SUFFIX
        FROM read_json('{ndjson_path}', format='newline_delimited', columns={columns})""")

    def to_local_table(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Table) and node.args.get("db"):
            return exp.Table(this=exp.to_identifier("ga_sessions"), alias=node.args.get("alias"))
        return node

    bigquery_ast = sqlglot.parse_one(query, read="bigquery")
    duckdb_sql = bigquery_ast.transform(to_local_table).sql(dialect="duckdb")
    rows = con.execute(duckdb_sql).fetchall()
    con.close()
    result = {(visitor, content): value for visitor, content, value in rows}
    assert len(result) == len(rows), "query returned duplicate (visitorId, contentId) rows"
    return result
