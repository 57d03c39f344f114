"""The agent dashboard's static files (the Angular build of ``agent-app/``), served at ``/``.

``http.dashboard_dir`` names the build output; ``make run`` / ``make test`` build it. Files
with a content hash in their name are cached for a year; ``index.html`` never is, so a new
build reaches agents on their next load, and each answer of it carries a fresh CSP nonce
(hitl_sip.hub.webedge). A missing build answers ``/`` with 503 and says how
to build it rather than a bare 404.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from aiohttp import web

from hitl_sip.hub.webedge import CSP_HEADER, csp

log = logging.getLogger(__name__)

DASHBOARD_DIR = web.AppKey("dashboard_dir", Path)

NOT_BUILT = (
    "The agent dashboard is not built. Run `make run` (it builds agent-app/), or "
    "`cd agent-app && npm install --no-save && npx ng build`, "
    "or point http.dashboard_dir at a build.\n"
)
IMMUTABLE = "public, max-age=31536000, immutable"
NONCE_MARK = "HITL_CSP_NONCE"  # agent-app/src/index.html: <app-root ngCspNonce="...">


async def dashboard(request: web.Request) -> web.StreamResponse:
    root = request.app[DASHBOARD_DIR]
    name = request.match_info.get("path", "") or "index.html"
    index = root / "index.html"
    if not index.is_file():
        return web.Response(status=503, text=NOT_BUILT)
    try:
        path = (root / name).resolve(strict=True)
    except (OSError, RuntimeError):
        raise web.HTTPNotFound(text="not found") from None
    if not path.is_relative_to(root) or not path.is_file():
        raise web.HTTPNotFound(text="not found")
    headers = {"X-Content-Type-Options": "nosniff"}
    if path == index.resolve():
        return _index(path)
    # Angular's build names every asset but index.html with a content hash (main-HASH.js)
    headers["Cache-Control"] = IMMUTABLE
    if path.name == "favicon.ico":
        headers["Cache-Control"] = "public, max-age=86400"
    return web.FileResponse(path, headers=headers)


def _index(path: Path) -> web.Response:
    """``index.html`` with a fresh CSP nonce for the styles Angular adds at run time."""
    nonce = secrets.token_urlsafe(18)
    html = path.read_text(encoding="utf-8").replace(NONCE_MARK, nonce)
    return web.Response(text=html, content_type="text/html", headers={
        "Cache-Control": "no-cache", CSP_HEADER: csp(nonce)})


def setup_dashboard(app: web.Application, directory: Path) -> None:
    """Register the catch-all route: call it after every other route (aiohttp matches in
    registration order, so ``/api``, ``/healthz`` and ``/socket.io`` keep precedence)."""
    app[DASHBOARD_DIR] = directory.resolve()
    if not (directory / "index.html").is_file():
        log.warning("no agent dashboard build at %s: / answers 503 until it is built", directory)
    app.router.add_get("/", dashboard)
    app.router.add_get("/{path:[^{}]+}", dashboard)
