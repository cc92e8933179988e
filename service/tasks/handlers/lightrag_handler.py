"""``lightrag:<base-url>``: each chunk becomes a document in your LightRAG Server.

Designed against LightRAG Server 1.5.7 as it behaves, not as the issue imagined it:

- **The document's name.** LightRAG keeps only the last path part of a ``file_source`` and
  refuses a second insert under a name it holds (409). So every chunk is sent under a name of
  its own with no ``/``: the last path part of its source_uri, its job_id and its chunk_id,
  each percent-escaped and joined by ``@`` (``notes.txt@job-7@chunk-1``), which no two chunks
  share and a reader can still trace back to its source.
- **Done means processed.** The insert answers a ``track_id``; the attempt follows it with
  ``/documents/track_status/{track_id}`` until the document is ``processed`` (done) or
  ``failed`` (a failed attempt, naming LightRAG's error). A document that failed because its
  content is already held under another name (``metadata.is_duplicate``) is done once the
  document holding that content is processed.
- **409, "already contains '<name>' (Status: s)".** An earlier attempt at this chunk got
  there. ``processed``: done, LightRAG holds exactly this chunk. Still in flight: the attempt
  follows that document. ``failed`` (an earlier attempt's failure): this attempt deletes it
  and inserts the chunk again, so a document that keeps failing is dead-lettered after
  SHIELD_RETRY_ATTEMPTS tries by LightRAG, one per attempt. Any other 409 is LightRAG
  refusing new work for a while (a scan, a delete, a retry): come back later.
- **LightRAG going away loses nothing.** A refused or cut connection is retried within the
  attempt, until SHIELD_HANDLER_TIMEOUT_S. LightRAG resumes what a stop interrupted only when
  its pipeline next runs, so an attempt whose document sits in flight while the pipeline is
  idle (or whose insert left no document at all) deletes what is left and inserts again.
  Only the whole attempt outliving the timeout is a failed attempt.
- **Never /documents/reprocess_failed.** Asked while a run that an insert started is going,
  1.5.7 waits for that insert's reservation to drain, which that run holds until it ends: the
  pipeline spins and every insert is refused with 409 until LightRAG restarts (seen here).
  A delete is refused, not queued, while the pipeline is busy, so it cannot do that.

Every other status means what it means for the http handler (http_semantics): 429 and 503
are busy, other 4xx (a wrong API key among them) dead-letter at once, 5xx retry. The API key
(SHIELD_HANDLER_TOKEN, sent as ``X-API-Key``) is cut out of any body a reason quotes. Every
request of a traced attempt carries its ``traceparent``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import Enum
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from service.core.trace_context import TRACEPARENT_HEADER
from service.tasks.handlers.context import HandlerContext
from service.tasks.handlers.http_handler import describe_transport_error, quiet_httpx_log
from service.tasks.handlers.http_semantics import (
    FailedAttempt,
    body_excerpt,
    check_status,
    shown_url,
)
from service.tasks.handlers.outcomes import RetryLater

log = logging.getLogger(__name__)

PROCESSED = "processed"
FAILED = "failed"
DUPLICATED = "duplicated"  # the insert answer of LightRAG before 1.5; 1.5.7 answers 409
KNOWN_STATUSES = frozenset(
    {"pending", "parsing", "analyzing", "processing", "preprocessed", PROCESSED, FAILED}
)
NAME_SEPARATOR = "@"  # percent-escaping never leaves one inside a part
FIRST_POLL_S = 0.25
MAX_POLL_S = 2.0
FIRST_RECONNECT_S = 0.25
MAX_RECONNECT_S = 2.0
# How often an attempt whose document is in flight looks at whether LightRAG's pipeline is
# running at all; idle twice in a row, with our document in flight, means it is stranded.
IDLE_CHECK_S = 2.0
# LightRAG refuses new work while it drains for a scan, a delete or a retry: back soon.
DRAINING_RETRY_S = 2.0
# The 409 named a document the listing did not show (it moved on meanwhile): look again.
LOOK_AGAIN_S = 1.0
FIND_PAGE_SIZE = 200
FIND_MAX_PAGES = 5
ALREADY_HELD = re.compile(r"already contains '(?P<name>.*)' \(Status: (?P<status>[\w.-]+)\)")


def document_name(payload: Mapping[str, Any]) -> str:
    """The file_source of a chunk: unique per (source, job, chunk), with no ``/``."""
    source = str(payload.get("source_uri") or "")
    source_name = PurePosixPath(urlsplit(source).path).name if source else ""
    parts = [source_name] if source_name else []
    parts += [str(payload["job_id"]), str(payload["chunk_id"])]
    return NAME_SEPARATOR.join(quote(part, safe="") for part in parts)


def is_duplicate(document: Mapping[str, Any]) -> bool:
    metadata = document.get("metadata")
    return isinstance(metadata, dict) and bool(metadata.get("is_duplicate"))


class _Progress(Enum):
    DONE = "done"
    IN_FLIGHT = "in flight"
    AWAITING_RETRY = "failed, a retry asked for"


class _Resend(Exception):
    """Insert the chunk again: its insert was lost, or what it left was deleted."""


class LightRagHandler:
    """Inserts each chunk into one LightRAG Server and waits for it to be processed."""

    # Cancelling the call stops waiting for the service.
    interruptible = True

    def __init__(
        self, base_url: str, client: httpx.AsyncClient, api_key: str | None, timeout_s: float
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._client = client
        self._headers = {"X-API-Key": api_key} if api_key else {}
        self._secrets = (api_key,) if api_key else ()
        self._timeout_s = timeout_s
        self._service = f"LightRAG at {shown_url(self._base_url)}"
        quiet_httpx_log()

    async def __call__(self, payload: Mapping[str, Any], context: HandlerContext) -> None:
        name = document_name(payload)
        attempt = _Attempt(self, name, context.traceparent)
        try:
            async with asyncio.timeout(self._timeout_s):
                await attempt.run(str(payload["content"]))
        except TimeoutError:
            raise FailedAttempt(
                f"{self._service} had not processed {name} within {self._timeout_s:g} s"
                f" ({attempt.last_seen})"
            ) from None

    async def aclose(self) -> None:
        await self._client.aclose()


class _Attempt:
    """One attempt at one chunk: insert, then follow its document to an end."""

    def __init__(self, handler: LightRagHandler, name: str, traceparent: str) -> None:
        self._handler = handler
        self._service = handler._service
        self._headers = handler._headers
        if traceparent:
            self._headers = {**handler._headers, TRACEPARENT_HEADER: traceparent}
        self.name = name
        self.last_seen = "no answer yet"
        self._outage = False

    async def run(self, content: str) -> None:
        while True:
            try:
                await self._insert_and_follow(content)
                return
            except _Resend as why:
                log.warning("%s: sending %s again (%s)", self._service, self.name, why)

    async def _insert_and_follow(self, content: str) -> None:
        body = {"text": content, "file_source": self.name}
        response = await self._request("POST", "/documents/text", json=body)
        if response.status_code == 409:
            await self._settle_already_held(response)
            return
        answer = self._checked_json(response, "/documents/text")
        track_id = answer.get("track_id")
        if answer.get("status") == DUPLICATED and not track_id:
            return
        if not isinstance(track_id, str) or not track_id:
            raise FailedAttempt(
                f"{self._service} did not take {self.name}: {self._excerpt(answer)}"
            )
        await self._follow(track_id)

    async def _settle_already_held(self, response: httpx.Response) -> None:
        held = ALREADY_HELD.search(_detail(response))
        if held is None:
            said = body_excerpt(response.text, self._handler._secrets)
            raise RetryLater(f"{self._service} takes no new work now: {said}", DRAINING_RETRY_S)
        status = held["status"].lower()
        self.last_seen = f"already held, {status}"
        if status == PROCESSED:
            return
        document = await self._find(status)
        if document is None:
            raise RetryLater(f"{self._service} holds {self.name} as {status}", LOOK_AGAIN_S)
        if status == FAILED and is_duplicate(document):
            await self._follow_original(document)
            return
        # A failed one gets one more try by LightRAG, counted as this attempt: _follow
        # deletes it and inserts it again once the pipeline is idle.
        stale = document.get("updated_at") if status == FAILED else None
        await self._follow(str(document["track_id"]), str(document["id"]), stale)

    async def _follow(
        self,
        track_id: str,
        doc_id: str | None = None,
        stale_failure: object = None,
        originals: bool = True,
    ) -> None:
        """Poll a track until its documents are processed; FailedAttempt if one failed.

        With `originals` false it follows another chunk's document, and never touches it."""
        poll_s = FIRST_POLL_S
        idle_checked_at = time.monotonic()
        idle_before = False
        while True:
            documents = await self._documents(track_id, doc_id)
            progress = await self._settle(documents, stale_failure, originals)
            if progress is _Progress.DONE:
                return
            # After an outage, look at once: a restarted LightRAG resumes nothing by itself.
            if originals and (self._outage or time.monotonic() - idle_checked_at >= IDLE_CHECK_S):
                idle_checked_at = time.monotonic()
                restarted, self._outage = self._outage, False
                idle = not await self._pipeline_busy()
                # Twice idle is stranded. Once is enough for a document left over from before
                # an outage or from a failed attempt; not for an empty track, which a fresh
                # insert shows for a moment.
                at_once = restarted or progress is _Progress.AWAITING_RETRY
                if idle and (idle_before or (at_once and documents)):
                    await self._start_over(documents)
                idle_before = idle
            await asyncio.sleep(poll_s)
            poll_s = min(MAX_POLL_S, poll_s * 2)

    async def _documents(self, track_id: str, doc_id: str | None) -> list[dict[str, Any]]:
        path = f"/documents/track_status/{quote(track_id, safe='')}"
        answer = self._checked_json(await self._request("GET", path), "/documents/track_status")
        return [
            document
            for document in answer.get("documents") or []
            if isinstance(document, dict) and doc_id in (None, document.get("id"))
        ]

    async def _start_over(self, documents: list[dict[str, Any]]) -> None:
        """Delete what is left of our document and raise _Resend; return if LightRAG is
        busy again (it refuses a delete then), to look again later."""
        if not documents:
            raise _Resend("its insert left no document")
        doc_ids = [str(document.get("id")) for document in documents]
        answer = self._checked_json(
            await self._request("DELETE", "/documents/delete_document", json={"doc_ids": doc_ids}),
            "/documents/delete_document",
        )
        if answer.get("status") != "deletion_started":
            return
        log.info("%s: deleting %s (%s) to insert it again", self._service, self.name, doc_ids)
        track_id = str(documents[0].get("track_id") or "")
        while True:
            await asyncio.sleep(FIRST_POLL_S)
            # Busy first: if the deletion was over before the listing, the listing is final.
            busy = await self._pipeline_busy()
            listed = await self._documents(track_id, None) if track_id else []
            left = [document for document in listed if document.get("id") in doc_ids]
            if not left:
                raise _Resend("what it left was deleted")
            if not busy:
                error = body_excerpt(str(left[0].get("error_msg") or ""), self._handler._secrets)
                raise FailedAttempt(
                    f"{self._service} could not delete {self.name} to try it again;"
                    f" it stays {left[0].get('status')}: {error}"
                )

    async def _settle(
        self, documents: list[dict[str, Any]], stale_failure: object, originals: bool
    ) -> _Progress:
        """Where the documents stand; FailedAttempt when one has failed since we asked."""
        if not documents:
            self.last_seen = "its track lists no document yet"
            return _Progress.IN_FLIGHT
        statuses = [str(document.get("status", "")).lower() for document in documents]
        self.last_seen = f"{self.name} is {', '.join(statuses)}"
        awaiting_retry = False
        for document, status in zip(documents, statuses, strict=True):
            if status != FAILED or is_duplicate(document):
                continue
            if stale_failure is not None and document.get("updated_at") == stale_failure:
                awaiting_retry = True
                continue
            error = body_excerpt(str(document.get("error_msg") or ""), self._handler._secrets)
            raise FailedAttempt(f"{self._service} reported {self.name} failed: {error}")
        if awaiting_retry:
            return _Progress.AWAITING_RETRY
        if any(status not in (PROCESSED, FAILED) for status in statuses):
            return _Progress.IN_FLIGHT
        if originals:
            for document in documents:
                if is_duplicate(document):
                    await self._follow_original(document)
        return _Progress.DONE

    async def _follow_original(self, duplicate: Mapping[str, Any]) -> None:
        """A chunk whose content LightRAG holds under another name is done when that is."""
        metadata = duplicate.get("metadata") or {}
        track_id = metadata.get("original_track_id")
        if not track_id:
            return
        original = metadata.get("original_doc_id")
        try:
            await self._follow(str(track_id), str(original) if original else None, originals=False)
        except FailedAttempt:
            raise FailedAttempt(
                f"{self._service} holds the content of {self.name} as {original}, which failed"
            ) from None

    async def _find(self, status: str) -> dict[str, Any] | None:
        """The document LightRAG holds under our name, among those in `status`."""
        filters = {"status_filters": [status]} if status in KNOWN_STATUSES else {}
        for page in range(1, FIND_MAX_PAGES + 1):
            request = {
                **filters,
                "page": page,
                "page_size": FIND_PAGE_SIZE,
                "sort_field": "updated_at",
                "sort_direction": "desc",
            }
            response = await self._request("POST", "/documents/paginated", json=request)
            if not response.is_success:
                log.info("%s listed no documents: %d", self._service, response.status_code)
                return None
            answer = _json_object(response)
            for document in answer.get("documents") or []:
                if isinstance(document, dict) and document.get("file_path") == self.name:
                    return document if document.get("track_id") else None
            if not (answer.get("pagination") or {}).get("has_next"):
                return None
        return None

    async def _pipeline_busy(self) -> bool:
        response = await self._request("GET", "/documents/pipeline_status")
        if not response.is_success:
            return True  # unknown: leave it alone
        return bool(_json_object(response).get("busy", True))

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request, sent again until LightRAG answers: the attempt's timeout bounds it."""
        wait_s = FIRST_RECONNECT_S
        handler = self._handler
        while True:
            try:
                return await handler._client.request(
                    method, handler._base_url + path, headers=self._headers, **kwargs
                )
            except httpx.TransportError as error:
                self.last_seen = f"cannot reach it: {describe_transport_error(error)}"
                if not self._outage:
                    log.warning("cannot reach %s (%s); waiting", self._service, self.last_seen)
                self._outage = True
            await asyncio.sleep(wait_s)
            wait_s = min(MAX_RECONNECT_S, wait_s * 2)

    def _checked_json(self, response: httpx.Response, path: str) -> dict[str, Any]:
        check_status(
            self._service,
            response.status_code,
            response.headers.get("Retry-After"),
            response.text,
            datetime.now(UTC),
            self._handler._secrets,
        )
        answer = _json_object(response)
        if not answer:
            raise FailedAttempt(f"{self._service} answered {path} with no JSON object")
        return answer

    def _excerpt(self, value: object) -> str:
        return body_excerpt(json.dumps(value, default=str), self._handler._secrets)


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _detail(response: httpx.Response) -> str:
    detail = _json_object(response).get("detail")
    return detail if isinstance(detail, str) else response.text
