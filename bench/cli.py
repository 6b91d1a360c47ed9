"""CLI start-up benchmark: wall time of `parpaing --help`, `parpaing submit --help` and a
client command, against the interpreter's own start-up measured in the same run.

A benchmark, not a test: it prints figures and the target, and never fails on them.
Run from the repository root:
    .venv/bin/python bench/cli.py [--runs 20]

Each command is a fresh process, as a user's shell starts it (the `parpaing` entry point
beside this interpreter). The client command is `parpaing jobs` against a closed loopback
port: it parses, loads the client, fails to connect at once and exits 1, so what is timed
is the CLI's start, not a tower. Baseline: `python -c pass` with the same interpreter.
For reference, the import of the server's code (what every command paid before the CLI
loaded it per command family). The commands take turns within each run, so a neighbour's
load lands on all of them; min and median of `--runs`. Target: under 0.3 s for `--help`
and client commands (tower/cli/lazy.py says how).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_SECONDS = 0.3


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def commands() -> dict[str, list[str]]:
    python = sys.executable
    entry = Path(python).with_name("parpaing")
    parpaing = [str(entry)] if entry.exists() else [python, "-m", "tower.cli"]
    nowhere = f"http://127.0.0.1:{closed_port()}"
    return {
        "python -c pass (baseline)": [python, "-c", "pass"],
        "parpaing --help": [*parpaing, "--help"],
        "parpaing submit --help": [*parpaing, "submit", "--help"],
        "parpaing jobs, no tower": [*parpaing, "jobs", "--url", nowhere],
        "import tower.cli.serve (reference)": [python, "-c", "import tower.cli.serve"],
    }


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    runs = parser.parse_args().runs
    table = commands()
    for argv in table.values():
        timed(argv)  # warm the page cache and the .pyc files once
    seconds: dict[str, list[float]] = {name: [] for name in table}
    for _ in range(runs):
        for name, argv in table.items():
            seconds[name].append(timed(argv))
    baseline = statistics.median(seconds["python -c pass (baseline)"])
    print(f"{'command':<36} {'min s':>7} {'median s':>9} {'x baseline':>11}  target")
    for name, values in seconds.items():
        median = statistics.median(values)
        ratio = median / baseline
        target = "" if name.endswith(")") else ("ok" if median < TARGET_SECONDS else "OVER")
        print(f"{name:<36} {min(values):>7.3f} {median:>9.3f} {ratio:>11.1f}  {target}")
    print(f"target: under {TARGET_SECONDS} s (median) for --help and client commands")


if __name__ == "__main__":
    main()
