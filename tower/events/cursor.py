"""Where the all-jobs stream may safely deliver up to, when ids commit out of order.

job_events.id comes from an identity, taken when a row is inserted; transactions commit
in another order. A reader that saw id 12 and moved on would miss id 11 if 11 commits
later. So the stream delivers an id only once no transaction that may still insert a
smaller one is running:

- Every statement that writes a job event first writes the job's row, so its
  transaction holds a transaction id (xid) before it takes an event id. Hence when a
  read sees ids up to N, any missing id below N belongs to a transaction that already
  had its xid when the read's snapshot was taken, or will never appear (rolled back,
  or deleted by retention).
- Right after such a read, the stream takes a "marker" xid of its own
  (pg_current_xact_id(): xids are handed out in order, so the marker is greater than
  every xid given out before the read). Once a later snapshot's oldest running xid is
  above the marker, every transaction that could hold an id below N has ended: N is
  "settled" and everything up to it can go out.
(The snapshot's list of running xids is not enough: it leaves out transactions whose
xid is newer than the newest finished one.)

A transaction that runs long (anything holding an xid, not only ours) holds back the
all-jobs stream, never a job's own stream (whose seq is ordered by the job's row lock).
"""

from __future__ import annotations


class StateCursor:
    def __init__(self, after: int) -> None:
        # Every event with an id <= after has been delivered, or never will exist.
        self.after = after
        # Every event with an id <= settled has committed, or never will.
        self._settled = after
        # The newest id any read has returned.
        self._seen = after
        # A marker xid, and the newest id seen before it was taken: settled once every
        # transaction older than the marker has ended.
        self._marker: int | None = None
        self._marked = after

    @property
    def waiting(self) -> bool:
        """Rows were seen that cannot be delivered until older transactions end."""
        return self._seen > self._settled

    @property
    def needs_marker(self) -> bool:
        return self.waiting and self._marker is None

    def advance(self, oldest_running: int, ids: list[int], full_page: bool) -> int:
        """Take one read (its snapshot's oldest running xid, the ids it returned in
        order, whether it hit its limit); returns the id up to which rows can go out."""
        if self._marker is not None and oldest_running > self._marker:
            self._settled = max(self._settled, self._marked)
            self._marker = None
        if ids:
            self._seen = max(self._seen, ids[-1])
        bound = min(self._settled, ids[-1]) if full_page and ids else self._settled
        self.after = max(self.after, bound)
        return self.after

    def mark(self, xid: int) -> None:
        """`xid` was assigned after the last read's snapshot was taken."""
        self._marker = xid
        self._marked = self._seen
