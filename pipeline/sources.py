"""PTransforms reading each `--source` into batches of raw interaction rows, rejects and counts.

Every source expands to the same three PCollections (a `SourceOutput`):
  rows      `RowBatch`es: columnar (visitorId, contentId, value) triples, not yet summed per pair
  rejected  {"raw": str, "reason": str, "source": str}, one per rejected input row
  stats     per-batch count dicts {"input_rows", "accepted_rows", "rejected_rows", "rejected.<reason>"}
so input_rows = accepted_rows + rejected_rows holds by construction. Lines are parsed a batch at a
time (one DoFn call per few thousand lines) to keep per-element Beam overhead off the hot path.
"""

import csv
import json
import math
from collections import Counter
from typing import Callable, Iterable, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.coders import BytesCoder
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipeline import ga

REQUIRED_COLUMNS = ("user_id", "item_id", "rating")
_MAX_RAW_CHARS = 10_000  # a reject keeps enough of the row to debug it, not a 100 MB line
_BATCH = dict(min_batch_size=512, max_batch_size=8192)


class RowBatch(NamedTuple):
    """Columnar interaction triples: object arrays of str ids, float64 values."""
    visitor_ids: np.ndarray
    content_ids: np.ndarray
    values: np.ndarray

    @classmethod
    def from_triples(cls, triples: list[tuple[str, str, float]]) -> "RowBatch":
        if not triples:
            return cls(np.empty(0, object), np.empty(0, object), np.empty(0, np.float64))
        visitors, contents, values = zip(*triples)
        return cls(np.array(visitors, dtype=object), np.array(contents, dtype=object),
                   np.asarray(values, dtype=np.float64))


class SourceOutput(NamedTuple):
    rows: beam.PCollection
    rejected: beam.PCollection
    stats: beam.PCollection


class ParsedBatch(NamedTuple):
    rows: RowBatch
    rejects: list[tuple[str, str]]  # (raw row text, reason)
    input_rows: int


def _raw_text(raw: bytes | str | dict) -> str:
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
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
        if len(parsed.rows.values):
            yield parsed.rows


class _ParseBatches(beam.PTransform):
    """Batches raw elements and parses each batch with `parse_batch`."""

    def __init__(self, parse_batch: Callable[[list], ParsedBatch], source: str):
        super().__init__()
        self._parse_batch = parse_batch
        self._source = source

    def expand(self, raw_rows):
        outputs = (raw_rows
                   | "Batch" >> beam.BatchElements(**_BATCH)
                   | "Parse" >> beam.ParDo(_ParseBatchDoFn(self._parse_batch, self._source))
                   .with_outputs("rejected", "stats", main="rows"))
        return SourceOutput(outputs.rows, outputs.rejected, outputs.stats)


# --- ga_export ----------------------------------------------------------------------------------

class _GaSessionParser:
    """Picklable batch parser for NDJSON GA360 session lines."""

    def __init__(self, preset: str, content_dimension: int, purchase_weight: float):
        self._options = dict(preset=preset, content_dimension=content_dimension,
                             purchase_weight=purchase_weight)

    def __call__(self, lines: list[bytes]) -> ParsedBatch:
        triples, rejects = [], []
        for line in lines:
            try:
                session = ga.parse_session_line(line)
                triples.extend(ga.session_interactions(session, **self._options))
            except ga.RejectedRow as rejected:
                rejects.append((line, rejected.reason))
        return ParsedBatch(RowBatch.from_triples(triples), rejects, len(lines))


class ReadGaExport(beam.PTransform):
    """NDJSON GA360 session files (`bq extract` format, .gz too) -> SourceOutput."""

    def __init__(self, file_pattern: str, preset: str = "news", *,
                 content_dimension: int = ga.DEFAULT_CONTENT_DIMENSION,
                 purchase_weight: float = ga.DEFAULT_PURCHASE_WEIGHT):
        super().__init__()
        if preset not in ga.PRESETS:
            raise ValueError(f"unknown --ga_preset {preset!r}; expected one of {ga.PRESETS}")
        self._file_pattern = file_pattern
        self._parser = _GaSessionParser(preset, content_dimension, purchase_weight)

    def expand(self, pipeline):
        return (pipeline
                | "ReadLines" >> beam.io.ReadFromText(self._file_pattern, coder=BytesCoder())
                | "ParseSessions" >> _ParseBatches(self._parser, "ga_export"))


# --- interactions -------------------------------------------------------------------------------

class InteractionsHeader(NamedTuple):
    delimiter: str
    user_col: int
    item_col: int
    rating_col: int
    num_columns: int


def parse_header(line: str) -> InteractionsHeader:
    """Detects the delimiter (tab if the header has one, else comma) and the required columns."""
    line = line.lstrip("\ufeff").rstrip("\r\n")
    delimiter = "\t" if "\t" in line else ","
    names = [name.strip().lower() for name in next(csv.reader([line], delimiter=delimiter))]
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    if missing:
        raise ValueError(f"interactions header {line!r} lacks column(s) {missing}; "
                         f"it must name at least {list(REQUIRED_COLUMNS)}")
    return InteractionsHeader(delimiter, *(names.index(name) for name in REQUIRED_COLUMNS),
                              len(names))


def read_interactions_header(file_pattern: str) -> InteractionsHeader:
    """Reads the header of every matching file; they must agree (one delimiter, one layout)."""
    matches = FileSystems.match([file_pattern])[0].metadata_list
    if not matches:
        raise FileNotFoundError(f"--input {file_pattern!r} matches no files")
    headers = {}
    for metadata in matches:
        with FileSystems.open(metadata.path) as f:  # compression detected from the extension
            first_line = f.readline().decode("utf-8", errors="replace")
        headers[metadata.path] = parse_header(first_line)
    if len(set(headers.values())) > 1:
        raise ValueError(f"interactions files under {file_pattern!r} have different headers: "
                         f"{sorted(set(headers.values()))}")
    return next(iter(headers.values()))


def _rating_reason(text: str, rating: float) -> str | None:
    if math.isnan(rating):
        return "rating_nan" if text.strip().lower() in ("nan", "+nan", "-nan") else "rating_not_numeric"
    if math.isinf(rating):
        return "rating_infinite"
    if rating < 0:
        return "rating_negative"
    return None


def _bad_id_reason(visitor: str, content: str) -> str | None:
    for name, value in (("user_id", visitor), ("item_id", content)):
        if not value.strip():
            return f"empty_{name}"
        if "\n" in value or "\r" in value:  # a vocabulary file is one id per line
            return f"newline_in_{name}"
    return None


class _InteractionsParser:
    """Picklable batch parser for delimited interactions lines (header already removed)."""

    def __init__(self, header: InteractionsHeader):
        self._header = header

    def __call__(self, lines: list[bytes]) -> ParsedBatch:
        h = self._header
        texts, rejects = _decode_lines(lines)
        visitors, contents, rating_texts = [], [], []
        kept_texts = []
        for text in texts:
            fields = _split_fields(text, h.delimiter)
            if fields is None:
                rejects.append((text, "malformed_quoting"))
                continue
            if len(fields) != h.num_columns:
                rejects.append((text, "wrong_column_count"))
                continue
            visitor, content = fields[h.user_col], fields[h.item_col]
            reason = _bad_id_reason(visitor, content)
            if reason:
                rejects.append((text, reason))
                continue
            visitors.append(visitor)
            contents.append(content)
            rating_texts.append(fields[h.rating_col])
            kept_texts.append(text)
        ratings = _to_float(rating_texts)
        good = np.isfinite(ratings) & (ratings >= 0)
        for index in np.flatnonzero(~good):
            rejects.append((kept_texts[index], _rating_reason(rating_texts[index], ratings[index])))
        rows = RowBatch(np.array(visitors, dtype=object)[good], np.array(contents, dtype=object)[good],
                        ratings[good])
        return ParsedBatch(rows, rejects, len(lines))


def _split_fields(text: str, delimiter: str) -> list[str] | None:
    """Splits one line; csv quoting only when the line has a quote (the fast path is str.split)."""
    if '"' not in text:
        return text.split(delimiter)
    try:  # one line at a time: an unbalanced quote must not swallow the following lines
        return next(csv.reader([text], delimiter=delimiter, strict=True))
    except (csv.Error, StopIteration):
        return None


def _decode_lines(lines: list[bytes]) -> tuple[list[str], list[tuple[bytes, str]]]:
    """UTF-8 decodes lines (whole batch at once when possible); a line with a newline-like
    character inside is impossible here, so a joined decode splits back exactly."""
    try:
        return b"\n".join(lines).decode("utf-8").split("\n"), []
    except UnicodeDecodeError:
        texts, rejects = [], []
        for line in lines:
            try:
                texts.append(line.decode("utf-8"))
            except UnicodeDecodeError:
                rejects.append((line, "not_utf8"))
        return texts, rejects


def _to_float(texts: list[str]) -> np.ndarray:
    """Vectorised float parse; unparseable text -> NaN (classified by _rating_reason)."""
    try:
        return np.array(texts, dtype=np.float64) if texts else np.empty(0, np.float64)
    except ValueError:
        out = np.empty(len(texts), np.float64)
        for i, text in enumerate(texts):
            try:
                out[i] = float(text)
            except ValueError:
                out[i] = math.nan
        return out


class ReadInteractions(beam.PTransform):
    """Delimited `user_id,item_id,rating` files (comma or tab, header row) -> SourceOutput."""

    def __init__(self, file_pattern: str):
        super().__init__()
        self._file_pattern = file_pattern
        self._parser = _InteractionsParser(read_interactions_header(file_pattern))

    def expand(self, pipeline):
        return (pipeline
                | "ReadLines" >> beam.io.ReadFromText(self._file_pattern, coder=BytesCoder(),
                                                      skip_header_lines=1)
                | "ParseInteractions" >> _ParseBatches(self._parser, "interactions"))


# --- bigquery -----------------------------------------------------------------------------------

def _parse_bigquery_rows(rows: list[dict]) -> ParsedBatch:
    """Rows of the preset query (already summed, value > 0); still checked, never trusted."""
    triples, rejects = [], []
    for row in rows:
        try:
            visitor, content, value = row["visitorId"], row["contentId"], float(row["value"])
        except (KeyError, TypeError, ValueError):
            rejects.append((row, "malformed_bigquery_row"))
            continue
        reason = (_bad_id_reason(str(visitor or ""), str(content or ""))
                  or ("non_positive_value" if not (math.isfinite(value) and value > 0) else None))
        if reason:
            rejects.append((row, reason))
        else:
            triples.append((str(visitor), str(content), value))
    return ParsedBatch(RowBatch.from_triples(triples), rejects, len(rows))


class ReadBigQuery(beam.PTransform):
    """Standard-SQL query (from pipeline.sql.build_query) -> SourceOutput."""

    def __init__(self, query: str):
        super().__init__()
        self.query = query

    def expand(self, pipeline):
        return (pipeline
                | "Query" >> beam.io.ReadFromBigQuery(query=self.query, use_standard_sql=True)
                | "CheckRows" >> _ParseBatches(_parse_bigquery_rows, "bigquery"))


def source_transform(args) -> beam.PTransform:
    """The reading PTransform for args.source (the seam tests use to check what would run)."""
    if args.source == "ga_export":
        return ReadGaExport(args.input, args.ga_preset, content_dimension=args.content_dimension,
                            purchase_weight=args.purchase_weight)
    if args.source == "interactions":
        return ReadInteractions(args.input)
    if args.source == "bigquery":
        from pipeline import sql
        if not args.table:
            raise ValueError("--source bigquery needs --table, e.g. project.dataset.ga_sessions_*")
        return ReadBigQuery(sql.build_query(
            args.ga_preset, sql.validate_table(args.table), content_dimension=args.content_dimension,
            start_date=args.start_date, end_date=args.end_date, purchase_weight=args.purchase_weight))
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
