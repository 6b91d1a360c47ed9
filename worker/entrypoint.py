"""Placeholder worker process: announces itself, then blocks until stopped.

A warm container must cost no CPU while idle, so it waits on signals instead of polling.
The in-container runner (receive bundle, run engine, write result.json) replaces this.
"""

import signal
import sys


def _stop(signum: int, _frame: object) -> None:
    # As PID 1 the kernel ignores SIGTERM unless we handle it; exit so `docker stop` is quick.
    sys.exit(128 + signum)


def main() -> None:
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print("parpaing worker: idle, waiting for a job (runner not installed yet)", flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
