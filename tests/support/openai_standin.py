"""A stand-in for the OpenAI-compatible LLM and embedding APIs LightRAG Server calls.

No model can be reached from the test machines, so this answers the two routes LightRAG's
`openai` bindings use, on a free loopback port, in a thread of the test process:

- `POST /v1/chat/completions`: entity-extraction rows in the format LightRAG 1.5.7's parser
  reads (`entity<|#|>name<|#|>type<|#|>description`, ending `<|COMPLETE|>`), naming the
  capitalised words of the chunk, so a document yields entities and its pipeline completes.
  Streaming (`"stream": true`) is answered as server-sent events, as OpenAI does.
- `POST /v1/embeddings`: deterministic vectors of the configured dimension, hashed from the
  text, as floats or as base64 float32 (the OpenAI client asks for base64 by default).

Plain `http.server` rather than an ASGI app: it needs nothing beyond the standard library,
and a test can make it fail (`fail_status`) or slow (`delay_s`) between two requests.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TUPLE_DELIMITER = "<|#|>"
COMPLETION_DELIMITER = "<|COMPLETE|>"
ENTITY_TYPE = "concept"
MAX_ENTITIES = 3
INPUT_TEXT = re.compile(r"---Input Text---\s*```\n(.*?)\n```", re.DOTALL)
CAPITALISED_WORD = re.compile(r"\b[A-Z][A-Za-z0-9]{2,}\b")


def extraction_answer(prompt: str) -> str:
    """Entity rows for the chunk quoted in an extraction prompt; only the delimiter otherwise.

    The gleaning ("continue") prompt quotes no input text, so it is told nothing was missed.
    """
    quoted = INPUT_TEXT.search(prompt)
    if quoted is None:
        return COMPLETION_DELIMITER
    names = list(dict.fromkeys(CAPITALISED_WORD.findall(quoted.group(1))))[:MAX_ENTITIES]
    names = names or ["Document"]
    rows = [
        TUPLE_DELIMITER.join(["entity", name, ENTITY_TYPE, f"{name} is named in the text."])
        for name in names
    ]
    if len(names) > 1:
        rows.append(
            TUPLE_DELIMITER.join(
                ["relation", names[0], names[1], "co-occurrence", "Both are named together."]
            )
        )
    return "\n".join([*rows, COMPLETION_DELIMITER])


def keywords_answer() -> str:
    """The JSON LightRAG asks for (response_format json_object) when it extracts query keywords."""
    return json.dumps({"high_level_keywords": ["document"], "low_level_keywords": ["text"]})


def embedding(text: str, dimension: int) -> list[float]:
    """A unit-free deterministic vector: the same text always gets the same one."""
    values: list[float] = []
    counter = 0
    while len(values) < dimension:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        values.extend((byte - 127.5) / 127.5 for byte in digest)
        counter += 1
    return values[:dimension]


def encode_embedding(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


@dataclass
class StandinState:
    """What a test may change or read while the stand-in runs."""

    api_key: str
    embedding_dim: int
    fail_status: int | None = None
    delay_s: float = 0.0
    chat_requests: int = 0
    embedding_requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class StandinHandler(BaseHTTPRequestHandler):
    server: StandinHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: LightRAG's own log says what it asked."""

    def do_POST(self) -> None:
        state = self.server.state
        if self.headers.get("Authorization") != f"Bearer {state.api_key}":
            self.send_json(HTTPStatus.UNAUTHORIZED, error_body("Incorrect API key provided."))
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            request = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            self.send_json(HTTPStatus.BAD_REQUEST, error_body("The body is not JSON."))
            return
        time.sleep(state.delay_s)
        if state.fail_status is not None:
            self.send_json(state.fail_status, error_body("The stand-in was told to fail."))
            return
        if self.path == "/v1/chat/completions":
            with state.lock:
                state.chat_requests += 1
            self.answer_chat(request)
        elif self.path == "/v1/embeddings":
            with state.lock:
                state.embedding_requests += 1
            self.answer_embeddings(request, state.embedding_dim)
        else:
            self.send_json(HTTPStatus.NOT_FOUND, error_body(f"No route {self.path}."))

    def answer_chat(self, request: dict[str, Any]) -> None:
        prompt = "\n".join(str(message.get("content", "")) for message in request["messages"])
        wants_json = (request.get("response_format") or {}).get("type") == "json_object"
        content = keywords_answer() if wants_json else extraction_answer(prompt)
        model = request.get("model", "standin")
        if request.get("stream"):
            self.stream_chat(content, model)
        else:
            self.send_json(HTTPStatus.OK, chat_completion(content, model))

    def stream_chat(self, content: str, model: str) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        deltas = [({"role": "assistant", "content": content}, None), ({}, "stop")]
        for delta, finish_reason in deltas:
            chunk = {
                "id": "chatcmpl-standin",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")

    def answer_embeddings(self, request: dict[str, Any], default_dim: int) -> None:
        texts = request["input"]
        texts = [texts] if isinstance(texts, str) else texts
        dimension = int(request.get("dimensions") or default_dim)
        encoding_format = request.get("encoding_format") or "float"
        data = [
            {
                "object": "embedding",
                "index": index,
                "embedding": encode_embedding(embedding(text, dimension), encoding_format),
            }
            for index, text in enumerate(texts)
        ]
        tokens = sum(len(text.split()) for text in texts)
        body = {
            "object": "list",
            "data": data,
            "model": request.get("model", "standin"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        self.send_json(HTTPStatus.OK, body)

    def send_json(self, status: int, body: dict[str, Any]) -> None:
        encoded = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(encoded)))
        self.end_headers()
        self.wfile.write(encoded)


def chat_completion(content: str, model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-standin",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def error_body(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "standin_error", "code": None}}


class StandinHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: StandinState) -> None:
        super().__init__(("127.0.0.1", 0), StandinHandler)
        self.state = state

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet when the client went away (LightRAG stopped mid-call): tests do that on
        purpose. Anything else is the stand-in's own bug and is printed."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class OpenAIStandin:
    """The stand-in on a free loopback port, served by a thread until `stop()`.

    `fail_status` (e.g. 500, or 400 which LightRAG does not retry) makes every request fail;
    `delay_s` holds every answer back, so a test can catch a document mid-pipeline.
    """

    def __init__(self, api_key: str = "standin-key", embedding_dim: int = 64) -> None:
        self.state = StandinState(api_key=api_key, embedding_dim=embedding_dim)
        self._server: StandinHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def api_key(self) -> str:
        return self.state.api_key

    @property
    def embedding_dim(self) -> int:
        return self.state.embedding_dim

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, ending in /v1, for LightRAG's *_BINDING_HOST."""
        if self._server is None:
            raise RuntimeError("the stand-in is not running")
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> None:
        self._server = StandinHTTPServer(self.state)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="openai-standin", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> OpenAIStandin:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
