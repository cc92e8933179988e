"""The AG-UI domain's errors, under one root."""

from __future__ import annotations


class AguiError(Exception):
    """The root of every error the AG-UI domain raises on purpose."""
