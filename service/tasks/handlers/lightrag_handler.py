"""``lightrag:<base-url>``: each chunk becomes a document in your LightRAG Server.

The chunk is POSTed to ``/documents/text`` as ``{"text", "file_source"}`` (the task's
source_uri, or ``job_id/chunk_id``), with SHIELD_HANDLER_TOKEN as ``X-API-Key``. The task is
done only when LightRAG reports the document processed: the handler follows the insert's
``track_id`` with ``/documents/track_status/{track_id}``. A document LightRAG reports failed
is a failed attempt. An insert LightRAG answers "duplicated" is done: LightRAG keys a
document by its content, and it already holds this one (an earlier attempt at this task
reached it, or the same text came before); its own pipeline owns the document from there.

Statuses mean what they mean for the http handler (http_semantics): 429 and 503 are busy,
other 4xx (a wrong API key among them) dead-letter at once, 5xx and timeouts retry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from service.tasks.handlers.context import HandlerContext
from service.tasks.handlers.http_handler import send, shown_url
from service.tasks.handlers.http_semantics import (
    BODY_EXCERPT_CHARS,
    FailedAttempt,
    check_status,
)

FIRST_POLL_S = 0.25
MAX_POLL_S = 2.0
PROCESSED = "processed"
FAILED = "failed"
DUPLICATED = "duplicated"


class LightRagHandler:
    """Inserts each chunk into one LightRAG Server and waits for it to be processed."""

    def __init__(
        self, base_url: str, client: httpx.AsyncClient, api_key: str | None, timeout_s: float
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._client = client
        self._headers = {"X-API-Key": api_key} if api_key else {}
        self._timeout_s = timeout_s
        self._service = f"LightRAG at {shown_url(self._base_url)}"

    async def __call__(self, payload: Mapping[str, Any], context: HandlerContext) -> None:
        deadline = time.monotonic() + self._timeout_s
        source = payload.get("source_uri") or f"{payload['job_id']}/{payload['chunk_id']}"
        answer = await self._json(
            "POST", "/documents/text", json={"text": payload["content"], "file_source": source}
        )
        status = str(answer.get("status", ""))
        if status == DUPLICATED:
            return
        track_id = answer.get("track_id")
        if status != "success" or not isinstance(track_id, str) or not track_id:
            raise FailedAttempt(f"{self._service} did not take the document: {_excerpt(answer)}")
        await self._wait_until_processed(track_id, deadline)

    async def _wait_until_processed(self, track_id: str, deadline: float) -> None:
        poll_s = FIRST_POLL_S
        while True:
            answer = await self._json("GET", f"/documents/track_status/{quote(track_id)}")
            documents = [doc for doc in answer.get("documents") or [] if isinstance(doc, dict)]
            statuses = [str(doc.get("status", "")).lower() for doc in documents]
            failed = [
                doc for doc, status in zip(documents, statuses, strict=True) if status == FAILED
            ]
            if failed:
                error = str(failed[0].get("error_msg") or failed[0].get("error") or "")
                raise FailedAttempt(
                    f"{self._service} reported the document failed: {error[:BODY_EXCERPT_CHARS]}"
                )
            if documents and all(status == PROCESSED for status in statuses):
                return
            if time.monotonic() + poll_s > deadline:
                raise FailedAttempt(
                    f"{self._service} had not processed the document within"
                    f" {self._timeout_s:g} s (track_id {track_id})"
                )
            await asyncio.sleep(poll_s)
            poll_s = min(MAX_POLL_S, poll_s * 2)

    async def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = await send(
            self._client,
            self._service,
            method,
            self._base_url + path,
            headers=self._headers,
            **kwargs,
        )
        check_status(
            self._service,
            response.status_code,
            response.headers.get("Retry-After"),
            response.text,
            datetime.now(UTC),
        )
        try:
            answer = response.json()
        except ValueError:
            raise FailedAttempt(f"{self._service} answered {path} with no JSON") from None
        if not isinstance(answer, dict):
            raise FailedAttempt(f"{self._service} answered {path} with {_excerpt(answer)}")
        return answer

    async def aclose(self) -> None:
        await self._client.aclose()


def _excerpt(value: object) -> str:
    return str(value)[:BODY_EXCERPT_CHARS]
