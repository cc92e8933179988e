"""Client-side event filters: the ``types=`` and ``job_id=`` query parameters."""

from __future__ import annotations

from dataclasses import dataclass

from service.events.wire import EncodedEvent


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events one client wants; an empty filter passes everything."""

    exact_types: frozenset[str] = frozenset()
    type_prefixes: tuple[str, ...] = ()
    job_id: str | None = None

    @classmethod
    def parse(cls, types: str | None, job_id: str | None) -> EventFilter:
        """Build from ``types=a.b,ingestion.*`` and ``job_id=``."""
        names = [name.strip() for name in (types or "").split(",") if name.strip()]
        prefixes = tuple(name[:-1] for name in names if name.endswith("*"))
        exact = frozenset(name for name in names if not name.endswith("*"))
        return cls(exact_types=exact, type_prefixes=prefixes, job_id=job_id or None)

    @property
    def passes_everything(self) -> bool:
        """True for the empty filter, so a batch can be taken whole."""
        return self.job_id is None and not self.exact_types and not self.type_prefixes

    def accepts(self, event: EncodedEvent) -> bool:
        """True when the event passes both the type and the job filter."""
        if self.job_id is not None and event.job_id != self.job_id:
            return False
        if not self.exact_types and not self.type_prefixes:
            return True
        return event.type in self.exact_types or event.type.startswith(self.type_prefixes)
