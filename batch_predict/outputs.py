"""Writing prediction artifacts: staged in a temporary folder, moved into place only when complete.

File formats (one record per line, ids are the original ids from the TFT vocabularies):
  batch_pred-*               visitorId<TAB>contentId1,contentId2,...   (best first)
  users_for_item-*           contentId<TAB>visitorId1,visitorId2,...
  similar_items-*            contentId<TAB>contentId1,...              (never the item itself)
  *_scores-*.jsonl           {"id": ..., "ids": [...], "scores": [...]}  same ids and order as the
                             TAB file: similar_items_scores always (cosine), batch_pred_scores and
                             users_for_item_scores with --write_scores
  item/user_embeddings-*.json {"id": ..., "embedding": [...]}
  item/user_factors.csv      id,f0,f1,...
  popular_items.txt          contentId<TAB>number of users who have it, most popular first
  manifest.json              run id, files, rows: written last, the folder is complete when it is there

The lines are formatted a block of rows at a time with arrow's string kernels
(stagekit/textfile.py), not one line at a time in Python: as fast as pyarrow's own CSV writer
(benchmarks/exports.py).
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import posixpath
import uuid
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa
import tensorflow as tf

from batch_predict.artifacts import ArtifactError
from stagekit import lock, publish, textfile
from stagekit.textfile import write_embeddings  # noqa: F401 (one of the stage's outputs)
from stagekit.progress import Progress
from stagekit.artifacts import join
from batch_predict.topk import TopKBlock

log = logging.getLogger(__name__)

# Every name this stage may write into predictions/; --overwrite replaces exactly these.
OUTPUT_PREFIXES = ("batch_pred", "users_for_item", "similar_items", "item_embeddings",
                   "user_embeddings", "item_factors", "user_factors", "popular_items")


def shard_name(prefix: str, index: int = 0, count: int = 1, suffix: str = "") -> str:
    """Beam's default shard naming, so local and Beam outputs look alike."""
    return f"{prefix}-{index:05d}-of-{count:05d}{suffix}"


MANIFEST = "manifest.json"  # written last: the marker of a complete predictions folder


class Staging:
    """A scratch folder beside output_dir that becomes output_dir on commit (stagekit/publish.py).

    Refuses (before anything is written) to replace existing predictions unless overwrite is set,
    and to replace a folder holding anything that is not predictions.
    """

    def __init__(self, output_dir: str, overwrite: bool, run_id: str | None = None):
        self.output_dir = output_dir.rstrip("/")
        self.overwrite = overwrite
        self.run_id = run_id or uuid.uuid4().hex
        names = sorted(tf.io.gfile.listdir(self.output_dir)) if tf.io.gfile.isdir(self.output_dir) else []
        # ".staging-*": scratch of an interrupted run of an earlier version, replaced with the rest
        foreign = [n for n in names
                   if not n.rstrip("/").startswith(OUTPUT_PREFIXES + (MANIFEST, ".staging-"))]
        if foreign:
            raise ArtifactError(f"{output_dir} holds files that are not predictions ({foreign[0]}, ...): "
                                "choose an empty folder or a predictions folder for --output_dir")
        if names and not overwrite:
            raise ArtifactError(f"{output_dir} already holds predictions ({names[0]}, ...); "
                                "pass --overwrite to replace them")
        parent = posixpath.dirname(self.output_dir)
        scratch = join(parent, "_tmp_predict_") if parent else "_tmp_predict_"
        if overwrite:  # scratch of dead runs (a finished run removes its own)
            for stale in tf.io.gfile.glob(scratch + "*"):
                if tf.io.gfile.isdir(stale) and lock.scratch_is_dead(stale):
                    tf.io.gfile.rmtree(stale)
        self.dir = scratch + self.run_id[:12]
        lock.mark_scratch(self.dir, self.run_id)

    @classmethod
    def reopen(cls, output_dir: str, staged: str, run_id: str) -> "Staging":
        """The staging of a run begun elsewhere (the Beam job's last step, on a worker)."""
        staging = cls.__new__(cls)
        staging.output_dir, staging.overwrite = output_dir.rstrip("/"), True
        staging.dir, staging.run_id = staged, run_id
        return staging

    def path(self, name: str) -> str:
        return join(self.dir, name)

    def staged_files(self) -> list[str]:
        return sorted(tf.io.gfile.listdir(self.dir))

    def commit(self, manifest: dict) -> list[str]:
        """Writes the manifest (run id, files, `manifest` fields) and publishes the staged folder
        as output_dir; returns the final paths."""
        if tf.io.gfile.exists(self.path(lock.OWNER)):
            tf.io.gfile.remove(self.path(lock.OWNER))  # bookkeeping of the scratch, not an output
        files = [name for name in self.staged_files() if name != MANIFEST]
        publish.write_marker(self.dir, MANIFEST, {**manifest, "run_id": self.run_id, "files": files,
                                                  "created": _now()})
        publish.publish(self.dir, self.output_dir, MANIFEST, self.run_id)
        return [join(self.output_dir, name) for name in files + [MANIFEST]]

    def abort(self) -> None:
        if tf.io.gfile.exists(self.dir):
            tf.io.gfile.rmtree(self.dir)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class TopKFormatter:
    """The lines of TopKBlocks, a whole block at a time (stagekit/textfile.py): the TAB lines
    (query<TAB>candidate1,candidate2,...) and, with scores, the JSON lines exactly as json.dumps
    writes {"id", "ids", "scores"} (scores as float(float32) reprs). The in-process writer and the
    Beam job's workers both use it, so the two engines write identical lines. `end` ends every
    line (Beam's WriteToText adds its own)."""

    def __init__(self, query_vocab: Sequence[str], candidate_vocab: Sequence[str],
                 scores: bool = False, end: str = "\n"):
        self.query, self.candidates = textfile.strings(query_vocab), textfile.strings(candidate_vocab)
        self.query_json = textfile.json_strings(self.query) if scores else None
        self.candidates_json = textfile.json_strings(self.candidates) if scores else None
        self.end = end

    def lines(self, block: TopKBlock) -> tuple[pa.Array, pa.Array | None]:
        """(TAB lines, JSON lines or None) of the block's rows; -inf slots are left out."""
        valid = np.isfinite(block.scores)
        offsets = textfile.offsets(valid.sum(axis=1))
        chosen = block.ids[valid]
        rows = slice(block.start, block.start + len(block.ids))
        lines = textfile.concat(self.query[rows], "\t",
                                textfile.join(offsets, self.candidates.take(chosen), ","), self.end)
        if self.query_json is None:
            return lines, None
        scores = textfile.json_floats(block.scores[valid])
        records = textfile.concat('{"id": ', self.query_json[rows], ', "ids": [',
                                  textfile.join(offsets, self.candidates_json.take(chosen), ", "),
                                  '], "scores": [', textfile.join(offsets, scores, ", "), "]}", self.end)
        return lines, records


def write_topk(blocks: Iterable[TopKBlock], query_vocab: Sequence[str],
               candidate_vocab: Sequence[str], lines_path: str, scores_path: str | None = None) -> int:
    """Writes the TAB lines (and optionally the JSONL with scores); returns the row count."""
    formatter = TopKFormatter(query_vocab, candidate_vocab, scores=scores_path is not None)
    count = 0
    progress = Progress(f"predict[{lines_path.rstrip('/').rsplit('/', 1)[-1]}]", len(query_vocab),
                        "rows")
    with textfile.create(lines_path) as lines_file, \
            (textfile.create(scores_path) if scores_path else contextlib.nullcontext()) as scores_file:
        for block in blocks:
            lines, records = formatter.lines(block)
            lines_file.write(textfile.data(lines))
            if scores_file:
                scores_file.write(textfile.data(records))
            count += len(lines)
            progress.update(block.start + len(block.ids))
    return count


def write_factors_csv(path: str, vocab: Sequence[str], factors: np.ndarray) -> int:
    """id,f0,f1,... keyed by original id, for joining with content features. Ids are quoted only
    where the csv module would quote them (a quote inside); numbers in their shortest form that
    reads back as the same float32 (as pyarrow's CSV writer writes them)."""
    header = ",".join(["id"] + [f"f{i}" for i in range(factors.shape[1])]) + "\n"
    return textfile.write_factor_rows(path, textfile.csv_fields(vocab), factors, ",",
                                      head=header.encode("utf-8"))


def popularity_order(counts: np.ndarray) -> np.ndarray:
    """Ids by count descending, lower id first on equal counts (same rule as tf.math.top_k)."""
    return np.lexsort((np.arange(len(counts)), -counts))


def write_popular(path: str, vocab: Sequence[str], counts: np.ndarray) -> int:
    order = popularity_order(counts)
    lines = textfile.concat(textfile.strings(vocab).take(order), "\t",
                            textfile.numbers(np.asarray(counts)[order].astype(np.int64)), "\n")
    return textfile.write(path, [lines])


def log_written(name: str, count: int, seconds: float) -> None:
    log.info("%s: %d rows in %.2fs", name, count, seconds)
