"""The run summary (printed by pipeline.run), report.html and similar_items.html, built only from
a run's artifacts (local or gs://):

    python -m pipeline.report --output_dir output     # (re)build the pages for any run

  run_data      what the artifacts say (collect_run): the one dict everything below shows
  summary       the plain-text summary
  figures       the charts, inline SVG: loss, held-out NDCG per epoch, ratings, tuning, PCA
  page          report.html; each section with a "how to read this" line
  similar_page  similar_items.html: the most popular items' neighbours with scores, WALS and PMI

Missing parts (e.g. a run with --stages preprocess) are reported as missing, not as errors.
"""
from pipeline.report.command import main
from pipeline.report.page import write_report
from pipeline.report.run_data import collect_run, entity_words
from pipeline.report.summary import format_summary

__all__ = ["collect_run", "entity_words", "format_summary", "main", "write_report"]
