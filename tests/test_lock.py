"""One run per output folder: the lease in OUTPUT/.lock (pipeline/lock.py), on local disk and on a
store with Cloud Storage's only-if-absent create; stale leases are broken, live ones refused."""
import datetime
import json
import socket
import subprocess

import pytest

from pipeline import lock
from pipeline import run as driver


class FakeGcsLockStore(lock.LockStore):
    """Cloud Storage's semantics for the lease: an upload with if_generation_match=0 fails when
    the object exists; nothing else is atomic."""

    def __init__(self):
        self.objects = {}

    def create_exclusive(self, path, data):
        if path in self.objects:
            return False  # PreconditionFailed
        self.objects[path] = data
        return True

    def read(self, path):
        return self.objects.get(path)

    def delete(self, path):
        self.objects.pop(path, None)


@pytest.fixture(params=["local", "gcs"])
def where(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "out"), lock.LockStore()
    return "gs://my-bucket/ga-wals/run1", FakeGcsLockStore()


def _holder(store, output_dir, **fields):
    now = datetime.datetime.now(datetime.timezone.utc)
    payload = {"run_id": "other", "host": socket.gethostname(), "pid": 1,
               "started": now.isoformat(), "expires": (now + datetime.timedelta(hours=1)).isoformat()}
    payload.update(fields)
    assert store.create_exclusive(f"{output_dir}/.lock", json.dumps(payload).encode())


def test_one_lease_at_a_time_and_release_frees_it(where):
    output_dir, store = where
    first = lock.acquire(output_dir, "run-a", store=store)
    with pytest.raises(lock.LockError, match=r"being written by another run \(run run-a, pid"):
        lock.acquire(output_dir, "run-b", store=store)
    first.release()
    lock.acquire(output_dir, "run-b", store=store).release()


def test_a_live_holder_is_refused_a_dead_or_expired_one_is_broken(where, caplog):
    output_dir, store = where
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        _holder(store, output_dir, pid=sleeper.pid)
        with pytest.raises(lock.LockError, match="--break_lock"):
            lock.acquire(output_dir, "mine", store=store)
    finally:
        sleeper.kill()
        sleeper.wait()
    lock.acquire(output_dir, "mine", store=store).release()  # its process is gone now
    assert "process" in caplog.text and "is gone" in caplog.text
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=1)
    _holder(store, output_dir, host="another-machine", expires=past.isoformat())
    lock.acquire(output_dir, "mine", store=store).release()
    _holder(store, output_dir, host="another-machine")  # alive elsewhere, not expired
    with pytest.raises(lock.LockError):
        lock.acquire(output_dir, "mine", store=store)
    lock.acquire(output_dir, "mine", store=store, break_lock=True).release()


def test_release_never_frees_someone_elses_lease(where):
    output_dir, store = where
    lease = lock.acquire(output_dir, "old", store=store)
    store.delete(lease.path)  # broken by someone with --break_lock ...
    newer = lock.acquire(output_dir, "new", store=store)  # ... who took it
    lease.release()
    with pytest.raises(lock.LockError, match="run new"):
        lock.acquire(output_dir, "third", store=store)
    newer.release()


def test_the_driver_refuses_a_locked_output_before_any_work(tmp_path, caplog):
    out = tmp_path / "out"
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        _holder(lock.LockStore(), str(out), pid=sleeper.pid)
        (out / "_tmp_preprocess_running").mkdir()  # the live run's scratch: must survive
        assert driver.main(["--output_dir", str(out), "--stages", "preprocess"]) == 1
    finally:
        sleeper.kill()
        sleeper.wait()
    assert "is being written by another run" in caplog.text
    assert sorted(p.name for p in out.iterdir()) == [".lock", "_tmp_preprocess_running"]


def test_a_run_cleans_dead_runs_scratch_once_it_holds_the_lock(tmp_path):
    out = tmp_path / "out"
    for name in ("_tmp_preprocess_dead", "_tmp_predict_dead", "preproc.replaced-abc",
                 "_tmp_train_0123456789ab"):
        (out / name).mkdir(parents=True)
    _holder(lock.LockStore(), str(out), pid=2 ** 22 + 7)  # a dead process's lease
    assert driver.main(["--output_dir", str(out), "--stages", "preprocess", "--no_report"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["_tmp_train_0123456789ab", "preproc"]  # lease released, dead scratch gone
