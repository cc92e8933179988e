"""Name patterns as the API spells them: ``J1`` is exactly J1, ``batch-*`` any name so prefixed.

One syntax for the ``types=`` filter, a token's ``types`` and its ``jobs``, so a pattern means
the same thing wherever it is written.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

WILDCARD = "*"


@dataclass(frozen=True, slots=True)
class NamePatterns:
    """Exact names and prefixes; a name matches when it is one or starts with one."""

    exact: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()

    @classmethod
    def parse(cls, patterns: Iterable[str]) -> NamePatterns:
        """Build from patterns such as ``a.b`` and ``ingestion.*``; blanks are skipped."""
        names = [name.strip() for name in patterns if name.strip()]
        prefixes = tuple(dict.fromkeys(name[:-1] for name in names if name.endswith(WILDCARD)))
        exact = frozenset(name for name in names if not name.endswith(WILDCARD))
        return cls(exact=exact, prefixes=prefixes)

    @property
    def empty(self) -> bool:
        return not self.exact and not self.prefixes

    def matches(self, name: str) -> bool:
        """True when the name is one of the exact names or starts with a prefix."""
        return name in self.exact or name.startswith(self.prefixes)
