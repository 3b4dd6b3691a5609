"""The co-occurrence (PMI) similar-items job as small composite PTransforms (issue 13, part 1).

    row batches (pipeline.sources: visitorId, contentId, value)
      | ItemsPerGroup(cap)          -> (group, its distinct items, capped)    one per group
      | CountCooccurrences()        -> pair counts, item counts, group count
      | ScorePairs(shift, min_count) -> (item, (neighbour, SPPMI)) both ways
      | TopSimilar(n)               -> (item, [(neighbour, score), ...] best first)

The math (PMI, the shift, the cap) is stated once in transforms/cooccurrence.py. Groups are
visitors over the input's window (`--cooc_scope visitor`). Rows whose value is not positive count
as no interaction, as in preprocess (pairs summed to <= 0 are dropped there).
"""
from __future__ import annotations

import apache_beam as beam

from pipeline.sources.rows import ROW_SCHEMA
from transforms import cooccurrence

_GROUP, _ITEM, _VALUE = (field.name for field in ROW_SCHEMA)


def _group_item_pairs(batch):
    """(visitorId, contentId) of each row of an arrow batch with a positive value."""
    groups, items, values = (batch.column(name).to_pylist() for name in (_GROUP, _ITEM, _VALUE))
    return [(group, item) for group, item, value in zip(groups, items, values) if value > 0]


class ItemsPerGroup(beam.PTransform):
    """Row batches -> (group, sorted distinct items, at most `cap`)."""

    def __init__(self, cap: int = cooccurrence.DEFAULT_CAP):
        super().__init__()
        self._cap = cap

    def expand(self, row_batches):
        return (row_batches
                | "GroupItemPairs" >> beam.FlatMap(_group_item_pairs)
                | "GroupByGroup" >> beam.GroupByKey()
                | "CapItems" >> beam.MapTuple(
                    lambda group, items: (group, cooccurrence.capped_items(group, items, self._cap))))


class CountCooccurrences(beam.PTransform):
    """(group, items) -> {"pairs": ((a, b), n_ab), "items": (item, n_item), "groups": G}."""

    def expand(self, groups):
        lists = groups | "Items" >> beam.Values()
        return {
            "pairs": (lists
                      | "Pairs" >> beam.FlatMap(lambda items: ((pair, 1) for pair in
                                                              cooccurrence.item_pairs(items)))
                      | "SumPairs" >> beam.CombinePerKey(sum)),
            "items": (lists
                      | "EachItem" >> beam.FlatMap(lambda items: ((item, 1) for item in items))
                      | "SumItems" >> beam.CombinePerKey(sum)),
            "groups": lists | "CountGroups" >> beam.combiners.Count.Globally(),
        }


def _scored_both_ways(pair_count, item_counts: dict, groups: int, shift: float, min_count: int):
    (a, b), count = pair_count
    score = cooccurrence.sppmi(count, item_counts[a], item_counts[b], groups, shift, min_count)
    if score is not None:
        yield a, (b, score)
        yield b, (a, score)


class ScorePairs(beam.PTransform):
    """The counts -> (item, (neighbour, SPPMI)) for each kept pair, in both directions. The item
    counts travel as a side input (one entry per item: the catalog, not the interactions)."""

    def __init__(self, shift: float = cooccurrence.DEFAULT_SHIFT,
                 min_count: int = cooccurrence.DEFAULT_MIN_COUNT):
        super().__init__()
        self._shift, self._min_count = shift, min_count

    def expand(self, counts):
        return counts["pairs"] | "SPPMI" >> beam.FlatMap(
            _scored_both_ways, beam.pvalue.AsDict(counts["items"]),
            beam.pvalue.AsSingleton(counts["groups"]), self._shift, self._min_count)


class TopSimilar(beam.PTransform):
    """(item, (neighbour, score)) -> (item, the n best (neighbour, score)), best first, equal
    scores -> lower id first."""

    def __init__(self, n: int):
        super().__init__()
        self._n = n

    def expand(self, scored):
        return (scored
                | "TopPerItem" >> beam.combiners.Top.PerKey(self._n, key=cooccurrence.ranking_key))


def similar_items_line(item_and_neighbours) -> str:
    """`contentId<TAB>contentId1,contentId2,...` (best first), the similar_items-* format."""
    item, neighbours = item_and_neighbours
    return "\t".join([item.decode("utf-8"), ",".join(n.decode("utf-8") for n, _ in neighbours)])
