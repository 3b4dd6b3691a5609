"""The flags that say what a stage reads (--source, --input, the GA presets, the window, the
reject budget), shared by every stage that reads a source (preprocess, cooc), and their checks.
Pure Python: the driver's parser and --help import no Beam."""
import argparse

import sys

from pipeline import sample, sample_ga4
from pipeline.sources import ga, ga4, sql
from stagekit import cli

DEFAULT_INPUT = {"ua": sample.SAMPLE_PATH, "ga4": sample_ga4.SAMPLE_PATH}  # per --ga_schema


def add_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("source")
    g.add_argument("--source", choices=("bigquery", "ga_export", "interactions"), default="ga_export",
                   help="Where rows come from: bigquery (GA tables, queried with the --ga_preset "
                        "SQL), ga_export (NDJSON files of those tables as written by `bq extract`, "
                        ".gz ok) or interactions (delimited user_id,item_id,rating files with a "
                        "header row).")
    g.add_argument("--ga_schema", choices=ga.SCHEMAS, default="ua",
                   help="Which GA export, for bigquery / ga_export: ua (Universal Analytics / "
                        "GA360 ga_sessions_*, one row a session) or ga4 (Google Analytics 4 "
                        "events_*, one row an event).")
    g.add_argument("--input", default=None,
                   help="File or glob (local or gs://) for ga_export / interactions (required for "
                        "interactions; ga_export defaults to the bundled sample of --ga_schema: "
                        "pipeline/data/ga_sessions_sample.ndjson.gz or ga4_events_sample.ndjson.gz).")
    g.add_argument("--ga_preset", choices=ga.PRESETS, default="news",
                   help="GA semantics for bigquery / ga_export. news: item = the page (ua: custom "
                        "dimension --content_dimension of PAGE hits, value = time on page in ms, "
                        "next PAGE hit's time minus this one's; ga4: the event parameter "
                        "--ga4_content_param, value = engagement_time_msec), summed per visitor "
                        "and item. ecommerce: item = the product (ua: productSKU of "
                        "non-impression products; ga4: items[].item_id), value = detail views "
                        "(ga4: view_item events) + --purchase_weight x purchases.")
    g.add_argument("--table", help="BigQuery table: ua project.dataset.ga_sessions_*, ga4 "
                                   "project.analytics_NNN.events_*")
    g.add_argument("--start_date", help="First _TABLE_SUFFIX (bigquery): YYYYMMDD, or with "
                                        "pipeline.run also today, today-N, yesterday (UTC)")
    g.add_argument("--end_date", help="Last _TABLE_SUFFIX (bigquery), same forms as --start_date")
    g.add_argument("--content_dimension", type=int, default=ga.DEFAULT_CONTENT_DIMENSION,
                   help="news preset: index of the hit-level custom dimension holding the "
                        "content id (GA360 has 1..200).")
    g.add_argument("--purchase_weight", type=cli.finite_float, default=ga.DEFAULT_PURCHASE_WEIGHT,
                   help="ecommerce preset: score of one purchase, in product detail views (a "
                        "view scores 1). The default %(default)s counts a purchase as that many "
                        "views, a rarer and stronger preference signal; 0 ignores purchases.")
    g.add_argument("--ga4_visitor", choices=ga4.VISITORS, default="user_pseudo_id",
                   help="ga4: who a visitor is. user_pseudo_id: the browser/app instance; user_id: "
                        "your signed-in user id where the event has one, else user_pseudo_id.")
    g.add_argument("--ga4_content_param", default=ga4.DEFAULT_CONTENT_PARAM,
                   help="ga4 news preset: the event parameter naming the content (its string or "
                        "int value, cut at the first ? or #); a custom dimension such as "
                        "article_id is an event parameter too.")
    g.add_argument("--print_query", action="store_true",
                   help="With --source bigquery: print the exact SQL the source would run for "
                        "these flags (to stdout, nothing else) and exit 0; e.g. pipe it to "
                        "`bq query --dry_run` to see the bytes it scans.")
    g.add_argument("--max_rejected_fraction", type=cli.finite_float, default=0.1,
                   help="Fail (after writing rejects) when rejected/input rows exceeds this.")


def validate_args(args: argparse.Namespace) -> None:
    """Flag values alone, no files and no heavy import: a bigquery source's --table, dates and
    preset options are values too."""
    cli.check_range(args, "max_rejected_fraction", 0, 1)
    cli.check_range(args, "purchase_weight", 0)
    cli.check_range(args, "content_dimension", 1, sql.MAX_CUSTOM_DIMENSION)
    ga4.check_param_name(getattr(args, "ga4_content_param", ga4.DEFAULT_CONTENT_PARAM))
    if args.source == "interactions" and getattr(args, "ga_schema", "ua") != "ua":
        raise ValueError("--ga_schema applies to GA sources (--source bigquery or ga_export), "
                         "not to --source interactions")
    if getattr(args, "print_query", False) and args.source != "bigquery":
        raise ValueError("--print_query prints the SQL of --source bigquery; there is no query "
                         f"for --source {args.source}")
    args = with_default_input(args)
    if args.source == "bigquery":
        sql.query_for(args)  # raises naming a bad --table, date or preset option


def print_query(args: argparse.Namespace, session_key: bool = False) -> None:
    """--print_query: the SQL alone on stdout (logs go to stderr), for `bq query --dry_run`."""
    sys.stdout.write(sql.query_for(args, session_key))
    sys.stdout.flush()


def check_inputs(args: argparse.Namespace) -> None:
    """What the flags name must be there: --input must match files (local or gs://, so through
    Beam's file systems; a glob matching nothing is a bad flag, exit 2)."""
    args = with_default_input(args)
    if args.source != "bigquery":
        from pipeline.sources import textio

        textio.matching_files(args.input)


def with_default_input(args: argparse.Namespace) -> argparse.Namespace:
    """The bundled sample of --ga_schema for ga_export without --input; interactions files must
    be named."""
    if args.input or args.source == "bigquery":
        return args
    if args.source == "interactions":
        raise ValueError("--source interactions needs --input FILE_OR_GLOB (a delimited file with a "
                         "user_id,item_id,rating header)")
    return argparse.Namespace(**{**vars(args), "input": DEFAULT_INPUT[getattr(args, "ga_schema", "ua")]})
