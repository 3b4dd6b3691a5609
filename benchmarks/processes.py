"""Timing a fresh Python process, launch to exit, with its peak memory (no heavy imports here:
the benchmarks' peer processes import this module too)."""
import os
import subprocess
import sys
import tempfile
import time


def timed_process(command: list[str]) -> tuple[float, float, str]:
    """Runs a fresh Python process; (wall seconds from launch to exit, its peak RSS in MB, stdout).
    Every side is timed this way, so interpreter start-up and imports count on all.

    The peak RSS comes from /usr/bin/time, which forks the command itself: Linux folds the RSS a
    process had when it was forked into its child's ru_maxrss, so wait4 on a child of this (big)
    process would report at least this process's own size."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, \
            tempfile.NamedTemporaryFile("r") as peak:
        gnu_time = os.path.exists("/usr/bin/time")
        started = time.perf_counter()
        child = subprocess.Popen((["/usr/bin/time", "-f", "%M", "-o", peak.name] if gnu_time else [])
                                 + command, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        if child.returncode != 0:
            sys.stderr.write(err.read()[-5000:])
            raise SystemExit(f"{command[2]} failed with exit code {child.returncode}")
        peak_kb = int(peak.read().split()[-1]) if gnu_time else usage.ru_maxrss
        return seconds, peak_kb / 1024, out.read()
