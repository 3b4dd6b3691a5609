"""Benchmark: start-up cost of the stage processes (`--help`, a rejected flag) against the
interpreter's own.

`python -m benchmarks.startup [--rounds 5]` times fresh Python processes, launch to exit, from the
repository root: `python -m pipeline.run --help`, each stage's `--help`, `python -m pipeline.run`
with a flag value it rejects (exit 2: parsing plus every stage's value checks), and as references
`python -c pass` (the interpreter alone) and `python -c "import tensorflow"` (what every one of
them paid before). The commands alternate within each round, so a busy spell of a shared machine
hits them all alike; per command it prints the min (the least disturbed run: the figure to
compare) and the median of the rounds, and a line per target (< 1.5 s each). Then it runs every
stage command once more under `python -X importtime` (not timed: it slows imports down) and prints
which of TensorFlow, Beam and TF Transform it imported: none is the contract
(tests/test_startup.py checks it with the same commands).
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time

LOG = logging.getLogger("benchmarks.startup")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("tensorflow", "apache_beam", "tensorflow_transform")
TARGET_SECONDS = 1.5
REJECTED_FLAG = "pipeline.run --epochs 0"  # a value check, after parsing every stage's flags


def stage_commands(output_dir: str) -> dict[str, tuple[list[str], int]]:
    """{label: (python arguments, expected exit code)} of the stage processes that must start
    cheaply; the rejected flag's run is pointed at `output_dir` (it must write nothing there)."""
    commands = {f"{module} --help": (["-m", module, "--help"], 0)
                for module in ("pipeline.run", "pipeline.preprocess", "pipeline.cooc", "trainer.tune",
                               "trainer.task", "batch_predict.run", "batch_predict.fold_in")}
    commands[REJECTED_FLAG] = (["-m", "pipeline.run", "--epochs", "0", "--output_dir", output_dir], 2)
    return commands


REFERENCES = {"python -c pass": ["-c", "pass"],
              "python -c 'import tensorflow'": ["-c", "import tensorflow"]}


def imported_modules(importtime_stderr: str) -> set[str]:
    """Module names from `python -X importtime` output (one line per module, name last)."""
    return {line.rsplit("|", 1)[1].strip() for line in importtime_stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


def heavy_imports(arguments: list[str]) -> tuple[int, list[str], str]:
    """Runs `python -X importtime ARGUMENTS` from the repository root once; returns (exit code,
    the HEAVY packages it imported, its stderr without the import lines). A submodule's import
    lists its package too, so the top-level names suffice."""
    result = subprocess.run([sys.executable, "-X", "importtime", *arguments], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    modules = imported_modules(result.stderr)
    rest = "\n".join(line for line in result.stderr.splitlines() if not line.startswith("import time:"))
    return result.returncode, [name for name in HEAVY if name in modules], rest


def timed(arguments: list[str]) -> tuple[float, int]:
    """(wall seconds from launch to exit, exit code) of a fresh `python ARGUMENTS`."""
    started = time.perf_counter()
    code = subprocess.call([sys.executable, *arguments], cwd=ROOT, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    return time.perf_counter() - started, code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup",
                                     description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=5,
                        help="Alternating rounds; the min of each command is the figure.")
    parser.add_argument("--no_tensorflow_reference", action="store_true",
                        help="Skip timing `python -c 'import tensorflow'` (several seconds a round).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    scratch = tempfile.mkdtemp(prefix="bench_startup_")
    stages = stage_commands(os.path.join(scratch, "out"))
    references = {label: arguments for label, arguments in REFERENCES.items()
                  if not (args.no_tensorflow_reference and "tensorflow" in label)}
    commands = {**{label: arguments for label, (arguments, _) in stages.items()}, **references}
    expected = {label: code for label, (_, code) in stages.items()}

    seconds: dict[str, list[float]] = {label: [] for label in commands}
    for round_ in range(args.rounds):
        for label, arguments in commands.items():
            elapsed, code = timed(arguments)
            if code != expected.get(label, 0):
                raise SystemExit(f"{label}: exit code {code}, expected {expected.get(label, 0)}")
            seconds[label].append(elapsed)
        LOG.info("round %d/%d: %s", round_ + 1, args.rounds,
                 ", ".join(f"{label} {times[-1]:.2f} s" for label, times in seconds.items()))
    if os.path.exists(os.path.join(scratch, "out")):
        raise SystemExit(f"{REJECTED_FLAG} wrote {scratch}/out: a rejected flag must write nothing")

    width = max(map(len, commands))
    print(f"\n{'command':<{width}}  {'min s':>6}  {'median s':>8}   (fresh processes, "
          f"{args.rounds} rounds)")
    for label, times in seconds.items():
        print(f"{label:<{width}}  {min(times):6.2f}  {statistics.median(times):8.2f}")
    print()
    met = True
    for label in stages:
        best = min(seconds[label])
        met &= best < TARGET_SECONDS
        print(f"{label}: {best:.2f} s (min of {args.rounds}), target < {TARGET_SECONDS} s — "
              f"{'met' if best < TARGET_SECONDS else 'NOT met'}")
    print()
    clean = True
    for label, (arguments, _) in stages.items():
        _, heavy, _ = heavy_imports(arguments)
        clean &= not heavy
        print(f"{label} imports: {', '.join(heavy) if heavy else 'none of ' + ', '.join(HEAVY)}")
    return 0 if met and clean else 1


if __name__ == "__main__":
    sys.exit(main())
