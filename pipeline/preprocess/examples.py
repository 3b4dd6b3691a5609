"""tf.train.Example bytes for the sparse-row records (key, indices, values), encoded with numpy.

The record format is DESIGN.md's: features `key` (int64 list of one), `indices` (int64 list) and
`values` (float list). Building protos one by one costs ~1.4 s per million interactions; writing
the protobuf wire format for all rows at once with numpy costs ~0.6 s and always gives the same
bytes (feature order fixed), which the protobuf API does not promise across processes.
"""
from __future__ import annotations

import numpy as np

def _varints(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Protobuf varints of non-negative ints, all at once: (concatenated bytes, size of each)."""
    values = values.astype(np.uint64)
    sizes = np.ones(len(values), np.int64)
    for shift in range(7, 64, 7):
        sizes += values >= np.uint64(1 << shift)
    starts = np.cumsum(sizes) - sizes
    out = np.empty(int(sizes.sum()), np.uint8)
    for k in range(int(sizes.max(initial=0))):
        rows = np.flatnonzero(sizes > k) if k else slice(None)
        more = np.where(sizes[rows] > k + 1, 0x80, 0).astype(np.uint64)
        out[starts[rows] + k] = ((values[rows] >> np.uint64(7 * k)) & np.uint64(0x7F)) | more
    return out, sizes


def _interleave(parts: list, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Concatenates `count` records part by part; a part is constant bytes or (the parts of all
    records concatenated in record order, size per record). Returns the bytes and record ends."""
    sizes = [np.full(count, len(p)) if isinstance(p, bytes) else p[1] for p in parts]
    ends = np.cumsum(sum(sizes)) if count else np.empty(0, np.int64)
    out = np.empty(int(ends[-1]) if count else 0, np.uint8)
    position = ends - sum(sizes)
    for part, size in zip(parts, sizes):
        if isinstance(part, bytes):
            for offset, byte in enumerate(part):
                out[position + offset] = byte
        else:
            shift = np.repeat(position - (np.cumsum(size) - size), size)
            out[np.arange(len(part[0])) + shift] = part[0]
        position += size
    return out, ends


def _length_prefixed(tag: bytes, payload_sizes: np.ndarray) -> tuple[list, np.ndarray]:
    """The parts `tag, varint(size)` before a payload, and the size of the whole field."""
    prefix = _varints(payload_sizes)
    return [tag, prefix], len(tag) + prefix[1] + payload_sizes


def _feature_entry(name: bytes, list_tag: bytes, payload: tuple) -> tuple[list, np.ndarray]:
    """Features.feature map entry {name: Feature{<list_tag>: List{packed value: payload}}}."""
    packed, packed_size = _length_prefixed(b"\x0a", payload[1])       # List.value (packed)
    listed, list_size = _length_prefixed(list_tag, packed_size)      # Feature.<kind>_list
    entry_head = b"\x0a" + bytes([len(name)]) + name                  # MapEntry.key
    valued, value_size = _length_prefixed(b"\x12", list_size)         # MapEntry.value
    entry, entry_size = _length_prefixed(b"\x0a", len(entry_head) + value_size)  # Features.feature
    return entry + [entry_head] + valued + listed + packed + [payload], entry_size


def serialized_examples(keys: np.ndarray, indices: np.ndarray, values: np.ndarray) -> list[bytes]:
    """One serialized tf.train.Example per distinct key: `key` [1], `indices` sorted ascending,
    `values` (float32) in the same order. The protobuf wire format is written with numpy for all
    Examples at once (building ~100k Example objects in Python took ~1 s per million rows)."""
    keys, indices = np.asarray(keys, np.int64), np.asarray(indices, np.int64)
    if len(keys) and keys.min() >= 0 and indices.min() >= 0 and \
            int(keys.max()) < 2**62 // (int(indices.max()) + 1):
        composite = keys * (int(indices.max()) + 1) + indices  # one int64 sort key
        order = np.argsort(composite)  # introsort: ~5x faster than a stable sort of int64
        if np.any(np.diff(composite[order]) == 0):  # a repeated (key, index): keep input order
            order = np.argsort(composite, kind="stable")
    else:
        order = np.lexsort((indices, keys))
    keys, indices, values = keys[order], indices[order], values[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.empty(0, np.int64)
    counts = np.diff(np.r_[starts, len(keys)])
    index_bytes, index_sizes = _varints(indices)
    parts, features_size = [], 0
    for name, list_tag, payload in (
            (b"key", b"\x1a", _varints(keys[starts])),
            (b"indices", b"\x1a", (index_bytes, np.add.reduceat(index_sizes, starts) if len(starts) else counts)),
            (b"values", b"\x12", (values.astype("<f4").view(np.uint8), 4 * counts))):
        entry, entry_size = _feature_entry(name, list_tag, payload)
        parts += entry
        features_size = features_size + entry_size
    example, _ = _length_prefixed(b"\x0a", features_size)  # Example.features
    data, ends = _interleave(example + parts, len(starts))
    data, begins = data.tobytes(), (ends - features_size - len(example[0]) - example[1][1]).tolist()
    return [data[begin:end] for begin, end in zip(begins, ends.tolist())]
