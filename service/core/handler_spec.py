"""The forms of SHIELD_TASK_HANDLER (stack key ``taskHandler``), parsed once; pure, no imports.

Each form names who does the work, so no configuration acks a task that nobody processed:
``http:<url>``, ``lightrag:<base-url>``, ``python:<module>:<callable>`` (or the original
``<module>:<callable>``), and ``log-and-ack``, which only logs and says so in its name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

ACCEPTED_FORMS = (
    "http:<url>, lightrag:<base-url>, python:<module>:<callable> (or <module>:<callable>),"
    " or log-and-ack"
)
LOG_AND_ACK = "log-and-ack"
_PYTHON_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class HandlerKind(StrEnum):
    HTTP = "http"
    LIGHTRAG = "lightrag"
    PYTHON = "python"
    LOG_AND_ACK = "log-and-ack"


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """A parsed handler setting: its kind and its target (a URL or ``module:callable``)."""

    kind: HandlerKind
    target: str


def parse_handler_spec(spec: str) -> HandlerSpec:
    """Parse a handler setting, raising ValueError that lists the accepted forms."""
    spec = spec.strip()
    if spec == LOG_AND_ACK:
        return HandlerSpec(HandlerKind.LOG_AND_ACK, "")
    prefix, _, rest = spec.partition(":")
    if prefix in (HandlerKind.HTTP, HandlerKind.LIGHTRAG):
        _check_url(rest)
        return HandlerSpec(HandlerKind(prefix), rest.rstrip("/") if prefix == "lightrag" else rest)
    target = rest if prefix == HandlerKind.PYTHON else spec
    if _PYTHON_TARGET.match(target):
        return HandlerSpec(HandlerKind.PYTHON, target)
    raise ValueError(f"{spec!r} is not a handler; use {ACCEPTED_FORMS}")


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
