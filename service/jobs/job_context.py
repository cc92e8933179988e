"""The job keys and the per-call context every script that moves a task is given."""

from __future__ import annotations

import functools
import json
import time
import uuid
from dataclasses import dataclass

from service.core import names
from service.core.lua import Prelude
from service.core.settings import Settings
from service.events.wire import utc_now_iso

# The Lua functions that keep a job's state (service/jobs/lua/job_state.lua).
JOB_STATE_PRELUDE: Prelude = ("service.jobs", "job_state")


@dataclass(frozen=True)
class JobKeys:
    """Where jobs live, derived from the task stream's name, and how long they are kept."""

    prefix: str
    index: str
    cancelling: str
    events: str
    events_maxlen: int
    ttl_s: int

    @classmethod
    def of(cls, settings: Settings) -> JobKeys:
        stream = settings.stream_ingestion
        return cls(
            prefix=names.job_key_prefix(stream),
            index=names.job_index_key(stream),
            cancelling=names.cancelling_jobs_key(stream),
            events=settings.stream_events,
            events_maxlen=settings.stream_maxlen,
            ttl_s=settings.job_ttl_s,
        )

    def job_key(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def chunks_key(self, job_id: str) -> str:
        return f"{self.prefix}chunks:{job_id}"

    def script_context(self) -> str:
        """The JSON a script's jobs_open() takes: keys, now, and a fresh event id base.

        Every script that moves a task is given one, so a busy worker makes two per batch:
        the part that never changes is encoded once, the rest spliced in."""
        return (
            f'{self._fixed_context},"now_ms":{int(time.time() * 1000)},'
            f'"now_iso":"{utc_now_iso()}","event_id":"{uuid.uuid4()}"}}'
        )

    @functools.cached_property
    def _fixed_context(self) -> str:
        fixed = json.dumps(
            {
                "prefix": self.prefix,
                "index": self.index,
                "cancelling": self.cancelling,
                "events": self.events,
                "maxlen": self.events_maxlen,
                "ttl_s": self.ttl_s,
            },
            separators=(",", ":"),
        )
        return fixed[:-1]
