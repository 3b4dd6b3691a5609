"""One run at a time per output folder: a lease file `OUTPUT/.lock`, created atomically.

    {"run_id", "host", "pid", "started", "expires"}

`acquire` creates it only if it does not exist: `O_CREAT | O_EXCL` on local disk, a
generation-matched upload (`if_generation_match=0`, "only if no object has this name") on Cloud
Storage, so of two runs started together exactly one gets it. The other stops with a message
naming the holder. A lease is stale, and is broken (with a warning) by the next run, when its
holder's process is gone (same host) or it has expired (`LEASE_HOURS` after it was taken, for
holders on other machines); `--break_lock` breaks any lease. While holding the lease, a run may
delete the scratch folders of dead runs: nobody else can be writing them.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import socket

from pipeline.artifacts import join

LOG = logging.getLogger(__name__)
LOCK_NAME = ".lock"
LEASE_HOURS = 24.0


class LockError(RuntimeError):
    """Another run holds the output folder; the message names it and what to do."""


class LockStore:
    """Exclusive create, read and delete of one small object, local or gs://."""

    def create_exclusive(self, path: str, data: bytes) -> bool:
        if path.startswith("gs://"):
            from google.api_core.exceptions import PreconditionFailed

            try:
                _gcs_blob(path).upload_from_string(data, if_generation_match=0)
                return True
            except PreconditionFailed:
                return False
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True

    def read(self, path: str) -> bytes | None:
        import tensorflow as tf

        try:
            with tf.io.gfile.GFile(path, "rb") as f:
                return f.read()
        except tf.errors.NotFoundError:
            return None

    def delete(self, path: str) -> None:
        import tensorflow as tf

        try:
            tf.io.gfile.remove(path)
        except tf.errors.NotFoundError:
            pass


def _gcs_blob(path: str):
    from google.cloud import storage

    bucket, _, name = path[len("gs://"):].partition("/")
    return storage.Client().bucket(bucket).blob(name)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _stale_reason(holder: dict) -> str | None:
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return f"its process {holder['pid']} on this host is gone"
        except PermissionError:
            pass  # alive, someone else's
    try:
        if datetime.datetime.fromisoformat(holder["expires"]) < _now():
            return f"it expired at {holder['expires']}"
    except (KeyError, TypeError, ValueError):
        return "it is unreadable"
    return None


class Lease:
    def __init__(self, path: str, run_id: str, store: LockStore):
        self.path, self.run_id, self.store = path, run_id, store

    def release(self) -> None:
        raw = self.store.read(self.path)
        if raw is not None and json.loads(raw).get("run_id") == self.run_id:
            self.store.delete(self.path)


def acquire(output_dir: str, run_id: str, *, break_lock: bool = False,
            store: LockStore | None = None) -> Lease:
    """Takes the output folder's lease or raises LockError naming the run that holds it."""
    store = store or LockStore()
    path = join(output_dir, LOCK_NAME)
    started = _now()
    mine = json.dumps({"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(),
                       "started": started.isoformat(timespec="seconds"),
                       "expires": (started + datetime.timedelta(hours=LEASE_HOURS)).isoformat(
                           timespec="seconds")}).encode()
    for _ in range(2):
        if store.create_exclusive(path, mine):
            return Lease(path, run_id, store)
        raw = store.read(path)
        try:
            holder = json.loads(raw) if raw is not None else {}
        except ValueError:
            holder = {}
        reason = "--break_lock was given" if break_lock else _stale_reason(holder)
        if raw is not None and reason is None:
            raise LockError(
                f"{output_dir} is being written by another run (run {holder.get('run_id')}, "
                f"pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('started')}); "
                f"wait for it to finish, or if it died elsewhere pass --break_lock (its lease "
                f"expires at {holder.get('expires')})")
        if raw is not None:
            LOG.warning("breaking the lock of run %s on %s: %s", holder.get("run_id"), output_dir,
                        reason)
            store.delete(path)
    raise LockError(f"could not lock {output_dir}: another run took it at the same moment")
