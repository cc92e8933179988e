"""The ``id:`` of every AG-UI frame, and reading one back from Last-Event-ID; pure.

A frame shown for an event of the job is ``<events-stream id>/<n>``: the n-th frame (from 0)
that event gave. A frame of an opening (RUN_STARTED, the snapshot, the steps synthesised from
the job state, and a RUN_FINISHED that follows at once) is ``<snapshot cursor>/s<n>``. Both
name a point of the events stream, so a re-POST with Last-Event-ID rebuilds the run's view
there and sends only the frames after it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ag_ui.core import BaseEvent

from service.agui.run_plan import IngestRefused
from service.events.stream_ids import InvalidStreamId, parse_entry_id

OPENING_MARK = "s"
MAX_FRAME_ID_CHARS = 64


@dataclass(frozen=True, slots=True)
class FrameId:
    cursor: str
    index: int
    opening: bool = False

    def text(self) -> str:
        return f"{self.cursor}/{OPENING_MARK if self.opening else ''}{self.index}"


def parse_frame_id(text: str) -> FrameId:
    """A Last-Event-ID this service sent, or IngestRefused naming the header."""
    refused = IngestRefused(
        f"Last-Event-ID {text[:MAX_FRAME_ID_CHARS]!r} is not a frame id of this service "
        "(<stream id>/<n> or <stream id>/s<n>)"
    )
    cursor, separator, rest = text.strip().partition("/")
    if not separator or len(text) > MAX_FRAME_ID_CHARS:
        raise refused
    opening = rest.startswith(OPENING_MARK)
    number = rest.removeprefix(OPENING_MARK)
    if not number.isdigit():
        raise refused
    try:
        ms, seq = parse_entry_id(cursor)
    except InvalidStreamId:
        raise refused from None
    return FrameId(cursor=f"{ms}-{seq}", index=int(number), opening=opening)


class Framer:
    """Numbers the frames of one stream, dropping those up to a client's Last-Event-ID."""

    def __init__(self, seen_through: FrameId | None = None) -> None:
        self.seen_through = seen_through
        self._next: dict[tuple[str, bool], int] = {}
        self._position: tuple[str, bool] | None = None

    def frames(
        self, cursor: str, events: Iterable[BaseEvent], opening: bool = False
    ) -> list[tuple[str, BaseEvent]]:
        """The events as (id, event) frames after `cursor`; numbering goes on across calls
        for the same cursor, so a closing continues its event's numbers."""
        self._position = (cursor, opening)
        shown: list[tuple[str, BaseEvent]] = []
        for event in events:
            index = self._next.get((cursor, opening), 0)
            self._next[(cursor, opening)] = index + 1
            frame_id = FrameId(cursor, index, opening)
            if not self._seen(frame_id):
                shown.append((frame_id.text(), event))
        return shown

    def more(
        self, events: Iterable[BaseEvent], fallback_cursor: str
    ) -> list[tuple[str, BaseEvent]]:
        """Frames numbered on after the last ones made (a closing, a RUN_ERROR), or as an
        opening at `fallback_cursor` when none were."""
        cursor, opening = self._position or (fallback_cursor, True)
        return self.frames(cursor, events, opening)

    def _seen(self, frame_id: FrameId) -> bool:
        seen = self.seen_through
        return (
            seen is not None
            and seen.cursor == frame_id.cursor
            and seen.opening == frame_id.opening
            and frame_id.index <= seen.index
        )
