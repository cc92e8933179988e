"""Reading LightRAG Server's document API from a test: what it holds, in what status.

These are the checks a test makes from the outside; the handler under test has its own client.
LightRAG 1.5.7 keys a text by the basename of its `file_source` ("job1/chunk1" is stored as
"chunk1"), so lookups here go by that stored `file_path`.
"""

from __future__ import annotations

from typing import Any

import httpx

from harness.waiting import wait_until

TERMINAL_STATUSES = frozenset({"processed", "failed"})


def api_headers(api_key: str) -> dict[str, str]:
    return {"X-API-Key": api_key}


def insert_text(base_url: str, api_key: str, text: str, file_source: str) -> httpx.Response:
    return httpx.post(
        f"{base_url}/documents/text",
        json={"text": text, "file_source": file_source},
        headers=api_headers(api_key),
        timeout=10,
    )


def track_status(base_url: str, api_key: str, track_id: str) -> dict[str, Any]:
    response = httpx.get(
        f"{base_url}/documents/track_status/{track_id}", headers=api_headers(api_key), timeout=10
    )
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def wait_for_track_status(
    base_url: str, api_key: str, track_id: str, timeout_s: float = 60.0, interval_s: float = 0.2
) -> dict[str, Any]:
    """Poll a track_id until every document under it is processed or failed; its last answer."""
    answers: list[dict[str, Any]] = []

    def done() -> dict[str, Any] | None:
        answers.append(track_status(base_url, api_key, track_id))
        statuses = {document["status"] for document in answers[-1]["documents"]}
        return answers[-1] if statuses and statuses <= TERMINAL_STATUSES else None

    body: dict[str, Any] = wait_until(
        done,
        timeout_s,
        interval_s=interval_s,
        describe=lambda: f"track {track_id} to be done; its last answer: {answers[-1]}",
    )
    return body


def documents_in_status(
    base_url: str, api_key: str, status: str, page_size: int = 200
) -> list[dict[str, Any]]:
    """Every document LightRAG holds in `status`, via POST /documents/paginated (1.5.7 has no
    GET /documents)."""
    documents: list[dict[str, Any]] = []
    page = 1
    while True:
        response = httpx.post(
            f"{base_url}/documents/paginated",
            json={"status_filters": [status], "page": page, "page_size": page_size},
            headers=api_headers(api_key),
            timeout=10,
        )
        response.raise_for_status()
        body = response.json()
        documents.extend(body["documents"])
        if not body["pagination"]["has_next"]:
            return documents
        page += 1


def processed_file_paths(base_url: str, api_key: str) -> set[str]:
    """The stored file_path of every processed document."""
    return {doc["file_path"] for doc in documents_in_status(base_url, api_key, "processed")}
