"""Item co-occurrence and PMI, pure (no Beam, no TensorFlow): what the cooc stage computes per
group of interactions (a visitor over the window, or a session) and per pair of items.

For G groups, n_i = the number of groups holding item i and n_ij = the number holding both i and j:

    PMI(i, j)  = log( n_ij · G / (n_i · n_j) )
    SPPMI(i, j) = max(PMI(i, j) − log(shift), 0)        (shifted positive PMI, Levy & Goldberg 2014)

kept only when n_ij ≥ min_count: plain PMI rewards rare pairs (two items seen once, together, score
log G), the shift and the count floor are what stop that. A group holds each item once, however
often it was viewed. Groups longer than `cap` items keep `cap` of them, chosen by a stable hash of
(group, item): the same uniform sample on every run and worker, and a group's pairs stay
≤ cap·(cap − 1)/2, so one heavy visitor (or a crawler) can neither dominate the counts nor blow up
the pair count (the BigQuery ML / course material caps the same way).
"""
from __future__ import annotations

import itertools
import math
import zlib
from typing import Iterable, Iterator

DEFAULT_CAP = 50        # items per group: at most 1,225 pairs per group
DEFAULT_SHIFT = 1.0     # log(1) = 0: positive PMI
DEFAULT_MIN_COUNT = 2   # a pair seen in one group only says little


def capped_items(group: bytes, items: Iterable[bytes], cap: int = DEFAULT_CAP) -> list[bytes]:
    """The group's distinct items, sorted; more than `cap`: the `cap` with the smallest
    CRC32(group, item) (deterministic across runs and processes, unlike Python's hash)."""
    distinct = sorted(set(items))
    if len(distinct) <= cap:
        return distinct
    ranked = sorted(distinct, key=lambda item: (zlib.crc32(group + b"\x00" + item), item))
    return sorted(ranked[:cap])


def item_pairs(items: list[bytes]) -> Iterator[tuple[bytes, bytes]]:
    """Every unordered pair of distinct items once, as (smaller, larger): `items` sorted, distinct."""
    return itertools.combinations(items, 2)


def sppmi(pair_count: int, count_a: int, count_b: int, groups: int,
          shift: float = DEFAULT_SHIFT, min_count: int = DEFAULT_MIN_COUNT) -> float | None:
    """Shifted positive PMI of one pair, or None when it is dropped (count below min_count, or
    a score of 0: no association above the shift)."""
    if pair_count < min_count:
        return None
    score = math.log(pair_count * groups / (count_a * count_b)) - math.log(shift)
    return score if score > 0 else None


def ranking_key(neighbour: tuple[bytes, float]) -> tuple:
    """Sort key, largest first: higher score, then the smaller id (the rule of every top-k list
    of this project: equal scores -> lower id first)."""
    item, score = neighbour
    return score, tuple(-byte for byte in item) + (1,)  # (1,): a prefix ranks before its extensions


def top_neighbours(neighbours: Iterable[tuple[bytes, float]], n: int) -> list[tuple[bytes, float]]:
    """The n best (item, score), best first."""
    return sorted(neighbours, key=ranking_key, reverse=True)[:n]
