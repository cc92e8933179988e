"""The LightRAG harness itself: the real LightRAG Server, fed by the stand-in, takes a text to
`processed`, enforces its API key, and keeps its documents across a restart."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.lightrag_documents import (
    api_headers,
    insert_text,
    processed_file_paths,
    wait_for_track_status,
)
from tests.support.lightrag_server import LightRAGServer, lightrag_with_standin
from tests.support.openai_standin import OpenAIStandin

pytestmark = pytest.mark.lightrag

PROCESSED_WITHIN_S = 60.0


@pytest.fixture(scope="module")
def lightrag(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LightRAGServer, OpenAIStandin]]:
    with lightrag_with_standin(tmp_path_factory.mktemp("lightrag")) as running:
        yield running


def test_a_text_is_processed_and_listed_under_the_basename_of_its_source(
    lightrag: tuple[LightRAGServer, OpenAIStandin],
) -> None:
    server, standin = lightrag
    text = "Ada Lovelace wrote the first program for the Analytical Engine of Charles Babbage."

    response = insert_text(server.base_url, server.api_key, text, "job1/chunk1")
    assert response.status_code == 200, response.text
    track_id = response.json()["track_id"]

    done = wait_for_track_status(server.base_url, server.api_key, track_id, PROCESSED_WITHIN_S)
    [document] = done["documents"]
    assert document["status"] == "processed", document
    assert document["chunks_count"] == 1
    # LightRAG keeps only the basename of a file_source: "job1/chunk1" and "job2/chunk1" are
    # the same document name to it.
    assert document["file_path"] == "chunk1"
    assert "chunk1" in processed_file_paths(server.base_url, server.api_key)
    assert standin.state.chat_requests > 0 and standin.state.embedding_requests > 0


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "not-the-key"}], ids=["none", "wrong"])
def test_a_request_without_the_api_key_is_refused(
    lightrag: tuple[LightRAGServer, OpenAIStandin], headers: dict[str, str]
) -> None:
    server, _ = lightrag
    response = httpx.post(
        f"{server.base_url}/documents/text",
        json={"text": "Refused text.", "file_source": "job1/refused"},
        headers=headers,
        timeout=10,
    )
    assert response.status_code in (401, 403)
    assert "API Key" in response.json()["detail"]


def test_documents_survive_a_restart_on_the_same_address(
    lightrag: tuple[LightRAGServer, OpenAIStandin],
) -> None:
    server, _ = lightrag
    text = "Grace Hopper built the first compiler for the Harvard Mark computers."
    response = insert_text(server.base_url, server.api_key, text, "job1/restart")
    wait_for_track_status(server.base_url, server.api_key, response.json()["track_id"])
    base_url = server.base_url

    server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base_url}/health", timeout=2)
    server.start()

    assert server.base_url == base_url
    assert "restart" in processed_file_paths(base_url, server.api_key)
    health = httpx.get(f"{base_url}/health", headers=api_headers(server.api_key), timeout=5)
    assert health.json()["core_version"] == "1.5.7"
