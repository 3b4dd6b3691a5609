"""Dataflow Flex Template metadata (template/metadata.json), generated from the driver's parser.

    python -m pipeline.cloud.flex_template --write template/metadata.json   # regenerate (make template does)
    python -m pipeline.cloud.flex_template --check template/metadata.json   # exit 1 if it has drifted

Every flag of `python -m pipeline.run` (its own, the shared ones and each stage's) becomes a
template parameter with a label, the flag's help text, isOptional and a validation regex; Beam's
own options (--project, --region, ...) are not listed: the launcher supplies them.
"""
from __future__ import annotations

import argparse
import json
import re
import sys

TEMPLATE_NAME = "ga-wals-recommendations"
TEMPLATE_DESCRIPTION = ("Google Analytics 360 sessions -> TF Transform preprocessing -> WALS "
                        "training -> top-k recommendations (python -m pipeline.run).")
INT = r"^-?[0-9]+$"
FLOAT = r"^[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$"
GCS_PATH = r"^gs://[a-z0-9][-_.a-z0-9]*[a-z0-9](/.*)?$"
# flags whose values need more than their argparse type says
REGEX_OVERRIDES = {
    "output_dir": GCS_PATH,
    "input": GCS_PATH,
    "stages": r"^(preprocess|cooc|train|predict)(,(preprocess|cooc|train|predict))*$",
    "start_date": r"^([0-9]{8}|today(-[0-9]{1,4})?|yesterday)$",
    "end_date": r"^([0-9]{8}|today(-[0-9]{1,4})?|yesterday)$",
    "table": r"^[-a-zA-Z0-9_:.]+\.[a-zA-Z0-9_]+\.[a-zA-Z0-9_]+\*?$",
    "bigquery_dataset": r"^([a-z][a-z0-9.-]{0,62}:)?[a-z][a-z0-9-]{4,28}[a-z0-9]\.[A-Za-z0-9_]{1,1024}$",
    "bigquery_run_date": r"^[0-9]{8}$",
    "vertex_image": r"^[a-z0-9][-a-z0-9.]*(:[0-9]+)?/[-_./a-z0-9]+(:[-_.a-zA-Z0-9]+|@sha256:[0-9a-f]{64})?$",
}
REQUIRED_IN_TEMPLATE = {"output_dir"}
# used only where a stage's add_args gives no help= (better fixed there)
FALLBACK_HELP = {
    "source": "Where rows come from: bigquery (GA360 tables), ga_export (GA360 NDJSON export "
              "files) or interactions (delimited user_id,item_id,rating files).",
    "ga_preset": "GA semantics: news (time on page per article) or ecommerce (product views "
                 "and purchases).",
    "content_dimension": "Index of the GA custom dimension holding the article id (news preset).",
    "purchase_weight": "Score of one purchase relative to one product view (ecommerce preset).",
}  # the default ./output is no place for a Dataflow job


def user_options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The parser's --flags (not -h/--help), in the order they were added."""
    return [a for a in parser._actions  # argparse has no public list of actions
            if a.option_strings and not isinstance(a, argparse._HelpAction)]


def _regex(action: argparse.Action) -> str | None:
    if action.dest in REGEX_OVERRIDES:
        return REGEX_OVERRIDES[action.dest]
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return r"^(true|false)$"
    if action.choices:
        return "^(" + "|".join(re.escape(str(c)) for c in action.choices) + ")$"
    if action.type is int:
        return INT
    if action.type is float or getattr(action.type, "__name__", "") == "finite_float":
        return FLOAT
    return r"^\S+$"  # free text without spaces (paths, ids)


def _help_text(action: argparse.Action) -> str:
    text = (action.help or FALLBACK_HELP.get(action.dest, action.dest)).replace("%(default)s", str(action.default))
    text = " ".join(text.split())
    if action.default not in (None, False, argparse.SUPPRESS) and "default" not in text.lower():
        default = ",".join(action.default) if isinstance(action.default, list) else action.default
        text += f" Default: {default}."
    return text


def parameter(action: argparse.Action) -> dict:
    name = action.dest
    param = {"name": name, "label": name.replace("_", " ").capitalize(),
             "helpText": _help_text(action),
             "isOptional": not (action.required or name in REQUIRED_IN_TEMPLATE)}
    regex = _regex(action)
    if regex:
        param["regexes"] = [regex]
    return param


def build_metadata(parser: argparse.ArgumentParser | None = None) -> dict:
    """The Flex Template metadata for the driver's parser (pipeline.run.build_parser by default)."""
    if parser is None:
        from pipeline.run import build_parser
        parser = build_parser()
    return {"name": TEMPLATE_NAME, "description": TEMPLATE_DESCRIPTION,
            "parameters": [parameter(a) for a in user_options(parser)]}


def render(metadata: dict) -> str:
    return json.dumps(metadata, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.cloud.flex_template")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", metavar="PATH", help="Write the metadata file.")
    mode.add_argument("--check", metavar="PATH", help="Fail if the file differs from the parser.")
    args = parser.parse_args(argv)
    text = render(build_metadata())
    if args.write:
        with open(args.write, "w") as f:  # a repository file, not a pipeline artifact
            f.write(text)
        print(f"wrote {args.write}")
        return 0
    with open(args.check) as f:
        if f.read() != text:
            print(f"{args.check} is out of date: run python -m pipeline.cloud.flex_template --write {args.check}",
                  file=sys.stderr)
            return 1
    print(f"{args.check} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
