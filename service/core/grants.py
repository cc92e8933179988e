"""What a caller may do: its scopes, and the jobs and event types it is limited to.

A grant comes from a credential: the static ``SHIELD_API_TOKEN`` (and an API with no
authentication at all) is ``ADMIN``; a JWT is whatever its claims say (service.core.tokens).
A grant with ``jobs`` or ``types`` is *limited*: it sees, writes and cancels only those jobs
and event types, whatever filter it asks for. ``admin`` implies every other scope.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from service.core.name_patterns import NamePatterns


class Scope(StrEnum):
    EVENTS_READ = "events:read"
    EVENTS_WRITE = "events:write"
    TASKS_WRITE = "tasks:write"
    JOBS_READ = "jobs:read"
    JOBS_WRITE = "jobs:write"
    JOBS_CANCEL = "jobs:cancel"
    DEAD_LETTERS = "dead-letters"
    METRICS = "metrics"
    ADMIN = "admin"


KNOWN_SCOPES = frozenset(scope.value for scope in Scope)
# Event types only the service writes: a forged ingestion.completed would finish an AG-UI run
# that no worker touched. Written through POST /events by an admin only.
RESERVED_EVENT_TYPES = NamePatterns.parse(["ingestion.*", "job.*", "worker.*", "notice"])


class AccessDenied(Exception):
    """The caller's grant does not cover what it asked for (403)."""


def parse_scopes(text: str, *, strict: bool) -> frozenset[Scope]:
    """Space-separated scope names; unknown names raise with strict, else are ignored."""
    names = text.split()
    unknown = sorted(set(names) - KNOWN_SCOPES)
    if strict and unknown:
        raise ValueError(f"unknown scope {unknown[0]!r}; known: {' '.join(sorted(KNOWN_SCOPES))}")
    return frozenset(Scope(name) for name in names if name in KNOWN_SCOPES)


@dataclass(frozen=True, slots=True)
class Grant:
    scopes: frozenset[Scope]
    # None: every job (or type). A limited grant's patterns; empty patterns match nothing.
    jobs: NamePatterns | None = None
    types: NamePatterns | None = None

    @classmethod
    def of(
        cls,
        scopes: Iterable[Scope],
        jobs: Iterable[str] | None = None,
        types: Iterable[str] | None = None,
    ) -> Grant:
        return cls(
            scopes=frozenset(scopes),
            jobs=None if jobs is None else NamePatterns.parse(jobs),
            types=None if types is None else NamePatterns.parse(types),
        )

    @property
    def admin(self) -> bool:
        return Scope.ADMIN in self.scopes

    @property
    def limited(self) -> bool:
        """True when the grant is held to some jobs or some event types."""
        return self.jobs is not None or self.types is not None

    def has(self, scope: Scope) -> bool:
        return self.admin or scope in self.scopes

    def may_use_job(self, job_id: str) -> bool:
        return self.jobs is None or self.jobs.matches(job_id)

    def may_see_type(self, event_type: str) -> bool:
        return self.types is None or self.types.matches(event_type)

    def check_job(self, job_id: str) -> None:
        """Raise AccessDenied unless the grant covers this job."""
        if not self.may_use_job(job_id):
            raise AccessDenied(f"this token does not cover job {job_id!r}")

    def check_unlimited(self, what: str) -> None:
        """Raise AccessDenied for a grant limited to some jobs or types."""
        if self.limited:
            raise AccessDenied(f"{what} needs a token not limited to jobs or types")

    def check_event_write(self, event_type: str, job_id: str) -> None:
        """Raise AccessDenied for a reserved type (unless admin) or one outside the grant."""
        if RESERVED_EVENT_TYPES.matches(event_type) and not self.admin:
            raise AccessDenied(f"event type {event_type!r} is written by the service only")
        if not self.may_see_type(event_type):
            raise AccessDenied(f"this token does not cover event type {event_type!r}")
        self.check_job(job_id)


ADMIN = Grant(scopes=frozenset({Scope.ADMIN}))
