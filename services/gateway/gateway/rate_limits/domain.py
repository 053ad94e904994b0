"""Rate limits per user and per API key, free of I/O.

**Fixed windows shared by every replica.** Each principal (a user, an API key) may make
``limit`` requests per window of ``window_seconds`` (windows aligned on the epoch, so
every replica agrees on which window a request falls in); the count of a window lives in
the store, one document per principal and window.

**A cheap hot path: a local pre-budget.** A request never waits for the store. Each
replica decides from what it knows: the window's total as of its last sync with the store
(every replica's requests), plus its own requests since. It sends its own requests to the
store as one ``$inc`` (which answers the new total) once it has gathered
``sync_every`` of them or ``sync_seconds`` have passed since the last sync, in the
background. So a principal costs the store a write every ``sync_every`` requests or every
``sync_seconds``, not one per request, and a principal over its limit on any replica is
refused on every replica within ``sync_seconds``. The price: a replica may let through up
to what it gathers between two syncs beyond the limit (``sync_every`` requests, plus those
arriving while a sync is on its way), i.e. at most about replicas x ``sync_every`` over
the limit in a window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def window_of(now: float, window_seconds: float) -> tuple[int, float]:
    """(the window's number, when it ends: epoch seconds)."""
    index = int(now // window_seconds)
    return index, (index + 1) * window_seconds


def sync_every(limit: int, share: float) -> int:
    """How many requests a replica gathers before it tells the store (a share of the
    limit: a small limit is synced on nearly every request, a large one seldom)."""
    return max(1, int(limit * share))


def retry_after(now: float, window_ends: float) -> int:
    return max(1, math.ceil(window_ends - now))


@dataclass
class Counter:
    """One principal's count in one window, as this replica knows it."""

    window: int
    #: the window's total in the store at the last sync (every replica's requests)
    known: int = 0
    #: this replica's requests being sent to the store right now
    sending: int = 0
    #: this replica's requests not sent yet
    pending: int = 0
    #: monotonic time of the last sync (none yet: the first request syncs at once, to
    #: learn what other replicas counted)
    synced_at: float = -math.inf
    syncing: bool = False

    @property
    def used(self) -> int:
        return self.known + self.sending + self.pending

    def admit(self, limit: int) -> bool:
        """Counts the request if the principal is under its limit."""
        if self.used >= limit:
            return False
        self.pending += 1
        return True

    def due(self, monotonic_now: float, every: int, sync_seconds: float) -> bool:
        return not self.syncing and (
            self.pending >= every
            or (self.pending > 0 and monotonic_now - self.synced_at >= sync_seconds)
        )

    def start_sync(self, monotonic_now: float) -> int:
        sent, self.pending = self.pending, 0
        self.sending = sent
        self.synced_at = monotonic_now
        self.syncing = True
        return sent

    def synced(self, total: int | None) -> None:
        """The store's new total (None: the write failed, the requests are sent again)."""
        if total is None:
            self.pending += self.sending
        else:
            self.known = total
        self.sending = 0
        self.syncing = False
