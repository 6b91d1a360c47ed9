"""`parpaing` as a real process against a tower, the way an operator runs it."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass

DEADLINE = 120.0


@dataclass(frozen=True)
class Ran:
    code: int
    stdout: str
    stderr: str


async def parpaing(url: str, *args: str, api_key: str, stdin: bytes = b"") -> Ran:
    env = {**os.environ, "TOWER_URL": url, "TOWER_API_KEY": api_key}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tower.cli",
        *args,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(stdin), DEADLINE)
    assert process.returncode is not None
    return Ran(process.returncode, stdout.decode(), stderr.decode())
