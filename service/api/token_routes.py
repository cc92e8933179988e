"""POST /tokens: an admin mints a scoped token, e.g. a back end for a browser limited to one run."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from service.core.json_safety import JsonSafeModel
from service.core.tokens import MAX_TTL_S, MintingUnavailable, TokenAuthority

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
    authority: TokenAuthority | None = getattr(request.app.state, "token_authority", None)
    if authority is None or not authority.can_mint:
        raise MintingUnavailable("minting needs SHIELD_JWT_SECRET")
    return authority


@router.post("", status_code=201)
async def mint_token(body: TokenRequest, request: Request) -> TokenMinted:
    """A token with these scopes, limited to these jobs and event types, valid for ttl_s."""
    try:
        minted = token_authority(request).mint(body.scope, body.ttl_s, body.jobs, body.types)
    except ValueError as error:
        raise HTTPException(status_code=422, detail=str(error)) from None
    return TokenMinted(token=minted.token, expires_at=minted.expires_at.isoformat())
