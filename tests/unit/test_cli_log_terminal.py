"""`parpaing logs` shows an agent's output on a terminal, never its escape sequences."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest

from tower.cli import client as cli
from tower.cli.tower_client import TowerClient

HOSTILE = (
    "plain\ttext\n"
    "\x1b[2J\x1b[H"  # clear the screen, cursor home
    "\x1b]0;owned\x07"  # set the window title
    "\x1b]52;c;ZWNobyBoaQ==\x1b\\"  # write the clipboard
    "\x1b[31mred\x1b[0m\r\x08\x07\x00\x7f\x9b1m"
    "tail\n"
)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class FakeTower(TowerClient):
    def __init__(self, events: list[tuple[str, str, Any]]) -> None:
        super().__init__("http://tower.test")
        self._events = events

    def events(self, path: str, last_event_id: str = "") -> Iterator[tuple[str, str, Any]]:
        yield from self._events


def follow(monkeypatch: pytest.MonkeyPatch, stdout: io.StringIO, stderr: io.StringIO) -> None:
    monkeypatch.setattr("sys.stdout", stdout)
    monkeypatch.setattr("sys.stderr", stderr)
    tower = FakeTower(
        [
            ("1", "log", {"stream": "stdout", "text": HOSTILE}),
            ("2", "log", {"stream": "stderr", "text": "err\x1b[1Aup\n"}),
            ("3", "state", {"status": "completed"}),
        ]
    )
    assert cli.follow_log(tower, "/jobs/j/events") == ("completed", True)


def test_control_characters_are_stripped_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    stdout, stderr = Terminal(), Terminal()
    follow(monkeypatch, stdout, stderr)
    assert stdout.getvalue() == "plain\ttext\nredtail\n"
    assert stderr.getvalue() == "errup\n"


def test_output_is_copied_byte_for_byte_when_not_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Piped to a file or another program, the output is the agent's, unchanged.
    stdout, stderr = io.StringIO(), io.StringIO()
    follow(monkeypatch, stdout, stderr)
    assert stdout.getvalue() == HOSTILE
    assert stderr.getvalue() == "err\x1b[1Aup\n"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("keep\nnew\tlines\n", "keep\nnew\tlines\n"),
        ("\x1b[38;5;196mcolour\x1b[m", "colour"),
        ("half \x1b[", "half ["),  # a sequence cut by a chunk: its ESC goes, the rest is text
        ("bell\x07 and \x1b]8;;https://x\x1b\\link\x1b]8;;\x1b\\", "bell and link"),
        ("ünïcødé ✓", "ünïcødé ✓"),
    ],
)
def test_for_terminal(text: str, shown: str) -> None:
    assert cli.for_terminal(text) == shown
