"""One run at a time per output folder: a lease on `OUTPUT/.lock`.

Its content names the holder: {"run_id", "host", "pid", "started", "expires"}.

* Local disk: an exclusive `flock` on the file, held for the whole run. The kernel drops it when
  the holder's process ends, however it ends (`kill -9` included), so a dead run's lease is never
  in the way and a live one is never taken. The lease file is removed when the run finishes.
* Cloud Storage (`gs://`): the object is created only if absent (`if_generation_match=0`), so of
  two runs started together exactly one gets it. A lease is stale when its holder's process is
  gone (same host) or, for holders on other machines, when it has expired (`LEASE_HOURS`); the
  next run breaks it with a delete conditioned on the generation it read, so two runs breaking
  the same stale lease cannot both win.

`--break_lock` takes a lease whatever its state. While holding the lease a run may delete the
scratch folders of dead runs (`scratch_is_dead`).
"""
from __future__ import annotations

import datetime
import fcntl
import json
import logging
import os
import socket

from stagekit.artifacts import join
from stagekit.publish import REFUSED

LOG = logging.getLogger(__name__)
LOCK_NAME = ".lock"
OWNER = "_owner.json"  # in a scratch folder: the run that writes it
LEASE_HOURS = 24.0


class LockError(RuntimeError):
    """Another run holds the output folder; the message names it and what to do."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def holder_record(run_id: str, **extra) -> dict:
    started = _now()
    return {"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(),
            "started": started.isoformat(timespec="seconds"),
            "expires": (started + datetime.timedelta(hours=LEASE_HOURS)).isoformat(timespec="seconds"),
            **extra}


def _process_gone(holder: dict) -> bool:
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    return False


def stale_reason(holder: dict) -> str | None:
    """Why a lease (or a scratch folder's owner) is dead, or None while it may be alive."""
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        return f"its process {holder['pid']} on this host is gone" if _process_gone(holder) else None
    try:
        if datetime.datetime.fromisoformat(holder["expires"]) < _now():
            return f"it expired at {holder['expires']}"
    except (KeyError, TypeError, ValueError):
        return "it is unreadable"
    return None


def _locked_message(output_dir: str, holder: dict) -> str:
    return (f"{output_dir} is being written by another run (run {holder.get('run_id')}, pid "
            f"{holder.get('pid')} on {holder.get('host')}, since {holder.get('started')}); wait for "
            "it to finish, or if it died on another machine pass --break_lock")


class LocalLease:
    """flock on OUTPUT/.lock, released (and the file removed) by `release` or by process death."""

    def __init__(self, path: str, run_id: str, break_lock: bool):
        self.path, self.run_id = path, run_id
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        for _ in range(5):
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_json_fd(fd)
                os.close(fd)
                if not break_lock:
                    raise LockError(_locked_message(os.path.dirname(path), holder)) from None
                LOG.warning("--break_lock: taking the lock of run %s", holder.get("run_id"))
                os.unlink(path)  # the holder keeps a lock on a file nobody else will open
                continue
            try:  # the file we locked must still be the one at `path` (not unlinked meanwhile)
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            previous = _read_json_fd(fd)
            if previous.get("run_id"):
                LOG.warning("the previous run %s into %s died without releasing its lock",
                            previous["run_id"], os.path.dirname(path))
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder_record(run_id)).encode(), 0)
            self.fd = fd
            return
        raise LockError(f"could not lock {os.path.dirname(path)}: other runs keep taking it")

    def release(self) -> None:
        try:
            os.unlink(self.path)  # first, while still locked: a waiting opener then retries
        except FileNotFoundError:
            pass
        os.close(self.fd)


def _read_json_fd(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 1 << 16, 0) or b"{}")
    except ValueError:
        return {}


class GcsLockStore:
    """The three object operations the Cloud Storage lease needs, each one atomic there."""

    @staticmethod
    def _blob(path: str):
        from google.cloud import storage

        bucket, _, name = path[len("gs://"):].partition("/")
        return storage.Client().bucket(bucket).blob(name)

    def create_exclusive(self, path: str, data: bytes) -> bool:
        from google.api_core.exceptions import PreconditionFailed

        try:
            self._blob(path).upload_from_string(data, if_generation_match=0)
            return True
        except PreconditionFailed:
            return False

    def read(self, path: str) -> tuple[bytes | None, int | None]:
        from google.api_core.exceptions import NotFound

        blob = self._blob(path)
        try:
            blob.reload()
            return blob.download_as_bytes(if_generation_match=blob.generation), blob.generation
        except NotFound:
            return None, None

    def delete_if(self, path: str, generation: int) -> bool:
        from google.api_core.exceptions import NotFound, PreconditionFailed

        try:
            self._blob(path).delete(if_generation_match=generation)
            return True
        except (NotFound, PreconditionFailed):
            return False


class GcsLease:
    def __init__(self, path: str, run_id: str, break_lock: bool, store):
        self.path, self.run_id, self.store = path, run_id, store
        mine = json.dumps(holder_record(run_id)).encode()
        for _ in range(5):
            if store.create_exclusive(path, mine):
                return
            raw, generation = store.read(path)
            if raw is None:
                continue  # released meanwhile
            try:
                holder = json.loads(raw)
            except ValueError:
                holder = {}
            if holder.get("run_id") == run_id:
                return  # our own create, retried by the client after it had succeeded
            reason = "--break_lock was given" if break_lock else stale_reason(holder)
            if reason is None:
                raise LockError(_locked_message(path.rsplit("/", 1)[0], holder))
            if store.delete_if(path, generation):
                LOG.warning("broke the lock of run %s: %s", holder.get("run_id"), reason)
        raise LockError(f"could not lock {path.rsplit('/', 1)[0]}: other runs keep taking it")

    def release(self) -> None:
        raw, generation = self.store.read(self.path)
        if raw is not None and json.loads(raw).get("run_id") == self.run_id:
            self.store.delete_if(self.path, generation)


def acquire(output_dir: str, run_id: str, *, break_lock: bool = False, store=None):
    """Takes the output folder's lease or raises LockError naming the run that holds it."""
    path = join(output_dir, LOCK_NAME)
    if output_dir.startswith("gs://") or store is not None:
        return GcsLease(path, run_id, break_lock, store or GcsLockStore())
    return LocalLease(path, run_id, break_lock)


def mark_scratch(folder: str, run_id: str, *, launched: bool = False) -> None:
    """Records in a scratch folder which run writes it (for `scratch_is_dead`). `launched`: a
    template launch, whose launcher process ends before its job runs."""
    import tensorflow as tf

    tf.io.gfile.makedirs(folder)
    with tf.io.gfile.GFile(join(folder, OWNER), "w") as f:
        json.dump(holder_record(run_id, launched=launched), f)


def scratch_is_dead(folder: str) -> bool:
    """A scratch folder no live run can be writing: refused, or its writer's process is gone, or
    (a template launch's job, or a writer on another machine) older than LEASE_HOURS."""
    import tensorflow as tf

    if tf.io.gfile.exists(join(folder, REFUSED)):
        return True
    try:
        with tf.io.gfile.GFile(join(folder, OWNER)) as f:
            owner = json.load(f)
    except (tf.errors.NotFoundError, ValueError):
        return True  # written by a version without owners, or unreadable: nobody claims it
    if owner.get("launched"):  # its job runs on Dataflow, whatever became of the launcher
        owner = {**owner, "host": None}
    return stale_reason(owner) is not None
