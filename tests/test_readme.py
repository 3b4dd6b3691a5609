"""The README's examples marked `<!-- runnable offline -->` run as written: from the repository
root and from another folder, with the venv's commands on PATH (what `source .venv/bin/activate`
gives; a sub-shell here cannot keep an activation)."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCKS = re.findall(r"<!-- runnable offline -->\n```bash\n(.*?)```",
                    open(os.path.join(ROOT, "README.md"), encoding="utf-8").read(), re.S)


def test_the_readme_has_runnable_examples():
    assert BLOCKS


@pytest.mark.parametrize("where", ["repository", "elsewhere"])
@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{n}" for n in range(len(BLOCKS))])
def test_readme_block_runs_as_written(block, where, tmp_path):
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
               VIRTUAL_ENV=os.path.dirname(os.path.dirname(sys.executable)),
               TMPDIR=str(tmp_path))  # the blocks' mktemp folders go with the test's
    env.pop("PYTHONPATH", None)  # the installed project, not this checkout's path, must be found
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block], env=env, text=True,
                          capture_output=True, timeout=600,
                          cwd=ROOT if where == "repository" else tmp_path)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    assert done.stdout.strip()  # the example shows something
