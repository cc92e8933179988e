"""Turning an AG-UI ``RunAgentInput`` into the tasks of one ingestion job; pure, no I/O.

The document is the text of the last ``user`` message (a string, or its text parts joined by
newlines). ``forwardedProps`` may carry ``source_uri``, ``source_type`` and ``metadata``; other
keys belong to the front-end and are ignored.

Chunking rule: a document of at most ``CHUNK_CHARS`` characters is one chunk, exactly as sent.
A longer one is cut into chunks of at most ``CHUNK_CHARS`` characters, each cut made just after
the last blank line before the limit, else the last line break, else the last space, else at
the limit. Nothing is dropped or added: the chunks joined give the document back. Chunk ids are
``<runId>-<n>`` with n from 1, so the same run always yields the same ids.

A runId names Redis keys (``shield:agui:run:<runId>`` and its ``:enqueuing`` lock), so it may
hold no ``:``: otherwise runId ``X:enqueuing`` would be run X's lock and block it for a day.
``forwardedProps`` passes the same JSON-safety check as every other body (no NaN or Infinity,
no lone surrogate, bounded nesting), since its metadata is stored and served again.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ag_ui.core import ResumeEntry, RunAgentInput, TextPart, UserMessage
from pydantic import ValidationError

from service.agui.errors import AguiError
from service.core.json_safety import json_safety_problem
from service.jobs.job_admission import ChunkSpec

CHUNK_CHARS = 4000
# Leaves room for "-<n>" within the 256 characters POST /tasks allows a chunk id.
RUN_ID_MAX_CHARS = 200
THREAD_ID_MAX_CHARS = 256
_CUT_AFTER = ("\n\n", "\n", " ")
# An interrupt id is a dead letter's entry id.
_ENTRY_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
# Separates the parts of a Redis key name.
KEY_SEPARATOR = ":"


class IngestRefused(AguiError, ValueError):
    """The body cannot be ingested; the message says why, for the client."""


@dataclass(frozen=True, slots=True)
class Chunk:
    chunk_id: str
    content: str


@dataclass(frozen=True, slots=True)
class IngestPlan:
    """What one POST asks for: the run's ids, its chunks and where the document came from."""

    thread_id: str
    run_id: str
    chunks: tuple[Chunk, ...]
    source_uri: str
    source_type: str
    metadata: Mapping[str, Any]
    # Tells a re-attach (same document) from a different document under a reused runId.
    digest: str

    @property
    def chunk_ids(self) -> tuple[str, ...]:
        return tuple(chunk.chunk_id for chunk in self.chunks)

    def chunk_specs(self) -> list[ChunkSpec]:
        """The chunks as POST /jobs takes them."""
        return [ChunkSpec(chunk.chunk_id, chunk.content) for chunk in self.chunks]


class ResumeAction(StrEnum):
    RETRY = "retry"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class ResumeAnswer:
    """One answered interrupt: the dead letter's entry id and what to do with it."""

    interrupt_id: str
    action: ResumeAction


@dataclass(frozen=True, slots=True)
class ResumePlan:
    """A run that answers the interrupts of an earlier run on its thread."""

    thread_id: str
    run_id: str
    answers: tuple[ResumeAnswer, ...]
    # Tells a re-attach (same answers) from different answers under a reused runId.
    digest: str


def parse_run_input(body: bytes) -> RunAgentInput:
    """Validate a request body as a RunAgentInput, refusing it with the first reason found."""
    try:
        # pydantic's own JSON parser: it refuses lone surrogates, invalid UTF-8 and runaway
        # nesting, none of which may reach Redis or the encoder.
        return RunAgentInput.model_validate_json(body)
    except ValidationError as error:
        raise IngestRefused(f"not a RunAgentInput: {describe_first(error)}") from None


def describe_first(error: ValidationError) -> str:
    """The first problem of a validation error as ``location: message``, without the input."""
    problems = error.errors(include_url=False, include_input=False)
    first = problems[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{where}: {first['msg']}{more}"


def plan_ingest(run_input: RunAgentInput) -> IngestPlan:
    """Check what a RunAgentInput asks for and cut its document into chunks."""
    run_id = _checked_id("runId", run_input.run_id, RUN_ID_MAX_CHARS)
    if KEY_SEPARATOR in run_id:
        raise IngestRefused(f"runId must not contain {KEY_SEPARATOR!r}")
    thread_id = _checked_id("threadId", run_input.thread_id, THREAD_ID_MAX_CHARS)
    document = document_of(run_input)
    source_uri, source_type, metadata = source_of(run_input.forwarded_props)
    chunks = tuple(
        Chunk(chunk_id=f"{run_id}-{number}", content=content)
        for number, content in enumerate(chunk_text(document), start=1)
    )
    return IngestPlan(
        thread_id=thread_id,
        run_id=run_id,
        chunks=chunks,
        source_uri=source_uri,
        source_type=source_type,
        metadata=metadata,
        digest=_digest(document, source_uri, source_type, metadata),
    )


def is_resume(run_input: RunAgentInput) -> bool:
    """A run whose resume answers interrupts; it ingests nothing."""
    return bool(run_input.resume)


def plan_resume(run_input: RunAgentInput) -> ResumePlan:
    """Check a resume run's ids and read each answer: status ``cancelled`` or payload
    ``{"action": "skip"}`` drops the dead letter, ``{"action": "retry"}`` requeues it."""
    run_id = _checked_id("runId", run_input.run_id, RUN_ID_MAX_CHARS)
    if KEY_SEPARATOR in run_id:
        raise IngestRefused(f"runId must not contain {KEY_SEPARATOR!r}")
    thread_id = _checked_id("threadId", run_input.thread_id, THREAD_ID_MAX_CHARS)
    answers: dict[str, ResumeAnswer] = {}
    for index, entry in enumerate(run_input.resume or []):
        where = f"resume.{index}"
        if not _ENTRY_ID.match(entry.interrupt_id):
            raise IngestRefused(f"{where}.interruptId is not an interrupt of this service")
        if entry.interrupt_id in answers:
            raise IngestRefused(f"{where}.interruptId {entry.interrupt_id!r} is answered twice")
        answers[entry.interrupt_id] = ResumeAnswer(entry.interrupt_id, _action(where, entry))
    canonical = json.dumps(
        [[answer.interrupt_id, answer.action.value] for answer in answers.values()],
        separators=(",", ":"),
    )
    return ResumePlan(
        thread_id=thread_id,
        run_id=run_id,
        answers=tuple(answers.values()),
        digest=hashlib.sha256(canonical.encode("ascii")).hexdigest(),
    )


def _action(where: str, entry: ResumeEntry) -> ResumeAction:
    if entry.status == "cancelled":
        return ResumeAction.SKIP
    payload = entry.payload
    action = payload.get("action") if isinstance(payload, dict) else None
    if action not in (ResumeAction.RETRY.value, ResumeAction.SKIP.value):
        raise IngestRefused(
            f'{where}.payload must be {{"action": "retry"}} or {{"action": "skip"}}'
        )
    return ResumeAction(action)


def document_of(run_input: RunAgentInput) -> str:
    """The text of the last user message."""
    users = [message for message in run_input.messages if isinstance(message, UserMessage)]
    if not users:
        raise IngestRefused("no user message: the text of the last user message is the document")
    content = users[-1].content
    if isinstance(content, str):
        text = content
    else:
        text = "\n".join(part.text for part in content if isinstance(part, TextPart))
    if not text.strip():
        raise IngestRefused("the last user message has no text to ingest")
    return text


def source_of(forwarded: Any) -> tuple[str, str, dict[str, Any]]:
    """source_uri, source_type and metadata from forwardedProps, each optional."""
    if forwarded is None:
        return "", "", {}
    if not isinstance(forwarded, dict):
        raise IngestRefused("forwardedProps must be a JSON object")
    problem = json_safety_problem(forwarded)
    if problem is not None:
        raise IngestRefused(f"forwardedProps: {problem}")
    source_uri = forwarded.get("source_uri", "")
    source_type = forwarded.get("source_type", "")
    metadata = forwarded.get("metadata", {})
    for name, value in (("source_uri", source_uri), ("source_type", source_type)):
        if not isinstance(value, str):
            raise IngestRefused(f"forwardedProps.{name} must be a string")
    if not isinstance(metadata, dict):
        raise IngestRefused("forwardedProps.metadata must be a JSON object")
    return source_uri, source_type, metadata


def chunk_text(text: str, limit: int = CHUNK_CHARS) -> list[str]:
    """Cut text into pieces of at most limit characters that join back to the text."""
    chunks: list[str] = []
    rest = text
    while len(rest) > limit:
        cut = _cut_point(rest[:limit])
        chunks.append(rest[:cut])
        rest = rest[cut:]
    chunks.append(rest)
    return chunks


def _cut_point(window: str) -> int:
    for separator in _CUT_AFTER:
        index = window.rfind(separator)
        if index > 0:
            return index + len(separator)
    return len(window)


def _checked_id(name: str, value: str, max_chars: int) -> str:
    if not value.strip():
        raise IngestRefused(f"{name} must not be empty")
    if len(value) > max_chars:
        raise IngestRefused(f"{name} is longer than {max_chars} characters")
    if not value.isprintable():
        raise IngestRefused(f"{name} holds control characters")
    return value


def _digest(document: str, source_uri: str, source_type: str, metadata: Mapping[str, Any]) -> str:
    canonical = json.dumps(
        [document, source_uri, source_type, metadata], sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()
