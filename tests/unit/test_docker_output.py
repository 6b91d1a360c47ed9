"""Following a worker's stdout up to its done line: the line and the output frame never
reach the job's log, even split across pieces; text that only looks like them is passed
on; the last frame's payload is the worker's output."""

from __future__ import annotations

from tower.execution.docker.worker_stdout import WorkerStdout
from tower.execution.protocol import DONE_LINE, OUTPUT_MARK

DONE = DONE_LINE + b"\n"


def frame(payload: bytes) -> bytes:
    return OUTPUT_MARK + str(len(payload)).encode() + b"\n" + payload


def follow(pieces: list[bytes], max_frame: int = 1 << 20) -> tuple[bytes, bool, bytes | None]:
    """(what reached the log, whether the done line came, the frame's payload)."""
    out: list[bytes] = []
    stdout = WorkerStdout(lambda _stream, data: out.append(data), max_frame)
    done = False
    for piece in pieces:
        if stdout.feed(piece):
            done = True
            break
    if not done:
        stdout.flush()
    return b"".join(out), done, stdout.output


def one_byte_at_a_time(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def test_output_before_the_done_line_passes_and_the_line_does_not() -> None:
    assert follow([b"hello\n", DONE]) == (b"hello\n", True, None)
    assert follow([b"no newline" + DONE]) == (b"no newline", True, None)


def test_a_done_line_split_across_pieces_is_found() -> None:
    for cut in range(1, len(DONE_LINE)):
        pieces = [b"out\n" + DONE_LINE[:cut], DONE_LINE[cut:] + b"\n"]
        assert follow(pieces) == (b"out\n", True, None)


def test_a_lookalike_is_output() -> None:
    assert follow([b"parpaing-wor", b"k is fun\n"]) == (b"parpaing-work is fun\n", False, None)
    assert follow([b"ends with parp"]) == (b"ends with parp", False, None)
    lookalike = OUTPUT_MARK + b"lots\n"
    assert follow([lookalike, DONE]) == (lookalike, True, None)


def test_the_frame_is_kept_out_of_the_log_however_it_is_cut() -> None:
    payload = b"tar bytes, with a newline\n and " + DONE_LINE + b" inside"
    stream = b"last line, no newline" + frame(payload) + DONE
    expected = (b"last line, no newline", True, payload)
    assert follow([stream]) == expected
    assert follow(one_byte_at_a_time(stream)) == expected


def test_the_last_frame_wins() -> None:
    forged, real = frame(b"forged by the engine"), frame(b"the worker's")
    assert follow([b"a", forged, b"b", real, DONE]) == (b"ab", True, b"the worker's")


def test_a_frame_too_large_to_keep_is_read_past() -> None:
    assert follow([frame(b"x" * 100) + b"after" + DONE], max_frame=99) == (b"after", True, None)


def test_a_stream_that_ends_inside_a_frame_leaks_nothing() -> None:
    assert follow([b"out", frame(b"complete")[:-3]]) == (b"out", False, None)
