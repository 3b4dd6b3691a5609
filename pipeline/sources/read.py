"""PTransforms reading each `--source` into batches of raw interaction rows, rejects and counts.

Every source expands to the same three PCollections (a `SourceOutput`):
  rows      pyarrow RecordBatches (ROW_SCHEMA): columnar (visitorId, contentId, value) triples, not yet summed per pair
  rejected  {"raw": str, "reason": str, "source": str}, one per rejected input row
  stats     per-batch count dicts {"input_rows", "accepted_rows", "rejected_rows", "rejected.<reason>"}
so input_rows = accepted_rows + rejected_rows holds by construction. File sources read lines with
`pipeline.sources.textio.ReadLineBatches` and parse a batch at a time (one DoFn call per few thousand
lines) to keep per-element Beam overhead off the hot path. Every source rejects ids that are blank
or hold a separator of the prediction files (`ga.id_separator_reason`) with the same reasons.
"""

import json
import math
from collections import Counter
from typing import Callable, Iterable, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipeline.sources import ga, ga4
from pipeline.sources.interactions import InteractionsParser, read_interactions_header
from pipeline.sources.rows import MAX_VALUE, ParsedBatch, bad_id_reason, triples_batch
from pipeline.sources.textio import ReadLineBatches

_MAX_RAW_CHARS = 10_000  # a reject keeps enough of the row to debug it, not a 100 MB line


class SourceOutput(NamedTuple):
    rows: beam.PCollection
    rejected: beam.PCollection
    stats: beam.PCollection


def _raw_text(raw: bytes | str | dict) -> str:
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="backslashreplace")  # invalid bytes stay visible as \xNN
    elif not isinstance(raw, str):
        raw = json.dumps(raw, default=str, sort_keys=True)
    return raw[:_MAX_RAW_CHARS]


class _ParseBatchDoFn(beam.DoFn):
    """Runs a batch parser; emits rows (main), rejected (tagged) and stats (tagged)."""

    def __init__(self, parse_batch: Callable[[list], ParsedBatch], source: str):
        self._parse_batch = parse_batch
        self._source = source
        self._input_rows = Metrics.counter("preprocess", "input_rows")
        self._accepted_rows = Metrics.counter("preprocess", "accepted_rows")
        self._rejected_rows = Metrics.counter("preprocess", "rejected_rows")

    def process(self, batch: list):
        parsed = self._parse_batch(batch)
        by_reason = Counter(reason for _, reason in parsed.rejects)
        accepted = parsed.input_rows - len(parsed.rejects)
        self._input_rows.inc(parsed.input_rows)
        self._accepted_rows.inc(accepted)
        self._rejected_rows.inc(len(parsed.rejects))
        for reason, count in by_reason.items():
            Metrics.counter("preprocess", f"rejected.{reason}").inc(count)
        for raw, reason in parsed.rejects:
            yield beam.pvalue.TaggedOutput(
                "rejected", {"raw": _raw_text(raw), "reason": reason, "source": self._source})
        stats = {"input_rows": parsed.input_rows, "accepted_rows": accepted,
                 "rejected_rows": len(parsed.rejects)}
        stats.update({f"rejected.{reason}": count for reason, count in by_reason.items()})
        yield beam.pvalue.TaggedOutput("stats", stats)
        if parsed.rows.num_rows:
            yield parsed.rows


class _ParseBatches(beam.PTransform):
    """Parses each batch (a list of raw rows) with `parse_batch`."""

    def __init__(self, parse_batch: Callable[[list], ParsedBatch], source: str):
        super().__init__()
        self._parse_batch = parse_batch
        self._source = source

    def expand(self, raw_rows):
        outputs = (raw_rows
                   | "Parse" >> beam.ParDo(_ParseBatchDoFn(self._parse_batch, self._source))
                   .with_outputs("rejected", "stats", main="rows"))
        return SourceOutput(outputs.rows, outputs.rejected, outputs.stats)


# --- ga_export ----------------------------------------------------------------------------------

class _GaExportParser:
    """Picklable batch parser for NDJSON GA export lines: UA sessions (`ga.session_interactions`)
    or GA4 events (`ga4.event_interactions`), one row a line."""

    def __init__(self, schema: str, options: dict):
        self._interactions = ga4.event_interactions if schema == "ga4" else ga.session_interactions
        self._options = options

    def __call__(self, lines: list[bytes]) -> ParsedBatch:
        triples, rejects = [], []
        lines = [line for line in lines if line.strip()]  # blank lines are not rows in NDJSON
        for line in lines:
            try:  # both check ids too (blank, separators): the same reasons as the other sources
                triples += self._interactions(ga.parse_session_line(line), **self._options)
            except ga.RejectedRow as rejected:
                rejects.append((line, rejected.reason))
        return ParsedBatch(triples_batch(triples), rejects, len(lines))


class ReadGaExport(beam.PTransform):
    """NDJSON GA export files (`bq extract` format, .gz too) -> SourceOutput: UA ga_sessions_*
    rows (schema "ua") or GA4 events_* rows (schema "ga4")."""

    def __init__(self, file_pattern: str, preset: str = "news", *, schema: str = "ua",
                 content_dimension: int = ga.DEFAULT_CONTENT_DIMENSION,
                 purchase_weight: float = ga.DEFAULT_PURCHASE_WEIGHT, session_key: bool = False,
                 ga4_visitor: str = "user_pseudo_id",
                 ga4_content_param: str = ga4.DEFAULT_CONTENT_PARAM):
        super().__init__()
        if preset not in ga.PRESETS:
            raise ValueError(f"unknown --ga_preset {preset!r}; expected one of {ga.PRESETS}")
        if schema not in ga.SCHEMAS:
            raise ValueError(f"unknown --ga_schema {schema!r}; expected one of {ga.SCHEMAS}")
        options = dict(preset=preset, purchase_weight=purchase_weight, session_key=session_key)
        if schema == "ga4":
            options.update(visitor=ga4_visitor, content_param=ga4_content_param)
        else:
            options.update(content_dimension=content_dimension)
        self._file_pattern = file_pattern
        self._parser = _GaExportParser(schema, options)
        self._label = "ParseEvents" if schema == "ga4" else "ParseSessions"

    def expand(self, pipeline):
        return (pipeline
                | "ReadLines" >> ReadLineBatches(self._file_pattern)
                | self._label >> _ParseBatches(self._parser, "ga_export"))


# --- interactions -------------------------------------------------------------------------------

class ReadInteractions(beam.PTransform):
    """Delimited `user_id,item_id,rating` files (comma or tab, header row) -> SourceOutput."""

    def __init__(self, file_pattern: str):
        super().__init__()
        self._file_pattern = file_pattern
        self._header = read_interactions_header(file_pattern)
        self._parser = InteractionsParser(self._header)

    def expand(self, pipeline):
        return (pipeline
                | "ReadLines" >> ReadLineBatches(self._file_pattern, skip_header_lines=1,
                                                 csv_delimiter=self._header.delimiter)
                | "ParseInteractions" >> _ParseBatches(self._parser, "interactions"))


# --- bigquery -----------------------------------------------------------------------------------

class _BigQueryRowsParser:
    """Rows of the preset query (already summed, value > 0); still checked, never trusted.
    session_key: visitorIds are visitor + SESSION_KEY_SEPARATOR + visitId (digits), and the
    visitor part is what the id rules check."""

    def __init__(self, session_key: bool = False):
        self._session_key = session_key

    def __call__(self, rows: list[dict]) -> ParsedBatch:
        return _parse_bigquery_rows(rows, self._session_key)


def _visitor_part(visitor: str, session_key: bool) -> str:
    if not session_key:
        return visitor
    part, separator, visit = visitor.rpartition(ga.SESSION_KEY_SEPARATOR)
    return part if separator and visit.isdigit() else ""  # "" -> empty_user_id: rejected


def _parse_bigquery_rows(rows: list[dict], session_key: bool = False) -> ParsedBatch:
    """Rows of the preset query (already summed, value > 0); still checked, never trusted."""
    triples, rejects = [], []
    for row in rows:
        try:
            visitor, content, value = row["visitorId"], row["contentId"], float(row["value"])
        except (KeyError, TypeError, ValueError):
            rejects.append((row, "malformed_bigquery_row"))
            continue
        reason = (bad_id_reason(_visitor_part(str(visitor or ""), session_key), str(content or ""))
                  or ("non_positive_value" if not (math.isfinite(value) and value > 0) else None)
                  or ("value_out_of_range" if value > MAX_VALUE else None))
        if reason:
            rejects.append((row, reason))
        else:
            triples.append((str(visitor), str(content), value))
    return ParsedBatch(triples_batch(triples), rejects, len(rows))


class ReadBigQuery(beam.PTransform):
    """Standard-SQL query (from pipeline.sources.sql.build_query) -> SourceOutput."""

    def __init__(self, query: str, session_key: bool = False):
        super().__init__()
        self.query, self._session_key = query, session_key

    def expand(self, pipeline):
        return (pipeline
                | "Query" >> beam.io.ReadFromBigQuery(query=self.query, use_standard_sql=True)
                | "Batch" >> beam.BatchElements(min_batch_size=512, max_batch_size=8192)
                | "CheckRows" >> _ParseBatches(_BigQueryRowsParser(self._session_key), "bigquery"))


def source_transform(args, session_key: bool = False) -> beam.PTransform:
    """The reading PTransform for args.source (the seam tests use to check what would run).
    session_key (GA sources): rows keyed by visitor and session (ga.session_interactions)."""
    if session_key and args.source == "interactions":
        raise ValueError("session keys come from GA sessions (--source ga_export or bigquery)")
    if args.source == "ga_export":
        return ReadGaExport(args.input, args.ga_preset, schema=getattr(args, "ga_schema", "ua"),
                            content_dimension=args.content_dimension,
                            purchase_weight=args.purchase_weight, session_key=session_key,
                            ga4_visitor=getattr(args, "ga4_visitor", "user_pseudo_id"),
                            ga4_content_param=getattr(args, "ga4_content_param",
                                                      ga4.DEFAULT_CONTENT_PARAM))
    if args.source == "interactions":
        return ReadInteractions(args.input)
    if args.source == "bigquery":
        from pipeline.sources import sql
        return ReadBigQuery(sql.query_for(args, session_key), session_key)
    raise ValueError(f"unknown --source {args.source!r}")


def merge_stats(stats: Iterable[dict]) -> dict:
    """Sums count dicts; keys starting with min_/max_ combine by min/max instead."""
    merged: dict = {}
    for part in stats:
        for key, value in part.items():
            if key not in merged:
                merged[key] = value
            elif key.startswith("min_"):
                merged[key] = min(merged[key], value)
            elif key.startswith("max_"):
                merged[key] = max(merged[key], value)
            else:
                merged[key] += value
    return merged
