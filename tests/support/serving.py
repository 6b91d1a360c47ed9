"""Waiting for a `parpaing serve` process started by a test to answer."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import httpx
import pytest


def wait_until_answering(
    process: subprocess.Popen[bytes], url: str, output: Callable[[], str], within: float
) -> None:
    """Return once `url` serves its OpenAPI document; fail the test, with what the process
    printed, if it exits or `within` seconds pass first."""
    # Bounded poll: there is no event to wait on for "the port accepts connections".
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"serve exited with {process.returncode}:\n{output()}")
        try:
            if httpx.get(url + "/openapi.json", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail(f"serve did not answer within {within}s:\n{output()}")
