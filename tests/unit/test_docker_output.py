"""Following a worker's stdout up to its done line: the line never reaches the job's log,
even split across pieces, and text that only looks like its start is passed on."""

from __future__ import annotations

from tower.execution.docker.containers import DONE_LINE, _UntilDone


def follow(pieces: list[bytes]) -> tuple[bytes, bool]:
    out: list[bytes] = []
    stdout = _UntilDone(lambda _stream, data: out.append(data))
    done = False
    for piece in pieces:
        if stdout.feed(piece):
            done = True
            break
    if not done:
        stdout.flush()
    return b"".join(out), done


def test_output_before_the_done_line_passes_and_the_line_does_not() -> None:
    assert follow([b"hello\n", DONE_LINE + b"\n"]) == (b"hello\n", True)
    assert follow([b"no newline" + DONE_LINE + b"\n"]) == (b"no newline", True)


def test_a_done_line_split_across_pieces_is_found() -> None:
    for cut in range(1, len(DONE_LINE)):
        pieces = [b"out\n" + DONE_LINE[:cut], DONE_LINE[cut:] + b"\n"]
        assert follow(pieces) == (b"out\n", True)


def test_a_lookalike_is_output() -> None:
    assert follow([b"parpaing-wor", b"k is fun\n"]) == (b"parpaing-work is fun\n", False)
    assert follow([b"ends with parp"]) == (b"ends with parp", False)
