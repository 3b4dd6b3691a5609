"""The Beam side of the BigQuery outputs (tables, schemas and rows: batch_predict/bigquery.py).

    trigger --PredictionRows(source)--> rows of one source (its files read after the trigger)
    rows of a table's sources --Flatten--> {table: rows} --WriteTablesToBigQuery--> one
    WriteToBigQuery per table

The sink is a parameter (`sink(table, write_config) -> PTransform`) so the tests run the same
transforms with a file sink instead of BigQuery.
"""
from __future__ import annotations

import datetime
from typing import Callable

import apache_beam as beam

from batch_predict.bigquery import Source, rows_of_line, write_config
from stagekit.artifacts import join


def bigquery_sink(table: str, config: dict) -> beam.PTransform:
    return beam.io.WriteToBigQuery(**config)


class PredictionRows(beam.PTransform):
    """trigger (one element; the files are read only after it) -> the table rows of a source."""

    def __init__(self, source: Source, folder: str, model_run_id: str | None,
                 run_date: datetime.date):
        super().__init__()
        self.source, self.pattern = source, join(folder, source.pattern)
        self.model_run_id, self.run_date = model_run_id, run_date

    def expand(self, trigger):
        pattern = self.pattern
        return (trigger
                | "Pattern" >> beam.Map(lambda _: pattern)
                | "Read" >> beam.io.ReadAllFromText()
                | "Rows" >> beam.FlatMap(rows_of_line, self.source, self.model_run_id,
                                         self.run_date))


class WriteTablesToBigQuery(beam.PTransform):
    """{table: rows} -> each table written once (one load job replacing the run date's
    partition); returns {table: the sink's result}."""

    def __init__(self, dataset: str, run_date: datetime.date, sink: Callable | None = None):
        super().__init__()
        self.dataset, self.run_date, self.sink = dataset, run_date, sink

    def expand(self, rows_by_table: dict):
        results = {}
        for table, rows in sorted(rows_by_table.items()):
            config = write_config(self.dataset, table, self.run_date)
            sink = self.sink or bigquery_sink  # looked up now: tests swap the module's sink
            results[table] = rows | f"Write[{table}]" >> sink(table, config)
        return results


class BigQueryOutputs(beam.PTransform):
    """trigger -> every (source, folder) read after it and written to its table: what both
    engines of the predict stage add after their publish step."""

    def __init__(self, sources: list[tuple[Source, str]], dataset: str, run_date: datetime.date,
                 model_run_id: str | None, sink: Callable | None = None):
        super().__init__()
        self.sources, self.dataset, self.run_date = sources, dataset, run_date
        self.model_run_id, self.sink = model_run_id, sink

    def expand(self, trigger):
        by_table: dict = {}
        for source, folder in self.sources:
            by_table.setdefault(source.table, []).append(
                trigger | f"Rows[{source.name}]" >> PredictionRows(source, folder, self.model_run_id,
                                                                   self.run_date))
        tables = {table: tuple(rows) | f"All[{table}]" >> beam.Flatten()
                  for table, rows in by_table.items()}
        return tables | "WriteTables" >> WriteTablesToBigQuery(self.dataset, self.run_date,
                                                                  self.sink)
