"""The all-jobs stream's cursor: an id goes out only once every transaction older than
a marker taken after it was seen has ended."""

from __future__ import annotations

from tower.events.cursor import StateCursor


def test_seen_ids_wait_for_the_transactions_older_than_the_marker() -> None:
    cursor = StateCursor(0)
    assert cursor.advance(100, [2, 3], full_page=False) == 0
    assert cursor.needs_marker
    cursor.mark(105)
    assert cursor.waiting and not cursor.needs_marker
    # Transaction 104 (older than the marker) still runs: nothing settles.
    assert cursor.advance(104, [1, 2, 3, 4], full_page=False) == 0
    # Everything older than the marker ended: up to 3 (seen before it) goes out.
    assert cursor.advance(106, [1, 2, 3, 4], full_page=False) == 3
    assert cursor.needs_marker  # 4 was seen after the marker: it needs one of its own
    cursor.mark(110)
    assert cursor.advance(111, [4], full_page=False) == 4
    assert not cursor.waiting


def test_a_full_page_goes_out_only_up_to_its_last_row() -> None:
    cursor = StateCursor(10)
    cursor.advance(1, [11, 12, 13], full_page=False)
    cursor.mark(5)
    assert cursor.advance(6, [11, 12], full_page=True) == 12
    assert cursor.after == 12


def test_the_cursor_never_moves_back() -> None:
    cursor = StateCursor(7)
    assert cursor.advance(1, [], full_page=False) == 7
    assert not cursor.waiting
