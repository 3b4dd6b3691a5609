"""One run per output folder (stagekit/lock.py): a flock on local disk, released by the kernel
when its holder dies however it dies; on Cloud Storage (a fake with its semantics: create only
if absent, delete only at the generation read) a lease that is broken only when stale, by one
breaker at a time."""
import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from stagekit import lock
from pipeline import run as driver

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FakeGcsLockStore:
    """Cloud Storage's semantics for one object: generations, if_generation_match=0 creates,
    deletes conditioned on a generation."""

    def __init__(self):
        self.objects, self.generation = {}, 0

    def create_exclusive(self, path, data):
        if path in self.objects:
            return False  # 412 Precondition Failed
        self.generation += 1
        self.objects[path] = (data, self.generation)
        return True

    def read(self, path):
        return self.objects.get(path, (None, None))

    def delete_if(self, path, generation):
        if self.objects.get(path, (None, None))[1] != generation:
            return False
        del self.objects[path]
        return True


GCS = "gs://my-bucket/ga-wals/run1"


def _holder(store, **fields):
    now = datetime.datetime.now(datetime.timezone.utc)
    payload = {"run_id": "other", "host": "another-machine", "pid": 1, "started": now.isoformat(),
               "expires": (now + datetime.timedelta(hours=1)).isoformat(), **fields}
    assert store.create_exclusive(f"{GCS}/.lock", json.dumps(payload).encode())


def test_gcs_one_lease_at_a_time_and_release_frees_it():
    store = FakeGcsLockStore()
    first = lock.acquire(GCS, "run-a", store=store)
    with pytest.raises(lock.LockError, match=r"being written by another run \(run run-a, pid"):
        lock.acquire(GCS, "run-b", store=store)
    assert lock.acquire(GCS, "run-a", store=store)  # our own create, retried after it succeeded
    first.release()
    lock.acquire(GCS, "run-b", store=store).release()
    assert store.objects == {}


def test_gcs_stale_leases_are_broken_live_ones_refused(caplog):
    store = FakeGcsLockStore()
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=1)
    _holder(store, expires=past.isoformat())  # another machine, expired
    lock.acquire(GCS, "mine", store=store).release()
    assert "it expired" in caplog.text
    _holder(store)  # another machine, not expired: may be alive
    with pytest.raises(lock.LockError, match="--break_lock"):
        lock.acquire(GCS, "mine", store=store)
    lock.acquire(GCS, "mine", store=store, break_lock=True).release()
    sleeper = subprocess.Popen(["sleep", "30"])
    try:  # this host, process alive: held even after its expiry time
        _holder(store, host=socket.gethostname(), pid=sleeper.pid, expires=past.isoformat())
        with pytest.raises(lock.LockError):
            lock.acquire(GCS, "mine", store=store)
    finally:
        sleeper.kill()
        sleeper.wait()
    lock.acquire(GCS, "mine", store=store).release()  # its process is gone now


def test_gcs_two_runs_breaking_one_stale_lease_cannot_both_win():
    store = FakeGcsLockStore()
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=1)
    _holder(store, expires=past.isoformat())
    stale, generation = store.read(f"{GCS}/.lock")
    winner = lock.acquire(GCS, "a", store=store)  # broke it and took it
    # b read the stale lease before a broke it: its conditional delete must not remove a's
    assert store.delete_if(f"{GCS}/.lock", generation) is False
    with pytest.raises(lock.LockError, match="run a"):
        lock.acquire(GCS, "b", store=store)
    winner.release()


HOLD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from stagekit import lock
    lease = lock.acquire(sys.argv[1], "holder-run")
    print("held", flush=True)
    time.sleep(60)
""")


def _holding_process(output_dir):
    process = subprocess.Popen([sys.executable, "-c", HOLD.format(root=ROOT), str(output_dir)],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_local_lock_is_held_by_a_live_run_and_freed_by_its_death_even_kill_9(tmp_path, caplog):
    out = tmp_path / "out"
    holder = _holding_process(out)
    try:
        with pytest.raises(lock.LockError, match=r"another run \(run holder-run, pid \d+ on"):
            lock.acquire(str(out), "mine")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lease = lock.acquire(str(out), "mine")  # the kernel dropped the dead holder's flock
    assert "died without releasing its lock" in caplog.text
    with pytest.raises(lock.LockError, match="run mine"):
        lock.acquire(str(out), "again")  # also within one process: one lease at a time
    lease.release()
    assert not (out / ".lock").exists()
    lock.acquire(str(out), "next").release()


def test_the_driver_refuses_a_locked_output_before_any_work(tmp_path, caplog):
    out = tmp_path / "out"
    holder = _holding_process(out)
    try:
        (out / "_tmp_preprocess_running").mkdir()  # the live run's scratch: must survive
        assert driver.main(["--output_dir", str(out), "--stages", "preprocess"]) == 1
    finally:
        holder.kill()
        holder.wait()
    assert "is being written by another run" in caplog.text
    assert sorted(p.name for p in out.iterdir()) == [".lock", "_tmp_preprocess_running"]


def test_a_locked_run_cleans_only_dead_scratch_and_restores_an_output_left_aside(tmp_path):
    out = tmp_path / "out"
    dead, refused, launched, alive = (out / f"_tmp_preprocess_{n}" for n in ("dead", "refused", "job", "alive"))
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        lock.mark_scratch(str(dead), "r1")
        json.dump({**json.load(open(dead / lock.OWNER)), "pid": 2 ** 22 + 7}, open(dead / lock.OWNER, "w"))
        lock.mark_scratch(str(refused), "r2")
        (refused / "refused.json").write_text("{}")
        lock.mark_scratch(str(launched), "r3", launched=True)  # a Dataflow job may still run
        lock.mark_scratch(str(alive), "r4")
        json.dump({**json.load(open(alive / lock.OWNER)), "pid": sleeper.pid}, open(alive / lock.OWNER, "w"))
        (out / "_tmp_predict_notes.txt").write_text("a file, not a scratch folder")
        (out / "_tmp_train_model_0123456789ab").mkdir()  # the trainer's to resume
        (out / "model.replaced-abc").mkdir()  # a publish died between its renames: model/ is gone
        (out / "model.replaced-abc" / "model.json").write_text("{}")
        driver.remove_dead_scratch(str(out))
    finally:
        sleeper.kill()
        sleeper.wait()
    assert sorted(p.name for p in out.iterdir()) == [
        "_tmp_predict_notes.txt", "_tmp_preprocess_alive", "_tmp_preprocess_job",
        "_tmp_train_model_0123456789ab", "model"]
    assert (out / "model" / "model.json").exists()
