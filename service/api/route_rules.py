"""Every route's rules in one table: the scopes a token needs, and whether the body is JSON.

The auth middleware reads the scopes and the JSON-body middleware the body rule, before any
route runs. A route missing from the table needs ``admin``: a route added later without a
rule is closed, not open. Rules about *which* jobs or types a limited token may touch need the
request's content and live in the routes, through service.core.grants.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from service.core.grants import Scope

WEBSOCKET = "WEBSOCKET"


@dataclass(frozen=True, slots=True)
class RouteRule:
    method: str
    template: str
    # Every one is needed; none at all means any valid token.
    scopes: tuple[Scope, ...]
    json_body: bool = False
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        regex = re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(self.template))
        object.__setattr__(self, "pattern", re.compile(f"^{regex}$"))


RULES: tuple[RouteRule, ...] = (
    RouteRule("POST", "/events", (Scope.EVENTS_WRITE,), json_body=True),
    RouteRule("GET", "/events/stream", (Scope.EVENTS_READ,)),
    RouteRule(WEBSOCKET, "/events/ws", (Scope.EVENTS_READ,)),
    RouteRule("GET", "/events/stats", (Scope.EVENTS_READ,)),
    RouteRule("POST", "/tasks", (Scope.TASKS_WRITE,), json_body=True),
    RouteRule("GET", "/tasks/dead-letters", (Scope.DEAD_LETTERS,)),
    RouteRule("POST", "/tasks/dead-letters/{entry_id}/requeue", (Scope.DEAD_LETTERS,)),
    # The runId is the job: the route checks the token covers it.
    RouteRule("POST", "/agui/ingest", (Scope.JOBS_WRITE, Scope.EVENTS_READ), json_body=True),
    RouteRule("GET", "/metrics", (Scope.METRICS,)),
    RouteRule("POST", "/tokens", (Scope.ADMIN,), json_body=True),
    # The jobs API. A limited token sees only its jobs there (Grant.may_use_job / check_job).
    RouteRule("GET", "/jobs", (Scope.JOBS_READ,)),
    RouteRule("GET", "/jobs/{job_id}", (Scope.JOBS_READ,)),
    RouteRule("POST", "/jobs", (Scope.JOBS_WRITE,), json_body=True),
    RouteRule("DELETE", "/jobs/{job_id}", (Scope.JOBS_CANCEL,)),
    RouteRule("GET", "/docs", ()),
    RouteRule("GET", "/docs/oauth2-redirect", ()),
    RouteRule("GET", "/redoc", ()),
    RouteRule("GET", "/openapi.json", ()),
)
UNLISTED_SCOPES: tuple[Scope, ...] = (Scope.ADMIN,)


def rule_for(method: str, path: str) -> RouteRule | None:
    """The rule of a request, by method (HEAD as GET) and path; None when unlisted."""
    method = "GET" if method == "HEAD" else method
    for rule in RULES:
        if rule.method == method and rule.pattern.match(path):
            return rule
    return None


def required_scopes(method: str, path: str) -> tuple[Scope, ...]:
    """The scopes a request needs: its rule's, or admin for anything unlisted."""
    rule = rule_for(method, path)
    return rule.scopes if rule is not None else UNLISTED_SCOPES
