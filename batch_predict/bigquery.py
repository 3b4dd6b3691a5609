"""BigQuery outputs of the predict stage (`--bigquery_dataset project.dataset`): the published
prediction files as BigQuery tables with declared schemas, written by Beam's WriteToBigQuery.

    recommendations   visitorId, rank, contentId, score, model_run_id, run_date   (batch_pred)
    targeting         contentId, rank, visitorId, score, model_run_id, run_date   (users_for_item)
    similar_items     contentId, rank, similar_contentId, score, source ('wals'|'pmi'), ...
    item_embeddings   id, embedding ARRAY<FLOAT64>, model_run_id, run_date
    user_embeddings   id, embedding ARRAY<FLOAT64>, model_run_id, run_date

Rows come from the files the stage has published (read after the publish, inside the pipeline
that writes them): the top-k lists from their `*_scores-*.jsonl` (`{"id", "ids", "scores"}`, so
`--bigquery_dataset` turns `--write_scores` on; similar_items_scores is always written), the PMI
similar items from cooc/'s pmi_similar_items_scores-*.jsonl, or from its TAB lines (score NULL)
when an older cooc/ has none; the embeddings from their JSON lines. `rank` is 1-based, best first.

Every table is partitioned by `run_date` (DATE, column partitioning) and each run writes one
partition through its decorator (`table$YYYYMMDD`) with WRITE_TRUNCATE in one load job
(FILE_LOADS): a rerun for the same run date replaces that day's rows instead of adding to them,
and the other days are left alone. Several sources of one table (WALS and, later, PMI similar
items) are flattened into one write, so one run's rows of a table replace the partition together.

No TensorFlow or Beam here (the stage's flag checks use it); the transforms are in
batch_predict/bigquery_write.py.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import posixpath
from typing import Iterator

from stagekit.artifacts import COOC, exists, gfile  # gfile imports TensorFlow when called

from stagekit.bigquery_names import validate_dataset, validate_date

_META = [{"name": "model_run_id", "type": "STRING", "mode": "NULLABLE"},
         {"name": "run_date", "type": "DATE", "mode": "REQUIRED"}]


def _topk_schema(query: str, candidate: str, extra: list[dict] = ()) -> dict:
    return {"fields": [{"name": query, "type": "STRING", "mode": "REQUIRED"},
                       {"name": "rank", "type": "INT64", "mode": "REQUIRED"},
                       {"name": candidate, "type": "STRING", "mode": "REQUIRED"},
                       {"name": "score", "type": "FLOAT64", "mode": "NULLABLE"},
                       *extra, *_META]}


_EMBEDDING_SCHEMA = {"fields": [{"name": "id", "type": "STRING", "mode": "REQUIRED"},
                                {"name": "embedding", "type": "FLOAT64", "mode": "REPEATED"},
                                *_META]}

# table name -> BigQuery JSON schema ({"fields": [...]}, as WriteToBigQuery(schema=...) takes it)
SCHEMAS = {
    "recommendations": _topk_schema("visitorId", "contentId"),
    "targeting": _topk_schema("contentId", "visitorId"),
    "similar_items": _topk_schema("contentId", "similar_contentId",
                                  [{"name": "source", "type": "STRING", "mode": "REQUIRED"}]),
    "item_embeddings": _EMBEDDING_SCHEMA,
    "user_embeddings": _EMBEDDING_SCHEMA,
}
PARTITION_FIELD = "run_date"


@dataclasses.dataclass(frozen=True)
class Source:
    """One output file set and the table its rows go to. `pattern` is a glob under the folder
    the source lives in; `fixed` are constant columns (the similar items' `source`)."""
    name: str
    pattern: str
    table: str
    kind: str = "scores"  # lines: "scores" {"id","ids","scores"}; "tab" id<TAB>id1,id2,... (no
    #                       scores); "embedding" {"id","embedding"}
    fixed: tuple = ()    # ((column, value), ...)

    def key_fields(self) -> tuple[str, str]:
        names = [f["name"] for f in SCHEMAS[self.table]["fields"]]
        return names[0], names[2]  # query column, candidate column


# predictions/ outputs (batch_predict/outputs.py) -> tables
PREDICTION_SOURCES = {
    "batch_pred": Source("batch_pred", "batch_pred_scores-*.jsonl", "recommendations"),
    "users_for_item": Source("users_for_item", "users_for_item_scores-*.jsonl", "targeting"),
    "similar_items": Source("similar_items", "similar_items_scores-*.jsonl", "similar_items",
                            fixed=(("source", "wals"),)),
    "item_embeddings": Source("item_embeddings", "item_embeddings-*.json", "item_embeddings",
                              kind="embedding"),
    "user_embeddings": Source("user_embeddings", "user_embeddings-*.json", "user_embeddings",
                              kind="embedding"),
}


def prediction_sources(mode: str, outputs: list[str], n_similar: int) -> list[Source]:
    """The sources the predict stage's flags produce (so every pattern matches files)."""
    names = {"items_for_user": ["batch_pred"], "users_for_item": ["users_for_item"],
             "both": ["batch_pred", "users_for_item"]}[mode]
    if "similar_items" in outputs and n_similar > 0:
        names.append("similar_items")
    if "embeddings" in outputs:
        names += ["item_embeddings", "user_embeddings"]
    return [PREDICTION_SOURCES[name] for name in names]


# the co-occurrence stage's similar items (OUTPUT/cooc, pipeline/cooc/) with their SPPMI scores
PMI_SOURCE = Source("pmi_similar_items", "pmi_similar_items_scores-*.jsonl", "similar_items",
                    fixed=(("source", "pmi"),))
# a cooc/ published before the scores file existed: its TAB lines, score NULL
PMI_TAB_SOURCE = Source("pmi_similar_items", "pmi_similar_items-*", "similar_items", kind="tab",
                        fixed=(("source", "pmi"),))


def cooc_sources(predictions_dir: str) -> list[tuple[Source, str]]:
    """The PMI similar items of a published cooc/ beside predictions/ (the driver's layout):
    written with the WALS ones into the same similar_items partition, in one load job."""
    cooc = posixpath.join(posixpath.dirname(predictions_dir.rstrip("/")), COOC)
    if not exists(posixpath.join(cooc, "manifest.json")):
        return []
    scored = gfile().glob(posixpath.join(cooc, PMI_SOURCE.pattern))
    return [(PMI_SOURCE if scored else PMI_TAB_SOURCE, cooc)]


def run_date_of(text: str | None) -> datetime.date:
    """--bigquery_run_date (YYYYMMDD, checked) or today (UTC)."""
    if text is None:
        return datetime.datetime.now(datetime.timezone.utc).date()
    return datetime.datetime.strptime(validate_date(text, "--bigquery_run_date"), "%Y%m%d").date()


def table_spec(dataset: str, table: str, run_date: datetime.date) -> str:
    """`project:dataset.table$YYYYMMDD`: the run date's partition of the table."""
    project, _, name = validate_dataset(dataset).rpartition(".")
    if table not in SCHEMAS:
        raise ValueError(f"unknown BigQuery output table {table!r}; expected one of {sorted(SCHEMAS)}")
    return f"{project}:{name}.{table}${run_date:%Y%m%d}"


def write_config(dataset: str, table: str, run_date: datetime.date) -> dict:
    """WriteToBigQuery's arguments for one table (plain strings, as Beam's BigQueryDisposition
    constants are): the run date's partition, replaced by one load job; the table is created
    column-partitioned by run_date when missing."""
    return {"table": table_spec(dataset, table, run_date), "schema": SCHEMAS[table],
            "method": "FILE_LOADS", "write_disposition": "WRITE_TRUNCATE",
            "create_disposition": "CREATE_IF_NEEDED",
            "additional_bq_parameters": {"timePartitioning": {"type": "DAY",
                                                              "field": PARTITION_FIELD}}}


def rows_of_line(line: str, source: Source, model_run_id: str | None,
                 run_date: datetime.date) -> Iterator[dict]:
    """The table rows of one line of a source's files."""
    meta = {"model_run_id": model_run_id, "run_date": run_date.isoformat()}
    if source.kind == "embedding":
        record = json.loads(line)
        yield {"id": record["id"], "embedding": [float(x) for x in record["embedding"]], **meta}
        return
    if source.kind == "scores":
        record = json.loads(line)
        query, candidates, scores = record["id"], record["ids"], record["scores"]
    else:
        query, _, text = line.rstrip("\n").partition("\t")
        candidates = text.split(",") if text else []
        scores = [None] * len(candidates)
    query_field, candidate_field = source.key_fields()
    fixed = dict(source.fixed)
    for rank, (candidate, score) in enumerate(zip(candidates, scores), start=1):
        yield {query_field: query, "rank": rank, candidate_field: candidate,
               "score": None if score is None else float(score), **fixed, **meta}


_PY_TYPES = {"STRING": str, "INT64": int, "FLOAT64": float, "DATE": str}


def check_row(row: dict, table: str) -> None:
    """ValueError unless the row has exactly the schema's columns with values of their types."""
    fields = SCHEMAS[table]["fields"]
    if set(row) != {f["name"] for f in fields}:
        raise ValueError(f"{table} row columns {sorted(row)} != schema {[f['name'] for f in fields]}")
    for field in fields:
        value, kind = row[field["name"]], _PY_TYPES[field["type"]]
        values = value if field["mode"] == "REPEATED" else [value]
        if field["mode"] == "REPEATED" and not isinstance(value, list):
            raise ValueError(f"{table}.{field['name']} must be a list, got {value!r}")
        for v in values:
            if v is None and field["mode"] == "NULLABLE":
                continue
            if not isinstance(v, kind) or isinstance(v, bool):
                raise ValueError(f"{table}.{field['name']}: {v!r} is not {field['type']}")


def check_load_location(beam_argv: list[str]) -> None:
    """FILE_LOADS stages the rows as files in Cloud Storage: off Dataflow (which falls back to
    its staging location) that needs a gs:// --temp_location. Checked before the stage starts,
    not after its outputs are published."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--runner")
    parser.add_argument("--temp_location")
    known, _ = parser.parse_known_args(list(beam_argv))
    if (known.runner or "").lower().replace("runner", "") == "dataflow":
        return
    if not (known.temp_location or "").startswith("gs://"):
        raise ValueError("--bigquery_dataset loads the tables from files staged in Cloud Storage: "
                         "pass --temp_location=gs://BUCKET/tmp")
