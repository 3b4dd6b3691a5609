"""Fixed costs paid once: a stage's --help and a rejected flag import no TensorFlow, Beam or TF
Transform (each takes seconds); the heavy parts are imported when a stage runs. Checked in fresh
processes under `python -X importtime`, with the commands benchmarks/startup.py times."""
import os
import subprocess
import sys

import pytest

from benchmarks.startup import ROOT, heavy_imports, stage_commands


@pytest.mark.parametrize("label", list(stage_commands("out")))
def test_stage_processes_start_without_heavy_imports(label, tmp_path):
    arguments, expected_code = stage_commands(str(tmp_path / "out"))[label]
    code, heavy, stderr = heavy_imports(arguments)
    assert code == expected_code, stderr[-2000:]
    assert heavy == [], f"{label} imported {heavy}"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags, message", [
    (["--regularization", "nan"], "expected a finite number"),  # argparse's type check
    (["--max_rejected_fraction", "2"], "--max_rejected_fraction must be in [0, 1]"),  # a stage's check
    (["--source", "interactions"], "--source interactions needs --input"),
    (["--stages", "train", "--n_embeds", "0"], "--n_embeds must be in [1, 8192]"),
])
def test_a_rejected_flag_exits_2_before_any_heavy_import(flags, message, tmp_path):
    code, heavy, stderr = heavy_imports(["-m", "pipeline.run", "--output_dir", str(tmp_path / "out"),
                                         *flags])
    assert code == 2 and message in stderr, stderr[-2000:]
    assert heavy == [] and not (tmp_path / "out").exists()


def test_ga_wals_command_runs_from_any_folder(tmp_path):
    """`make` installs the project editable: the `ga-wals` console script is pipeline.run, and
    it works outside the repository (no `No module named 'pipeline'`)."""
    command = os.path.join(os.path.dirname(sys.executable), "ga-wals")
    assert os.path.exists(command), "ga-wals not installed: run `make test` (pip install -e .)"
    done = subprocess.run([command, "--help"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "--output_dir" in done.stdout
    assert "(default: 128)" in done.stdout  # --help shows the defaults


def test_a_misspelt_flag_gets_a_suggestion(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pipeline.run", "--n_embed", "8",
                           "--output_dir", str(tmp_path / "out")], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "did you mean --n_embeds?" in done.stderr
    assert not (tmp_path / "out").exists()
