"""The jobs domain's errors, under one root; service.api.http_errors maps each to its answer."""

from __future__ import annotations


class JobError(Exception):
    """Root of the jobs domain's errors."""


class InvalidJobId(JobError):
    """A job id no job can have: empty, too long, or holding control characters (400)."""


class JobNotFound(JobError):
    """No job by that id, or it has expired (404)."""


class JobConflict(JobError):
    """The job cannot take this write: it exists, it was submitted whole, or it is
    cancelled; or it cannot be cancelled, being finished (409)."""


class TooManyChunks(JobError):
    """A job with more chunks than SHIELD_MAX_JOB_CHUNKS (413)."""
