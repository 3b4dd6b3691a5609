"""Co-occurrence stage: similar items by shifted positive PMI over the same sources as preprocess.

    python -m pipeline.cooc [--source ...] [--input ...] [--output_dir output] [--cooc_max_items 50]

Reads the interactions exactly as the preprocess stage does (same --source, presets, rejects and
counts: input = accepted + rejected), groups each visitor's items over the input's window (or
each session's, --cooc_scope session), caps a group at --cooc_max_items items, counts the pairs and writes OUTPUT_DIR/cooc/ (issue 13):
  pmi_similar_items-*  contentId<TAB>contentId1,contentId2,... best first (up to --cooc_top_n)
  pmi_similar_items_scores-*.jsonl  {"id", "ids", "scores"} per line: the same lists with their
                       SPPMI scores (the predict stage's similar_items_scores-*.jsonl shape)
  pmi_item_embeddings.json  {"id": contentId, "embedding": [...]} per line (--pmi_embedding_dim)
  rejected-*           rejected rows with their reason, as preprocess writes them
  manifest.json        the marker, written last: run id, counts and the settings
The math is in transforms/cooccurrence.py, the Beam job in pipeline/cooc/job.py (imported only
once the flags have passed); `pipeline.run --stages ...,cooc` runs it too, and a Flex Template
launch with --stages=cooc (the job publishes cooc/ itself). Its PMI lists reach BigQuery with the
predict stage's tables (--bigquery_dataset).
"""
import argparse
import logging

from stagekit import cli
from pipeline.sources import flags as source_flags
from pipeline.sources.counts import InputRefused
from pipeline.sources.flags import check_inputs, with_default_input  # noqa: F401 (the stage's inputs)
from transforms import cooccurrence

LOG = logging.getLogger(__name__)
SCOPES = ("visitor", "session")


def add_args(parser: argparse.ArgumentParser) -> None:
    """Flags owned by the cooc stage (the source flags are pipeline/sources/flags.py's)."""
    g = parser.add_argument_group("co-occurrence (cooc)")
    g.add_argument("--cooc_scope", choices=SCOPES, default="visitor",
                   help="Group of items whose pairs co-occur: a visitor over the input's window, "
                        "or one session (GA sources: ga_export, bigquery).")
    g.add_argument("--cooc_max_items", type=int, default=cooccurrence.DEFAULT_CAP,
                   help="Items per group at most (a stable hash picks which): one heavy visitor "
                        "then adds at most n(n-1)/2 pairs.")
    g.add_argument("--pmi_shift", type=cli.finite_float, default=cooccurrence.DEFAULT_SHIFT,
                   help="s of max(PMI - log s, 0); 1 keeps every positive association.")
    g.add_argument("--pmi_min_count", type=int, default=cooccurrence.DEFAULT_MIN_COUNT,
                   help="Pairs seen together in fewer groups are dropped (PMI over-rewards rare pairs).")
    g.add_argument("--cooc_top_n", type=int, default=10, help="Similar items listed per item.")
    g.add_argument("--pmi_embedding_dim", type=int, default=32,
                   help="Size of the item embeddings factorised from the PMI matrix by WALS "
                        "(pmi_item_embeddings.json, Vertex AI Vector Search's JSON lines); 0: none.")


def validate_args(args: argparse.Namespace) -> None:
    """Flag values alone: no files, no heavy import."""
    source_flags.validate_args(args)
    cli.check_range(args, "cooc_max_items", 2, 10_000)
    cli.check_range(args, "pmi_shift", 1)
    cli.check_range(args, "pmi_min_count", 1)
    cli.check_range(args, "cooc_top_n", 1, 10_000)
    cli.check_range(args, "pmi_embedding_dim", 0, 1024)
    if args.cooc_scope == "session" and args.source == "interactions":
        raise ValueError("--cooc_scope session needs GA sessions (--source ga_export or bigquery); "
                         "--source interactions has no session ids")


def run(args, beam_argv: list[str]) -> dict:
    """Runs the stage; returns manifest.json's dict."""
    validate_args(args)
    check_inputs(args)
    from pipeline.cooc import job as cooc_job  # Beam: only now

    return cooc_job.run(with_default_input(args), beam_argv)


def print_query(args) -> None:
    """--print_query: the stage's SQL (keyed by session with --cooc_scope session) on stdout."""
    validate_args(args)
    source_flags.print_query(args, session_key=args.cooc_scope == "session")


def main(argv: list[str] | None = None) -> None:
    """`python -m pipeline.cooc`: this stage alone; exit 0 on success, 1 on failure, 2 bad flags."""
    cli.beam_stage_main("cooc", __doc__.split("\n", 1)[0], [source_flags.add_args, add_args], run,
                        (InputRefused, ValueError, FileNotFoundError), argv,
                        validate=validate_args, print_query=print_query)

