"""The publish protocol (stagekit/publish.py) under a crash at every step, on local disk and on a
fake object store with Cloud Storage's semantics (no rename: a folder "rename" is an
object-by-object copy; listing shows every finished write).

After a crash at any point, a reader that trusts only folders with a marker sees the old output,
the new one, or an incomplete folder (which every stage refuses): never a mix. Publishing again
(a Dataflow retry of the finishing bundle) always ends with exactly the new output.
"""
import json

import pytest

from stagekit import publish

MARKER = "metadata.json"
OLD = {"preproc/a-00000": b"old a", "preproc/b-00000": b"old b",
       "preproc/transform_fn/saved_model.pb": b"old model",
       f"preproc/{MARKER}": json.dumps({"run_id": "old"}).encode()}
NEW = {"a-00000": b"new a", "c-00000": b"new c", "transform_fn/saved_model.pb": b"new model",
       "transform_fn/assets/vocab_users": b"u1\nu2\n", MARKER: json.dumps({"run_id": "new"}).encode()}


class Crash(Exception):
    pass


class FakeGcs:
    """Flat object names under gs://bucket/, no directories, no rename; fails after `budget` writes."""

    def __init__(self, objects: dict[str, bytes], budget: int | None = None):
        self.objects, self.budget, self.writes = dict(objects), budget, 0

    def _write_op(self):
        self.writes += 1
        if self.budget is not None and self.writes > self.budget:
            raise Crash(f"crash at write {self.writes}")

    @staticmethod
    def has_atomic_rename(path):
        return False

    def _key(self, path):
        assert path.startswith("gs://bucket/"), path
        return path[len("gs://bucket/"):]

    def exists(self, path):
        key = self._key(path).rstrip("/")
        return key in self.objects or any(k.startswith(key + "/") for k in self.objects)

    def files(self, folder):
        prefix = self._key(folder).rstrip("/") + "/"
        return sorted(k[len(prefix):] for k in self.objects if k.startswith(prefix))

    def read(self, path):
        return self.objects[self._key(path)]

    def write(self, path, data):
        self._write_op()
        self.objects[self._key(path)] = data

    def copy(self, src, dst):
        self._write_op()
        self.objects[self._key(dst)] = self.objects[self._key(src)]

    def delete(self, path):
        self._write_op()
        del self.objects[self._key(path)]

    def delete_tree(self, folder):
        for name in self.files(folder):
            self.delete(folder.rstrip("/") + "/" + name)

    def rename_dir(self, src, dst):
        raise AssertionError("Cloud Storage has no rename")


class CrashingLocalStore(publish.GFileStore):
    """The real local store, failing after `budget` mutating operations."""

    def __init__(self, budget, atomic_exchange=True):
        super().__init__()
        self.budget, self.ops, self.atomic_exchange = budget, 0, atomic_exchange

    def _op(self):
        self.ops += 1
        if self.budget is not None and self.ops > self.budget:
            raise Crash(f"crash at op {self.ops}")

    def write(self, path, data):
        self._op()
        super().write(path, data)

    def copy(self, src, dst):
        self._op()
        super().copy(src, dst)

    def delete(self, path):
        self._op()
        super().delete(path)

    def delete_tree(self, folder):
        self._op()
        super().delete_tree(folder)

    def rename_dir(self, src, dst):
        self._op()
        super().rename_dir(src, dst)

    def exchange_dirs(self, a, b):
        self._op()
        return self.atomic_exchange and super().exchange_dirs(a, b)


def _gcs_state(budget):
    objects = dict(OLD)
    objects.update({f"scratch/preproc/{name}": data for name, data in NEW.items()})
    return FakeGcs(objects, budget)


def _complete_view(store, final):
    """What a reader trusting the marker sees: {name: bytes} of a complete folder, or None."""
    if publish.marker_run_id(final, MARKER, store) is None:
        return None
    return {name: store.read(final + "/" + name) for name in store.files(final)}


OLD_VIEW = {k[len("preproc/"):]: v for k, v in OLD.items()}


def test_gcs_publish_is_never_half_old_half_new_and_a_retry_completes_it():
    total = _run_to_end(_gcs_state(None))
    assert total > len(NEW)  # the fake really copies object by object
    seen_incomplete = False
    for budget in range(total):
        store = _gcs_state(budget)
        with pytest.raises(Crash):
            publish.publish("gs://bucket/scratch/preproc", "gs://bucket/preproc", MARKER, "new", store)
        view = _complete_view(store, "gs://bucket/preproc")
        assert view in (None, OLD_VIEW, NEW), f"crash after {budget} writes: mixed output {view}"
        seen_incomplete |= view is None
        store.budget = None  # the retry
        publish.publish("gs://bucket/scratch/preproc", "gs://bucket/preproc", MARKER, "new", store)
        assert _complete_view(store, "gs://bucket/preproc") == NEW, budget
        assert not store.exists("gs://bucket/scratch/preproc")
    assert seen_incomplete  # on GCS the window exists; the marker is what makes it safe


def _run_to_end(store):
    publish.publish("gs://bucket/scratch/preproc", "gs://bucket/preproc", MARKER, "new", store)
    assert _complete_view(store, "gs://bucket/preproc") == NEW
    assert store.files("gs://bucket/scratch") == []
    # a second call (a retried bundle after success) changes nothing
    before = dict(store.objects)
    publish.publish("gs://bucket/scratch/preproc", "gs://bucket/preproc", MARKER, "new", store)
    assert store.objects == before
    return store.writes


def _local_state(tmp_path):
    for rel, data in OLD.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    for rel, data in NEW.items():
        path = tmp_path / "scratch" / "preproc" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return str(tmp_path / "scratch" / "preproc"), str(tmp_path / "preproc")


@pytest.mark.parametrize("atomic_exchange", [True, False])
def test_local_publish_is_entirely_old_or_entirely_new_at_every_crash_point(tmp_path, atomic_exchange):
    budget = 0
    while True:
        root = tmp_path / f"b{budget}"
        staged, final = _local_state(root)
        store = CrashingLocalStore(budget, atomic_exchange)
        try:
            publish.publish(staged, final, MARKER, "new", store)
            break
        except Crash:
            view = _complete_view(store, final)
            # with renameat2 the swap is one atomic step: always entirely old or entirely new;
            # without it (two renames) there is an unmarked moment, refused by every reader
            allowed = (OLD_VIEW, NEW) if atomic_exchange else (None, OLD_VIEW, NEW)
            assert view in allowed, f"crash after {budget} ops: {view}"
        store.budget = None
        publish.publish(staged, final, MARKER, "new", store)
        assert _complete_view(store, final) == NEW
        assert sorted(p.name for p in root.iterdir()) == ["preproc", "scratch"]  # nothing set aside
        budget += 1
    assert budget >= (2 if atomic_exchange else 5)
    assert _complete_view(store, final) == NEW


def test_publish_refuses_a_staged_folder_of_another_run(tmp_path):
    staged, final = _local_state(tmp_path)
    with pytest.raises(ValueError, match="another run"):
        publish.publish(staged, final, MARKER, "someone-else", publish.GFileStore())
    assert _complete_view(publish.GFileStore(), final) == OLD_VIEW
