"""Bounds on reading history: replay pages sized in bytes, and the hub's recent events."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from service.core.redis_replies import Entry
from service.events.stream_ids import parse_entry_id
from service.events.wire import EncodedEvent

# A replay reads its first page with this many entries at most, before it knows how large
# entries are; later pages are sized from the entries read so far (see ReplayLimits).
FIRST_REPLAY_PAGE = 4
# What the hub keeps of the events it read last, encoded, to serve replays that are near
# the end of the stream (see RecentHistory).
RECENT_HISTORY_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ReplayLimits:
    """How much history one process reads at once for its clients.

    ``page_bytes`` bounds what a replay page holds: each page after the first asks for as
    many entries as fit in it at the average size read so far (entries are foreign input, so
    this is an estimate, never below one entry). ``concurrency`` is how many pages are read
    and encoded at once in the process; the others wait for a slot in arrival order.
    """

    page_bytes: int = 262_144
    concurrency: int = 8


DEFAULT_REPLAY_LIMITS = ReplayLimits()


def entry_bytes(entry: Entry) -> int:
    """The bytes of an entry's field names and values, as Redis sent them."""
    return sum(len(name) + len(value) for name, value in entry[1].items())


def next_page_size(read_count: int, page_bytes: int, entries_read: int, bytes_read: int) -> int:
    """Entries to ask for next: what fits page_bytes at the average entry size, 1..read_count."""
    if entries_read == 0 or bytes_read == 0:
        return min(read_count, FIRST_REPLAY_PAGE)
    average_bytes = bytes_read / entries_read
    return max(1, min(read_count, int(page_bytes // average_bytes)))


class RecentHistory:
    """The events the hub read last, as encoded, bounded in bytes: most replays are a client
    catching up over the last moments (a reconnect, the read between replay and joining),
    and these need neither Redis nor encoding again.

    It holds every entry from its first to ``last_id`` (the hub's cursor; unreadable entries
    were skipped), so a cursor at or after its first entry is served whole from here.
    """

    def __init__(self, limit_bytes: int) -> None:
        self._limit_bytes = limit_bytes
        self._events: deque[EncodedEvent] = deque()
        # Each event's id parsed once, beside it: catch-ups compare ids many times a second.
        self._keys: deque[tuple[int, int]] = deque()
        self._bytes = 0
        self.last_id: str | None = None

    def extend(self, batch: list[EncodedEvent], last_id: str) -> None:
        """Add what the hub just read, through last_id, and forget the oldest beyond the limit."""
        self._events.extend(batch)
        self._keys.extend(parse_entry_id(event.entry_id) for event in batch)
        self._bytes += sum(len(event.sse) for event in batch)
        self.last_id = last_id
        while self._bytes > self._limit_bytes and len(self._events) > 1:
            self._bytes -= len(self._events.popleft().sse)
            self._keys.popleft()

    def after(self, cursor: str) -> tuple[list[EncodedEvent], str] | None:
        """Every held event after cursor and the id they reach (never before cursor), or None
        when entries after cursor may be missing here."""
        last_id = self.last_id
        cursor_key = parse_entry_id(cursor)
        if not self._keys or last_id is None or self._keys[0] > cursor_key:
            return None
        if parse_entry_id(last_id) <= cursor_key:
            return [], cursor
        newer = 0
        for key in reversed(self._keys):
            if key <= cursor_key:
                break
            newer += 1
        held = len(self._events)
        return [self._events[index] for index in range(held - newer, held)], last_id
