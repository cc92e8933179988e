"""The OpenAI stand-in, with an LLM that can be told to refuse while embeddings still work.

`OpenAIStandin.state.fail_status` fails every route, so LightRAG can then neither process a
document nor delete one (a delete re-embeds). A document that fails for its own sake is the
LLM refusing it: `state.refuse_chat_status` does only that.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Any

from tests.support.openai_standin import (
    OpenAIStandin,
    StandinHandler,
    StandinHTTPServer,
    StandinState,
    error_body,
)


@dataclass
class RefusingState(StandinState):
    refuse_chat_status: int | None = None


class _RefusingHandler(StandinHandler):
    def answer_chat(self, request: dict[str, Any]) -> None:
        status = getattr(self.server.state, "refuse_chat_status", None)
        if status is not None:
            self.send_json(status, error_body("The stand-in LLM refuses this text."))
            return
        super().answer_chat(request)


class _RefusingServer(StandinHTTPServer):
    def __init__(self, state: StandinState) -> None:
        ThreadingHTTPServer.__init__(self, ("127.0.0.1", 0), _RefusingHandler)
        self.state = state


class RefusingLlmStandin(OpenAIStandin):
    """OpenAIStandin whose `state.refuse_chat_status` fails chat completions only."""

    def __init__(self, api_key: str = "standin-key", embedding_dim: int = 64) -> None:
        super().__init__(api_key, embedding_dim)
        self.state: RefusingState = RefusingState(api_key=api_key, embedding_dim=embedding_dim)

    def start(self) -> None:
        self._server = _RefusingServer(self.state)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="openai-standin", daemon=True
        )
        self._thread.start()
