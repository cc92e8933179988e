"""Which events one client gets: the ``types=`` and ``job_id=`` it asks for, within its grant.

A client's filter and its token's limits are both applied to every event, so a token limited
to some jobs or types gets only those, whatever it asks for. Each pattern costs a check per
event per client, so ``types=`` takes at most ``MAX_TYPE_PATTERNS`` of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.core.grants import Grant
from service.core.name_patterns import NamePatterns
from service.events.errors import EventError
from service.events.wire import EncodedEvent

MAX_TYPE_PATTERNS = 32


class TooManyPatterns(EventError, ValueError):
    """A filter names more type patterns than a client may ask for (400)."""


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events one client wants; an empty filter passes everything."""

    types: NamePatterns = NamePatterns()
    job_id: str | None = None
    # The token's limits: None where it is not limited.
    allowed_jobs: NamePatterns | None = None
    allowed_types: NamePatterns | None = None

    @classmethod
    def parse(
        cls, types: str | None, job_id: str | None, grant: Grant | None = None
    ) -> EventFilter:
        """Build from ``types=a.b,ingestion.*`` and ``job_id=``, within the grant's limits."""
        patterns = [name for name in (types or "").split(",") if name.strip()]
        if len(patterns) > MAX_TYPE_PATTERNS:
            raise TooManyPatterns(
                f"types: at most {MAX_TYPE_PATTERNS} patterns, got {len(patterns)}"
            )
        return cls(
            types=NamePatterns.parse(patterns),
            job_id=job_id or None,
            allowed_jobs=grant.jobs if grant is not None else None,
            allowed_types=grant.types if grant is not None else None,
        )

    @property
    def passes_everything(self) -> bool:
        """True for the empty filter, so a batch can be taken whole."""
        return (
            self.job_id is None
            and self.types.empty
            and self.allowed_jobs is None
            and self.allowed_types is None
        )

    def accepts(self, event: EncodedEvent) -> bool:
        """True when the event passes the type and job filters and the grant's limits."""
        if self.job_id is not None and event.job_id != self.job_id:
            return False
        if self.allowed_jobs is not None and not self.allowed_jobs.matches(event.job_id):
            return False
        if self.allowed_types is not None and not self.allowed_types.matches(event.type):
            return False
        return self.types.empty or self.types.matches(event.type)
