"""Writing prediction artifacts: staged in a temporary folder, moved into place only when complete.

File formats (one record per line, ids are the original ids from the TFT vocabularies):
  batch_pred-*               visitorId<TAB>contentId1,contentId2,...   (best first)
  users_for_item-*           contentId<TAB>visitorId1,visitorId2,...
  similar_items-*            contentId<TAB>contentId1,...              (never the item itself)
  *_scores-*.jsonl           {"id": ..., "ids": [...], "scores": [...]}
  item/user_embeddings-*.json {"id": ..., "embedding": [...]}
  item/user_factors.csv      id,f0,f1,...
  popular_items.txt          contentId<TAB>number of users who have it, most popular first
  manifest.json              run id, files, rows: written last, the folder is complete when it is there
"""
from __future__ import annotations

import csv
import datetime
import io
import json
import logging
import posixpath
import uuid
from typing import Iterable, Iterator

import numpy as np
import tensorflow as tf

from batch_predict.artifacts import ArtifactError
from pipeline import lock, publish
from pipeline.artifacts import join
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
    """A scratch folder beside output_dir that becomes output_dir on commit (pipeline/publish.py).

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


def write_lines(path: str, lines: Iterable[str]) -> int:
    count = 0
    with tf.io.gfile.GFile(path, "w") as f:
        for line in lines:
            f.write(line + "\n")
            count += 1
    return count


def topk_line(query_id: str, candidate_ids: Iterable[str]) -> str:
    return f"{query_id}\t{','.join(candidate_ids)}"


def scores_line(query_id: str, candidate_ids: list[str], scores: np.ndarray) -> str:
    return json.dumps({"id": query_id, "ids": candidate_ids,
                       "scores": [float(s) for s in scores.tolist()]})


def topk_records(blocks: Iterable[TopKBlock], query_vocab: list[str],
                 candidate_vocab: list[str]) -> Iterator[tuple[str, list[str], np.ndarray]]:
    """(query original id, candidate original ids best first, scores) for every query row."""
    for block in blocks:
        for query, candidates, scores in block.rows():
            yield query_vocab[query], [candidate_vocab[c] for c in candidates.tolist()], scores


def write_topk(blocks: Iterable[TopKBlock], query_vocab: list[str], candidate_vocab: list[str],
               lines_path: str, scores_path: str | None = None) -> int:
    """Writes the TAB lines (and optionally the JSONL with scores); returns the row count."""
    scores_file = tf.io.gfile.GFile(scores_path, "w") if scores_path else None
    count = 0
    with tf.io.gfile.GFile(lines_path, "w") as lines_file:
        for query, candidates, scores in topk_records(blocks, query_vocab, candidate_vocab):
            lines_file.write(topk_line(query, candidates) + "\n")
            if scores_file:
                scores_file.write(scores_line(query, candidates, scores) + "\n")
            count += 1
    if scores_file:
        scores_file.close()
    return count


def _float_list(row: np.ndarray) -> str:
    # str() of a float32 is its shortest round-trip form, much shorter than float64's repr.
    return "[" + ",".join(str(x) for x in row.astype(np.float32)) + "]"


def write_embeddings(path: str, vocab: list[str], factors: np.ndarray) -> int:
    """ANN-ingestion shape: {"id": original id, "embedding": [...]} per line."""
    return write_lines(path, (f'{{"id": {json.dumps(vid)}, "embedding": {_float_list(row)}}}'
                              for vid, row in zip(vocab, factors)))


def write_factors_csv(path: str, vocab: list[str], factors: np.ndarray) -> int:
    """id,f0,f1,... keyed by original id, for joining with content features.

    pyarrow's CSV writer formats the columns in C++ (4x faster than the csv module at
    100k x 128); floats come out in their shortest form that reads back as the same float32.
    An id holding a quote character needs CSV quoting, which that writer (quoting "none", so
    that ids stay unquoted like every other export) cannot do: then the csv module writes it.
    """
    header = ",".join(["id"] + [f"f{i}" for i in range(factors.shape[1])]) + "\n"
    if any('"' in vid for vid in vocab):
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        for vid, row in zip(vocab, factors):
            writer.writerow([vid] + [str(x) for x in row.astype(np.float32)])
        body = buffer.getvalue().encode("utf-8")
    else:
        import pyarrow as pa
        import pyarrow.csv as pa_csv
        factors = np.asarray(factors, np.float32)
        table = pa.table({"id": pa.array(vocab, pa.string()),
                          **{f"f{i}": pa.array(factors[:, i]) for i in range(factors.shape[1])}})
        sink = pa.BufferOutputStream()
        pa_csv.write_csv(table, sink, pa_csv.WriteOptions(include_header=False,
                                                          quoting_style="none"))
        body = sink.getvalue().to_pybytes()
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(header.encode("utf-8") + body)
    return len(vocab)


def popularity_order(counts: np.ndarray) -> np.ndarray:
    """Ids by count descending, lower id first on equal counts (same rule as tf.math.top_k)."""
    return np.lexsort((np.arange(len(counts)), -counts))


def write_popular(path: str, vocab: list[str], counts: np.ndarray) -> int:
    order = popularity_order(counts)
    return write_lines(path, (f"{vocab[i]}\t{int(counts[i])}" for i in order.tolist()))


def log_written(name: str, count: int, seconds: float) -> None:
    log.info("%s: %d rows in %.2fs", name, count, seconds)
