"""The fault tests use the service suite's settings and live API fixtures."""

from tests.service.conftest import api, settings

__all__ = ["api", "settings"]
