"""POST /tokens: an admin mints a scoped token, e.g. a back end for a browser limited to one run.

Included by the app factory only when SHIELD_JWT_SECRET is set: without it there is nothing to
sign with, and no route (404).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from service.core.json_safety import JsonSafeModel
from service.core.tokens import MAX_TTL_S, TokenAuthority

router = APIRouter(prefix="/tokens", tags=["tokens"])


class TokenRequest(JsonSafeModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    scope: str = Field(min_length=1, description="space-separated scopes, e.g. 'events:read'")
    jobs: list[str] | None = Field(default=None, description="job ids or prefix* patterns")
    types: list[str] | None = Field(default=None, description="event types or prefix.* patterns")
    ttl_s: int = Field(gt=0, le=MAX_TTL_S)


class TokenMinted(BaseModel):
    token: str
    expires_at: str


def token_authority(request: Request) -> TokenAuthority:
    authority: TokenAuthority = request.app.state.token_authority
    return authority


@router.post("", status_code=201)
async def mint_token(body: TokenRequest, request: Request) -> TokenMinted:
    """A token with these scopes, limited to these jobs and event types, valid for ttl_s."""
    minted = token_authority(request).mint(body.scope, body.ttl_s, body.jobs, body.types)
    return TokenMinted(token=minted.token, expires_at=minted.expires_at.isoformat())
