"""The live dashboard: one static page with its script and style, shipped in service/static/.

The files are served from a fixed list, so no request path ever reaches the filesystem. They
need no token (auth.OPEN_PATHS): the page asks for it and sends it with each data call. The
Content-Security-Policy allows this origin only, which keeps the page offline-capable and
free of CDN code, and forbids inline script, so a crafted event cannot run in the page.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, RedirectResponse

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
PAGE = "dashboard.html"
ASSETS = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Small files that change with each release: revalidate rather than serve a stale page.
    "Cache-Control": "no-cache",
}

router = APIRouter(tags=["dashboard"], include_in_schema=False)


@router.get("/")
async def root() -> RedirectResponse:
    """Send a browser at the bare address to the dashboard."""
    # Relative, so the redirect still lands right behind a proxy that mounts us under a prefix.
    return RedirectResponse("dashboard", status_code=307)


@router.get("/dashboard")
async def dashboard_page() -> FileResponse:
    """The dashboard page."""
    return FileResponse(STATIC_DIR / PAGE, media_type="text/html", headers=SECURITY_HEADERS)


@router.get("/dashboard/{name}")
async def dashboard_asset(name: str) -> FileResponse:
    """The page's script or style sheet."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(status_code=404, detail="no such dashboard file")
    return FileResponse(STATIC_DIR / name, media_type=media_type, headers=SECURITY_HEADERS)
