"""Interaction rows as they leave a source: columnar (visitorId, contentId, value) batches, the
parse result of one batch, and the checks every source applies to a row (ids, values)."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pyarrow as pa

from pipeline.sources import ga

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


class ParsedBatch(NamedTuple):
    rows: pa.RecordBatch
    rejects: list[tuple[str, str]]  # (raw row text, reason)
    input_rows: int


# Largest value a row may carry: the values are stored as float32 (max ~3.4e38) after summing
# per (user, item), so a value may be at most 2**-20 of that for up to a million rows of one
# pair to sum without overflow. Larger values are rejected, never clipped or turned into inf.
MAX_VALUE = float(np.finfo(np.float32).max) / 2 ** 20


def bad_id_reason(visitor: str, content: str) -> str | None:
    """empty_<side> or separator_in_<side> (a character of the prediction file format), else None."""
    for side, value in (("user_id", visitor), ("item_id", content)):
        if not value.strip():
            return f"empty_{side}"
        reason = ga.id_separator_reason(side, value)
        if reason:
            return reason
    return None
