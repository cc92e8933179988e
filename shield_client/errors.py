"""shield_client's errors, under one root class."""

from __future__ import annotations


class ClientError(Exception):
    """Root of shield_client's own errors."""


class ServiceGroup(ClientError):
    """A group the service reads itself: a caller reading it would take entries from it."""

    def __init__(self, group: str) -> None:
        super().__init__(
            f"group {group!r} is read by the service itself (its metrics collector or a "
            "front-end application's cursor); name a group of your own"
        )
        self.group = group
