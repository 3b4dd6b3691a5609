"""BigQuery names the product builds SQL and load jobs from, checked strictly (no SQL is ever
built from unchecked text): tables and datasets as project.dataset[.table], dates as YYYYMMDD."""
import datetime
import re

# project: 6-30 chars, lowercase letters/digits/hyphens, optional legacy "domain.com:" prefix;
# dataset: letters/digits/underscores (GA360 export datasets are numeric view ids); table: letters/digits/underscores/hyphens, optional `*`.
PROJECT_PATTERN = r"(?:[a-z][a-z0-9.-]{0,62}:)?[a-z][a-z0-9-]{4,28}[a-z0-9]"
DATASET_PATTERN = r"[A-Za-z0-9_]{1,1024}"
_TABLE_RE = re.compile(
    PROJECT_PATTERN + r"\." + DATASET_PATTERN
    + r"\.(?:[A-Za-z0-9_][A-Za-z0-9_-]{0,1023}\*?|\*)")
_DATASET_RE = re.compile(f"(?P<project>{PROJECT_PATTERN})\\.(?P<dataset>{DATASET_PATTERN})")
_DATE_RE = re.compile(r"\d{8}")


def validate_table(table: str) -> str:
    """Returns `table` if it is a plain `project.dataset.table` (trailing `*` allowed), else ValueError."""
    if not isinstance(table, str) or not _TABLE_RE.fullmatch(table):
        raise ValueError(
            f"invalid BigQuery table {table!r}: expected project.dataset.table, e.g. "
            "my-project.my_dataset.ga_sessions_* (project: lowercase letters, digits, hyphens; "
            "dataset: letters, digits, underscores; table: letters, digits, underscores, "
            "hyphens, optional trailing *; no quotes, spaces or other characters)")
    return table


def validate_dataset(dataset: str) -> str:
    """Returns `dataset` if it is a plain `project.dataset` (the rules of validate_table), else
    ValueError: the output dataset of --bigquery_dataset."""
    if not isinstance(dataset, str) or not _DATASET_RE.fullmatch(dataset):
        raise ValueError(
            f"invalid BigQuery dataset {dataset!r}: expected project.dataset, e.g. "
            "my-project.recommendations (project: lowercase letters, digits, hyphens; "
            "dataset: letters, digits, underscores; no quotes, spaces, table or other characters)")
    return dataset


def validate_date(date: str, flag: str = "date") -> str:
    """Returns a YYYYMMDD string that is a real calendar date, else ValueError."""
    if not isinstance(date, str) or not _DATE_RE.fullmatch(date):
        raise ValueError(f"invalid {flag} {date!r}: expected YYYYMMDD, e.g. 20240131")
    try:
        datetime.datetime.strptime(date, "%Y%m%d")
    except ValueError:
        raise ValueError(f"invalid {flag} {date!r}: not a calendar date") from None
    return date
