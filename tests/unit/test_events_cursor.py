"""The all-jobs stream's cursor: an id goes out only once nothing can commit below it."""

from __future__ import annotations

from tower.events.cursor import StateCursor


def test_with_nothing_running_everything_seen_goes_out() -> None:
    cursor = StateCursor(0)
    assert cursor.advance([], [1, 2, 5], full_page=False) == 5
    assert not cursor.waiting


def test_ids_seen_while_others_run_wait_for_those_to_end() -> None:
    cursor = StateCursor(0)
    assert cursor.advance([100], [2, 3], full_page=False) == 0
    assert cursor.waiting
    # 100 still runs (and a newer 101 started): nothing settles yet.
    assert cursor.advance([100, 101], [1, 2, 3, 4], full_page=False) == 0
    # 100 ended: what was seen while it ran (up to 3) is final; 4 waits for 101.
    assert cursor.advance([101], [1, 2, 3, 4], full_page=False) == 3
    assert cursor.waiting
    assert cursor.advance([102], [4], full_page=False) == 4


def test_a_full_page_goes_out_only_up_to_its_last_row() -> None:
    cursor = StateCursor(10)
    assert cursor.advance([], [11, 12], full_page=True) == 12
    assert cursor.after == 12


def test_the_cursor_never_moves_back() -> None:
    cursor = StateCursor(7)
    assert cursor.advance([1], [], full_page=False) == 7
    assert cursor.advance([], [], full_page=False) == 7
