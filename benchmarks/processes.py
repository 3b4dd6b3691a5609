"""Timing a fresh Python process, launch to exit, with its peak memory (no heavy imports here:
the benchmarks' peer processes import this module too)."""
import os
import subprocess
import sys
import tempfile
import time


def timed_process(command: list[str]) -> tuple[float, float, str]:
    """Runs a fresh Python process; (wall seconds from launch to exit, its peak RSS in MB, stdout).
    Both sides are timed this way, so interpreter start-up and imports count on both."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        if child.returncode != 0:
            sys.stderr.write(err.read()[-5000:])
            raise SystemExit(f"{command[2]} failed with exit code {child.returncode}")
        return seconds, usage.ru_maxrss / 1024, out.read()
