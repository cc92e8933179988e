"""The delivery ledger: the one owner of every task delivery a worker holds.

A delivery's life, with its named transitions:

    received ──start──▶ running ──finish──▶ finished ──sending_acks──▶ acking ──acked──▶ (gone)
        │                  │                      ▲                       │
        │                  │                      └──────ack_failed───────┘
        │                  └──moving──▶ moving ──moved──▶ (gone)
        └──release──▶ (gone)            (a retry, a deferral or a dead-letter move)

and from any state a renewal that finds the task owned by another consumer marks it ``lost``
(``mark_lost``); a lost delivery is never started, acked or moved by this worker.

The lease thread renews what ``renewable`` lists (received, running, finished and moving,
for lease_max_s from receipt) and reports what it could not keep with ``mark_lost``. Acks in
flight are not renewed: a renewal racing an ack that landed would take the task for lost.
An ack that fails goes again with the next one (``ack_failed``); a move that fails, or a
delivery the worker will not start, is released for another worker to reclaim.

Everything is in memory and guarded by one lock, since the lease thread calls in; the clock
is injected so that every transition can be tested with a fake one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from service.tasks.errors import TaskError
from service.tasks.task_format import Task


class DeliveryState(StrEnum):
    RECEIVED = "received"
    RUNNING = "running"
    FINISHED = "finished"
    ACKING = "acking"
    MOVING = "moving"
    LOST = "lost"


class LedgerError(TaskError):
    """A transition that the delivery's state does not allow: a worker bug."""


@dataclass(slots=True)
class _Entry:
    state: DeliveryState
    renew_until: float
    task: Task | None = None
    # False once an ack of it may have landed: a renewal would then take it for lost.
    renewed: bool = True


_RENEWED = (
    DeliveryState.RECEIVED,
    DeliveryState.RUNNING,
    DeliveryState.FINISHED,
    DeliveryState.MOVING,
)
_IN_FLIGHT = (DeliveryState.RECEIVED, DeliveryState.RUNNING, DeliveryState.MOVING)


class DeliveryLedger:
    """Every delivery this worker holds, by entry id."""

    def __init__(self, lease_max_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._lease_max_s = lease_max_s
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    def receive(self, entry_ids: Iterable[str]) -> None:
        """Hold newly read or reclaimed deliveries; a lost one delivered again is ours again."""
        until = self._clock() + self._lease_max_s
        with self._lock:
            for entry_id in entry_ids:
                self._entries[entry_id] = _Entry(DeliveryState.RECEIVED, until)

    def start(self, entry_id: str) -> bool:
        """received → running; False (and the delivery is dropped) when it was lost."""
        with self._lock:
            return self._advance(entry_id, DeliveryState.RUNNING, DeliveryState.RECEIVED)

    def finish(self, entry_id: str, task: Task) -> bool:
        """running → finished, to be acked; False when it was lost while it ran."""
        with self._lock:
            if not self._advance(entry_id, DeliveryState.FINISHED, DeliveryState.RUNNING):
                return False
            self._entries[entry_id].task = task
            return True

    def moving(self, entry_id: str) -> bool:
        """received or running → moving (a retry, deferral or dead letter is being written);
        False when it was lost."""
        with self._lock:
            return self._advance(
                entry_id, DeliveryState.MOVING, DeliveryState.RECEIVED, DeliveryState.RUNNING
            )

    def moved(self, entry_id: str) -> None:
        """moving → gone: the move landed, or the queue found the task another's."""
        with self._lock:
            self._entries.pop(entry_id, None)

    def release(self, entry_ids: Iterable[str]) -> None:
        """Let go of deliveries this worker will not finish: they stay pending for reclaim."""
        with self._lock:
            for entry_id in entry_ids:
                self._entries.pop(entry_id, None)

    def sending_acks(self) -> list[tuple[str, Task]]:
        """finished (acks that failed included) → acking: what the next ack round trip
        carries. Acks already in flight are not sent twice."""
        with self._lock:
            # A finished task another worker took meanwhile is that worker's to ack.
            for entry_id in [
                entry_id
                for entry_id, entry in self._entries.items()
                if entry.state is DeliveryState.LOST and entry.task is not None
            ]:
                del self._entries[entry_id]
            sending = [
                (entry_id, entry.task)
                for entry_id, entry in self._entries.items()
                if entry.state is DeliveryState.FINISHED and entry.task is not None
            ]
            for entry_id, _ in sending:
                self._entries[entry_id].state = DeliveryState.ACKING
                self._entries[entry_id].renewed = False
            return sending

    def acked(self, entry_ids: Iterable[str]) -> None:
        """acking → gone. Ids the ack script found owned by another are gone as well."""
        self.release(entry_ids)

    def ack_failed(self, entry_ids: Iterable[str]) -> None:
        """acking → finished, unrenewed: the ack goes again with the next round trip.

        Not renewed: if the ack did land, a renewal would take them for lost; if it did not,
        another worker may reclaim them, and the ack script then reports them as another's.
        """
        with self._lock:
            for entry_id in entry_ids:
                entry = self._entries.get(entry_id)
                if entry is not None:
                    self._expect(entry_id, entry, DeliveryState.ACKING)
                    entry.state = DeliveryState.FINISHED

    def mark_lost(self, entry_ids: Iterable[str]) -> list[str]:
        """A renewal found these owned by another consumer; returns those newly marked."""
        marked = []
        with self._lock:
            for entry_id in entry_ids:
                entry = self._entries.get(entry_id)
                if entry is not None and entry.state in _RENEWED:
                    entry.state = DeliveryState.LOST
                    marked.append(entry_id)
        return marked

    def is_lost(self, entry_id: str) -> bool:
        with self._lock:
            entry = self._entries.get(entry_id)
            return entry is not None and entry.state is DeliveryState.LOST

    def renewable(self) -> list[str]:
        """The ids the lease thread should renew now."""
        now = self._clock()
        with self._lock:
            return [
                entry_id
                for entry_id, entry in self._entries.items()
                if entry.state in _RENEWED and entry.renewed and entry.renew_until >= now
            ]

    def state_of(self, entry_id: str) -> DeliveryState | None:
        with self._lock:
            entry = self._entries.get(entry_id)
            return entry.state if entry else None

    def in_flight(self) -> int:
        """Deliveries taking a slot: received, running or being moved."""
        with self._lock:
            return sum(1 for entry in self._entries.values() if entry.state in _IN_FLIGHT)

    def has_acks_to_send(self) -> bool:
        with self._lock:
            return any(entry.state is DeliveryState.FINISHED for entry in self._entries.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _advance(self, entry_id: str, to: DeliveryState, *allowed: DeliveryState) -> bool:
        """Move a held delivery on (the lock held); a lost or unknown one is dropped: False."""
        entry = self._entries.get(entry_id)
        if entry is None or entry.state is DeliveryState.LOST:
            self._entries.pop(entry_id, None)
            return False
        self._expect(entry_id, entry, *allowed)
        entry.state = to
        return True

    @staticmethod
    def _expect(entry_id: str, entry: _Entry, *states: DeliveryState) -> None:
        if entry.state not in states:
            allowed = " or ".join(states)
            raise LedgerError(f"delivery {entry_id} is {entry.state}, not {allowed}")
