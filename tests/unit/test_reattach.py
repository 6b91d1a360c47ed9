"""A replayed log lined up with what was passed on (execution/docker/reattach.py)."""

from __future__ import annotations

from tower.execution.docker.reattach import Counting, Skipping
from tower.execution.protocol import READY_LINE


def _collect() -> tuple[list[tuple[str, bytes]], Counting]:
    seen: list[tuple[str, bytes]] = []
    return seen, Counting(lambda stream, data: seen.append((stream, data)))


def test_the_ready_line_then_what_was_passed_on_are_skipped_per_stream() -> None:
    seen, counted = _collect()
    replay = Skipping(counted, {"stdout": 5, "stderr": 2})
    replay("stdout", READY_LINE[:6])
    replay("stdout", READY_LINE[6:] + b"\nline1\nline2\n")
    replay("stderr", b"e1e2")
    assert seen == [("stdout", b"\nline2\n"), ("stderr", b"e2")]
    assert counted.passed == {"stdout": 7, "stderr": 2}


def test_a_log_that_does_not_begin_with_the_ready_line_passes_nothing_on() -> None:
    seen, counted = _collect()
    replay = Skipping(counted, {})
    replay("stdout", b"rotated tail of an earlier output\n")
    replay("stderr", b"more\n")
    assert seen == []


def test_a_second_replay_skips_what_the_first_passed_on() -> None:
    seen, counted = _collect()
    Skipping(counted, {})("stdout", READY_LINE + b"\nabc")
    Skipping(counted, dict(counted.passed))("stdout", READY_LINE + b"\nabcdef")
    assert [data for _, data in seen] == [b"abc", b"def"]
