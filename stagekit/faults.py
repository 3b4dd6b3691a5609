"""Crash points for the fault tests: the process kills itself (SIGKILL, no cleanup, exactly like
`kill -9`) where a test asks it to, so every stage boundary and every step of a publish can be
tested deterministically.

    GA_WALS_KILL_AT=publish:copy@3 python -m pipeline.run ...   # die at the 3rd object copied

Unset (always, outside the tests) `point` is one dictionary lookup.
"""
import os
import signal

ENV = "GA_WALS_KILL_AT"
_hits: dict[str, int] = {}


def point(name: str) -> None:
    """Kills this process when GA_WALS_KILL_AT names this point (NAME, or NAME@N for its Nth hit)."""
    wanted = os.environ.get(ENV)
    if not wanted or not wanted.startswith(name):
        return
    target, _, nth = wanted.partition("@")
    if target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
