"""Publishing a finished stage folder: one protocol for local runs, Dataflow jobs and template launches.

A stage writes its whole output into a scratch folder (`staged`), then calls `publish` as the
last step of its own work: the final DoFn of its Beam pipeline, so the publish happens on the
workers after every shard is written, whether or not the launching process is still alive (a
Flex Template launcher is not: `run()` returns before the job runs).

Each published folder has a *marker*: the one file whose presence says "this folder is complete"
(`preproc/metadata.json`, `predictions/manifest.json`). It carries the run id and is written last.

    1. (object stores) the marker of the old output goes first: from here readers see an
       incomplete folder (every stage checks the marker), never a mix of two runs;
    2. local disk: `staged` and the old folder are swapped in one atomic step (Linux
       renameat2 RENAME_EXCHANGE; where that is missing, two renames after removing the old
       marker), then the old one deleted, so the folder is always entirely old or entirely new;
       object stores (gs://): there is no rename, a folder "rename" is an object-by-object copy,
       so every old object the new output does not have is deleted and every staged object but
       the marker copied over (replacing the old object of the same name);
    3. the marker is copied last, then `staged` deleted.

Nothing of the old output is touched before step 1, so a run that fails or is refused before
publishing leaves the previous output as it was. A crash inside steps 1-3 (on GCS) leaves a
folder without a marker, which every stage refuses; running `publish` again (a Dataflow retry of
the finishing bundle) completes it, because `staged` is deleted only after the marker is in place.
"""
from __future__ import annotations

import ctypes
import json
import logging
import os
import posixpath

from stagekit import faults

LOG = logging.getLogger(__name__)
REFUSED = "refused.json"  # in a run's scratch folder: why its finishing step refused to publish


class GFileStore:
    """The filesystem operations publishing needs, through tf.io.gfile (local and gs:// alike)."""

    def __init__(self):
        import tensorflow as tf  # the workers have it; imported here so this module stays light
        self._gfile = tf.io.gfile

    @staticmethod
    def has_atomic_rename(path: str) -> bool:
        return "://" not in path  # local disk; gs:// and other object stores copy object by object

    def exists(self, path: str) -> bool:
        return self._gfile.exists(path)

    def files(self, folder: str) -> list[str]:
        """Paths of every file under folder, relative to it, sorted ('a/b' for nested ones)."""
        if not self._gfile.isdir(folder):
            return []
        out = []
        for root, _, names in self._gfile.walk(folder):
            rel = posixpath.relpath(root.rstrip("/"), folder.rstrip("/"))
            out += [name if rel == "." else posixpath.join(rel, name) for name in names]
        return sorted(out)

    def read(self, path: str) -> bytes:
        with self._gfile.GFile(path, "rb") as f:
            return f.read()

    def write(self, path: str, data: bytes) -> None:
        self._gfile.makedirs(posixpath.dirname(path))
        with self._gfile.GFile(path, "wb") as f:
            f.write(data)

    def copy(self, src: str, dst: str) -> None:
        self._gfile.makedirs(posixpath.dirname(dst))
        self._gfile.copy(src, dst, overwrite=True)

    def delete(self, path: str) -> None:
        self._gfile.remove(path)

    def delete_tree(self, folder: str) -> None:
        if self._gfile.exists(folder):
            self._gfile.rmtree(folder)

    def rename_dir(self, src: str, dst: str) -> None:
        self._gfile.rename(src, dst, overwrite=False)

    @staticmethod
    def exchange_dirs(a: str, b: str) -> bool:
        """Swaps two local directories in one atomic step (Linux renameat2 RENAME_EXCHANGE);
        False where the OS or filesystem cannot, and the caller falls back to two renames."""
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            renameat2 = libc.renameat2
        except (OSError, AttributeError):
            return False
        at_fdcwd, rename_exchange = -100, 2
        return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _join(folder: str, name: str) -> str:
    return folder.rstrip("/") + "/" + name


def marker_run_id(final: str, marker: str, store=None) -> str | None:
    """The run id in final/marker, or None when the folder is not a complete published output."""
    store = store or GFileStore()
    path = _join(final, marker)
    if not store.exists(path):
        return None
    try:
        return json.loads(store.read(path)).get("run_id")
    except (ValueError, AttributeError):
        return None


def publish(staged: str, final: str, marker: str, run_id: str, store=None,
            keep: tuple[str, ...] = ()) -> None:
    """Makes `final` hold exactly the files of `staged` (see the module docstring); idempotent.

    `staged/marker` must exist and hold {"run_id": run_id, ...}. Files of `final` under the
    `keep` prefixes (e.g. "export/": the SavedModel versions being served) are kept and never
    absent: locally they are copied into `staged` before the swap, on GCS never deleted.
    """
    store = store or GFileStore()
    staged_marker, final_marker = _join(staged, marker), _join(final, marker)
    aside = final.rstrip("/") + f".replaced-{run_id[:12]}"  # local only: the old folder, renamed
    if marker_run_id(final, marker, store) == run_id:  # published by an earlier attempt
        store.delete_tree(staged)  # what is left of it, if that attempt died cleaning up
        store.delete_tree(aside)
        return
    if not store.exists(staged):
        raise FileNotFoundError(f"nothing to publish: {staged} does not exist")
    if json.loads(store.read(staged_marker)).get("run_id") != run_id:
        raise ValueError(f"{staged_marker} belongs to another run than {run_id}")
    names = store.files(staged)
    kept = [name for name in store.files(final) if name.startswith(keep) and name not in names
            and "/.tmp-" not in name] if keep else []  # not the half-written leftovers of a kill
    if store.has_atomic_rename(final):
        for name in kept:  # still served from `final` until the swap, then from the new folder
            store.copy(_join(final, name), _join(staged, name))
        if not store.exists(final):
            store.rename_dir(staged, final)  # marker included: complete the moment it appears
            store.delete_tree(aside)  # left by a fallback swap that died between its renames
            return
        faults.point("publish:swapping")
        if store.exchange_dirs(staged, final):  # one atomic step: old or new, never neither
            faults.point("publish:swapped")
            store.delete_tree(staged)  # now the old output
            return
        LOG.warning("no atomic directory exchange here (%s): replacing %s with two renames, so "
                    "for a moment it does not exist", os.strerror(ctypes.get_errno()) or "?", final)
        if store.exists(final_marker):
            store.delete(final_marker)
        store.delete_tree(aside)
        store.rename_dir(final, aside)
        store.rename_dir(staged, final)
        store.delete_tree(aside)
        return
    if store.exists(final_marker):
        store.delete(final_marker)  # step 1: the old output stops looking complete
    faults.point("publish:unmarked")
    for name in store.files(final):
        if (name not in names or name == marker) and name not in kept:
            store.delete(_join(final, name))
    for name in names:
        if name != marker:
            store.copy(_join(staged, name), _join(final, name))
            faults.point("publish:copy")
    store.copy(staged_marker, final_marker)  # step 3: complete from here on
    store.delete_tree(staged)


def remove_tree(folder: str, store=None) -> None:
    """Deletes a scratch folder if it is there (a finishing step may run again after doing so)."""
    (store or GFileStore()).delete_tree(folder)


def write_marker(folder: str, marker: str, payload: dict, store=None) -> None:
    """Writes the marker (strict JSON) into a staged folder, the last file before `publish`."""
    store = store or GFileStore()
    store.write(_join(folder, marker),
                json.dumps(payload, indent=2, sort_keys=True, allow_nan=False).encode())
