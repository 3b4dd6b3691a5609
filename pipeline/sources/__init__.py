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

import csv
import io
import json
import math
import re
from collections import Counter
from typing import Callable, Iterable, NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipeline.sources import ga
from pipeline.sources.textio import InputFileError, ReadLineBatches, matching_files

REQUIRED_COLUMNS = ("user_id", "item_id", "rating")
_MAX_RAW_CHARS = 10_000  # a reject keeps enough of the row to debug it, not a 100 MB line


ROW_SCHEMA = pa.schema([("visitorId", pa.binary()), ("contentId", pa.binary()), ("value", pa.float64())])


def row_batch(visitor_ids: list, content_ids: list, values) -> pa.RecordBatch:
    """Columnar interaction triples (ids as binary: opaque, cheap to pickle and shuffle)."""
    return pa.RecordBatch.from_arrays(
        [_binary(visitor_ids), _binary(content_ids), pa.array(values, pa.float64())], schema=ROW_SCHEMA)


def _binary(ids) -> pa.Array:
    if isinstance(ids, pa.Array):
        return ids.cast(pa.binary())
    return pa.array(ids, pa.string()).cast(pa.binary()) if ids and isinstance(ids[0], str) \
        else pa.array(ids, pa.binary())


def triples_batch(triples: list[tuple[str, str, float]]) -> pa.RecordBatch:
    if not triples:
        return row_batch([], [], [])
    visitors, contents, values = zip(*triples)
    return row_batch(list(visitors), list(contents), list(values))


class SourceOutput(NamedTuple):
    rows: beam.PCollection
    rejected: beam.PCollection
    stats: beam.PCollection


class ParsedBatch(NamedTuple):
    rows: pa.RecordBatch
    rejects: list[tuple[str, str]]  # (raw row text, reason)
    input_rows: int


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

class _GaSessionParser:
    """Picklable batch parser for NDJSON GA360 session lines."""

    def __init__(self, preset: str, content_dimension: int, purchase_weight: float):
        self._options = dict(preset=preset, content_dimension=content_dimension,
                             purchase_weight=purchase_weight)

    def __call__(self, lines: list[bytes]) -> ParsedBatch:
        triples, rejects = [], []
        lines = [line for line in lines if line.strip()]  # blank lines are not rows in NDJSON
        for line in lines:
            try:  # ga checks ids too (blank, separators): the same reasons as the other sources
                triples += ga.session_interactions(ga.parse_session_line(line), **self._options)
            except ga.RejectedRow as rejected:
                rejects.append((line, rejected.reason))
        return ParsedBatch(triples_batch(triples), rejects, len(lines))


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
                | "ReadLines" >> ReadLineBatches(self._file_pattern)
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
    headers = {}
    for metadata in matching_files(file_pattern):
        try:
            with FileSystems.open(metadata.path) as f:  # compression detected from the extension
                first_line = f.readline().decode("utf-8", errors="replace")
        except Exception as exc:  # noqa: BLE001 - e.g. a .gz that is not gzip: name the file
            raise InputFileError(f"{metadata.path}: cannot read its header ({type(exc).__name__}: "
                                 f"{exc})") from None
        headers[metadata.path] = parse_header(first_line)
    if len(set(headers.values())) > 1:
        raise ValueError(f"interactions files under {file_pattern!r} have different headers: "
                         f"{sorted(set(headers.values()))}")
    return next(iter(headers.values()))


# Largest value a row may carry: the values are stored as float32 (max ~3.4e38) after summing
# per (user, item), so a value may be at most 2**-20 of that for up to a million rows of one
# pair to sum without overflow. Larger values are rejected, never clipped or turned into inf.
MAX_VALUE = float(np.finfo(np.float32).max) / 2 ** 20


def _rating_reason(text: str, rating: float) -> str | None:
    if math.isnan(rating):
        return "rating_nan" if text.strip().lower() in ("nan", "+nan", "-nan") else "rating_not_numeric"
    if math.isinf(rating):
        return "rating_infinite"
    if rating < 0:
        return "rating_negative"
    if rating > MAX_VALUE:
        return "rating_out_of_range"
    return None


def _bad_id_reason(visitor: str, content: str) -> str | None:
    """empty_<side> or separator_in_<side> (a character of the prediction file format), else None."""
    for side, value in (("user_id", visitor), ("item_id", content)):
        if not value.strip():
            return f"empty_{side}"
        reason = ga.id_separator_reason(side, value)
        if reason:
            return reason
    return None


# ga.ID_SEPARATORS as RE2 character classes, for the vectorised fast path
_SEPARATOR_PATTERNS = {side: ga.re2_class(chars) for side, chars in ga.ID_SEPARATORS.items()}


class _InteractionsParser:
    """Picklable batch parser for delimited interactions lines (header already removed)."""

    def __init__(self, header: InteractionsHeader):
        self._header = header
        d = "\\t" if header.delimiter == "\t" else re.escape(header.delimiter)
        field = f'(?:"(?:[^"\\n]|"")*"|[^"\\n{d}]*)'
        # every quote wraps a whole field (with "" escapes): pyarrow and the csv module read such
        # lines identically, so the fast path may take them
        self._quoted_line = f"^{field}(?:{d}{field})*$"

    def _well_quoted(self, data: bytes) -> bool:
        lines = pc.split_pattern(pa.array([data], pa.binary()), b"\n").flatten()
        return pc.all(pc.match_substring_regex(lines, self._quoted_line)).as_py()

    def __call__(self, lines: list[bytes]) -> ParsedBatch:
        return self._clean_batch(lines) or self._row_by_row(lines)

    def _clean_batch(self, lines: list[bytes]) -> ParsedBatch | None:
        """Vectorised fast path (pyarrow's CSV reader): only for a batch without a single bad row,
        so it never has to explain a reject; any doubt -> None and the exact row-by-row path."""
        h = self._header
        data = b"\n".join(lines)
        if b'"' in data and not self._well_quoted(data):
            return None  # odd quoting: only the csv module parses it, whatever else is in the batch
        try:
            data.decode("utf-8")  # pyarrow's invalid-row callback cannot report non-UTF-8 text
        except UnicodeDecodeError:
            return None
        invalid = []
        names = [f"c{i}" for i in range(h.num_columns)]
        try:
            table = pa_csv.read_csv(
                io.BytesIO(data),
                read_options=pa_csv.ReadOptions(column_names=names, use_threads=False,
                                                block_size=len(data) + 1),
                parse_options=pa_csv.ParseOptions(delimiter=h.delimiter, ignore_empty_lines=False,
                                                  invalid_row_handler=lambda row: invalid.append(row) or "skip"),
                convert_options=pa_csv.ConvertOptions(
                    include_columns=[names[h.user_col], names[h.item_col], names[h.rating_col]],
                    column_types={names[h.user_col]: pa.string(), names[h.item_col]: pa.string(),
                                  names[h.rating_col]: pa.float64()}))
        except pa.ArrowInvalid:
            return None
        if invalid or table.num_rows != len(lines):
            return None
        users, items = table.column(names[h.user_col]), table.column(names[h.item_col])
        ratings = table.column(names[h.rating_col])
        bad = pc.or_kleene(pc.invert(pc.is_finite(ratings)), pc.less(ratings, 0.0))
        bad = pc.or_kleene(bad, pc.greater(ratings, MAX_VALUE))
        for side, ids in (("user_id", users), ("item_id", items)):
            bad = pc.or_kleene(bad, pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(ids)), 0))
            bad = pc.or_kleene(bad, pc.match_substring_regex(ids, _SEPARATOR_PATTERNS[side]))
        if ratings.null_count or users.null_count or items.null_count or pc.any(bad).as_py():
            return None
        return ParsedBatch(row_batch(users.combine_chunks(), items.combine_chunks(),
                                     ratings.combine_chunks()), [], len(lines))

    def _row_by_row(self, lines: list[bytes]) -> ParsedBatch:
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
        good = np.isfinite(ratings) & (ratings >= 0) & (ratings <= MAX_VALUE)
        for index in np.flatnonzero(~good):
            rejects.append((kept_texts[index], _rating_reason(rating_texts[index], ratings[index])))
        keep = np.flatnonzero(good).tolist()
        rows = row_batch([visitors[i] for i in keep], [contents[i] for i in keep], ratings[good])
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
    """UTF-8 decodes lines (whole batch at once when possible: when no record holds a newline,
    of a quoted multi-line field, the joined text splits back exactly)."""
    joined = b"\n".join(lines)
    try:
        if joined.count(b"\n") == len(lines) - 1:
            return joined.decode("utf-8").split("\n"), []
        return [line.decode("utf-8") for line in lines], []
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
        self._header = read_interactions_header(file_pattern)
        self._parser = _InteractionsParser(self._header)

    def expand(self, pipeline):
        return (pipeline
                | "ReadLines" >> ReadLineBatches(self._file_pattern, skip_header_lines=1,
                                                 csv_delimiter=self._header.delimiter)
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
                  or ("non_positive_value" if not (math.isfinite(value) and value > 0) else None)
                  or ("value_out_of_range" if value > MAX_VALUE else None))
        if reason:
            rejects.append((row, reason))
        else:
            triples.append((str(visitor), str(content), value))
    return ParsedBatch(triples_batch(triples), rejects, len(rows))


class ReadBigQuery(beam.PTransform):
    """Standard-SQL query (from pipeline.sources.sql.build_query) -> SourceOutput."""

    def __init__(self, query: str):
        super().__init__()
        self.query = query

    def expand(self, pipeline):
        return (pipeline
                | "Query" >> beam.io.ReadFromBigQuery(query=self.query, use_standard_sql=True)
                | "Batch" >> beam.BatchElements(min_batch_size=512, max_batch_size=8192)
                | "CheckRows" >> _ParseBatches(_parse_bigquery_rows, "bigquery"))


def source_transform(args) -> beam.PTransform:
    """The reading PTransform for args.source (the seam tests use to check what would run)."""
    if args.source == "ga_export":
        return ReadGaExport(args.input, args.ga_preset, content_dimension=args.content_dimension,
                            purchase_weight=args.purchase_weight)
    if args.source == "interactions":
        return ReadInteractions(args.input)
    if args.source == "bigquery":
        from pipeline.sources import sql
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
