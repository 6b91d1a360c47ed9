"""Where the all-jobs stream may safely deliver up to, when ids commit out of order.

job_events.id comes from an identity, taken when a row is inserted; transactions commit
in another order. A reader that saw id 12 and moved on would miss id 11 if 11 commits
later. So the stream delivers an id only once no transaction that may still insert a
smaller one is running:

- Every statement that writes a job event first writes the job's row, so its
  transaction holds a transaction id before it takes an event id. Hence when a read
  sees ids up to N, any missing id below N belongs to a transaction that was running at
  the read's snapshot (in its `running` list), or will never appear (rolled back, or
  deleted by retention).
- Once all the transactions running at that snapshot have ended (none of them is in a
  later snapshot's `running` list), everything up to N is final: the cursor "settles" N.
  With nothing running at all, everything the read saw is final at once.

A transaction that runs long (anything holding a transaction id, not only ours) holds
back the stream, never a job's own stream (whose seq is ordered by the job's row lock).
"""

from __future__ import annotations

from collections.abc import Iterable


class StateCursor:
    def __init__(self, after: int) -> None:
        # Every event with an id <= after has been delivered, or never will exist.
        self.after = after
        # Every event with an id <= settled has committed, or never will.
        self._settled = after
        # (an id seen, the transactions running then): settles that id once they end.
        self._candidate: tuple[int, frozenset[int]] | None = None

    @property
    def waiting(self) -> bool:
        """Rows were seen that cannot be delivered until running transactions end."""
        return self._candidate is not None

    def advance(self, running: Iterable[int], ids: list[int], full_page: bool) -> int:
        """Take one read (its snapshot's running transactions, the ids it returned in
        order, whether it hit its limit); returns the id up to which its rows can go out."""
        now_running = frozenset(running)
        if self._candidate is not None and not self._candidate[1] & now_running:
            self._settled = max(self._settled, self._candidate[0])
            self._candidate = None
        newest = ids[-1] if ids else self._settled
        if not now_running:
            self._settled = max(self._settled, newest)
            self._candidate = None
        elif newest > self._settled and self._candidate is None:
            self._candidate = (newest, now_running)
        bound = min(self._settled, ids[-1]) if full_page and ids else self._settled
        self.after = max(self.after, bound)
        return self.after
