"""Delimited interactions files (`--source interactions`): the header, and the batch parser.

A batch is parsed by pyarrow's CSV reader when it is clean and every quote in it wraps a whole
field (where pyarrow and Python's csv module agree), else row by row with the csv module, so a
row's fate never depends on which rows share its batch. Pure: no Beam."""
from __future__ import annotations

import csv
import io
import math
import re
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from apache_beam.io.filesystems import FileSystems

from pipeline.sources import ga
from pipeline.sources.rows import MAX_VALUE, ParsedBatch, bad_id_reason, row_batch
from pipeline.sources.textio import InputFileError, matching_files

REQUIRED_COLUMNS = ("user_id", "item_id", "rating")


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


# ga.ID_SEPARATORS as RE2 character classes, for the vectorised fast path
_SEPARATOR_PATTERNS = {side: ga.re2_class(chars) for side, chars in ga.ID_SEPARATORS.items()}


class InteractionsParser:
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
            reason = bad_id_reason(visitor, content)
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
