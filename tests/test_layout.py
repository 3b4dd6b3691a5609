"""The import rule (.importlinter; docs/ARCHITECTURE.md "Layout"): imports point down, no stage
imports another, no package has a cycle. Checked with import-linter on the repository, and on a
copy with one forbidden import added, so that the check is seen to fail."""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("stagekit", "factorization", "transforms", "pipeline", "trainer", "batch_predict",
            "benchmarks")


def lint_imports(root: str) -> subprocess.CompletedProcess:
    lint = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    return subprocess.run([lint, "--config", os.path.join(root, ".importlinter"), "--no-cache"],
                          cwd=root, env={**os.environ, "PYTHONPATH": root},
                          capture_output=True, text=True, timeout=120)


def test_the_repository_keeps_every_import_contract():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


def _copy(tmp_path) -> str:
    root = str(tmp_path / "repo")
    for name in PACKAGES:
        shutil.copytree(os.path.join(ROOT, name), os.path.join(root, name),
                        ignore=shutil.ignore_patterns("__pycache__", "data"))
    shutil.copy(os.path.join(ROOT, ".importlinter"), root)
    return root


def _append(root: str, module: str, line: str) -> None:
    with open(os.path.join(root, *module.split(".")) + ".py", "a") as f:
        f.write(f"\n{line}\n")


@pytest.mark.parametrize("module, line, broken", [
    # the core importing a stage
    ("stagekit.progress", "from trainer import task", ["Imports point down"]),
    # one stage importing another
    ("batch_predict.topk", "from trainer import training", ["Imports point down"]),
    ("pipeline.cooc.job", "from pipeline.preprocess import finish", ["Imports point down"]),
    # a cycle inside a stage's package
    ("trainer.flags", "from trainer import task", ["No import cycles"]),
    # product code importing a benchmark (which stands on the trainer: the layers break too)
    ("stagekit.faults", "from benchmarks import processes", ["Nothing imports the benchmarks"]),
    ("factorization.wals", "from benchmarks import models",
     ["Imports point down", "Nothing imports the benchmarks"]),
])
def test_a_forbidden_import_breaks_a_contract(tmp_path, module, line, broken):
    root = _copy(tmp_path)
    _append(root, module, line)
    result = lint_imports(root)
    assert result.returncode != 0
    verdicts = {line.rsplit(" ", 1)[0].split(":")[0]: line.rsplit(" ", 1)[1]
                for line in result.stdout.splitlines() if line.endswith((" KEPT", " BROKEN"))}
    assert [name for name, verdict in verdicts.items() if verdict == "BROKEN"] == \
        [name for name in verdicts if name.startswith(tuple(broken))], result.stdout
