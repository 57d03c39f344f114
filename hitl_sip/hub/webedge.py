"""The browser edge: the headers every public answer carries.

- ``Content-Security-Policy``: scripts, styles, images, fonts and connections from the
  hub's own origin only, no inline script at all; the dashboard's ``index.html`` adds a
  per-answer nonce that Angular puts on the ``<style>`` elements it creates
  (``ngCspNonce``); no framing (``frame-ancestors 'none'``), no plugins, no base or form
  targets elsewhere.
- ``Strict-Transport-Security`` when the hub speaks HTTPS (``http.tls``).
- ``Referrer-Policy: no-referrer``, ``X-Content-Type-Options: nosniff``,
  ``X-Frame-Options: DENY`` (browsers without CSP 2), and a ``Permissions-Policy`` that lets
  the page use the microphone and nothing else of the kind.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CSP_HEADER = "Content-Security-Policy"


def csp(nonce: str | None = None) -> str:
    style = "'self'" + (f" 'nonce-{nonce}'" if nonce else "")
    return "; ".join([
        "default-src 'self'", "script-src 'self'", f"style-src {style}",
        "img-src 'self' data:", "font-src 'self'", "connect-src 'self'",
        "media-src 'self' blob:", "object-src 'none'", "base-uri 'self'",
        "form-action 'self'", "frame-ancestors 'none'",
    ])


HEADERS = {
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Permissions-Policy": "microphone=(self), camera=(), geolocation=(), payment=()",
}
HSTS = "max-age=31536000"


def same_origin(*, tls: bool) -> Callable[[str | None, dict[str, Any]], bool]:
    """Socket.IO's Origin check when ``api.agent_origins`` is empty: a browser page may
    connect only from the hub's own origin — the scheme the hub speaks (or the one a
    reverse proxy says it terminated, ``X-Forwarded-Proto``/``-Host``) with the Host the
    page reached. Clients that send no Origin (engines, scripts) are not browsers: let in
    (they still need a token or an API key)."""
    scheme = "https" if tls else "http"

    def allowed(origin: str | None, environ: dict[str, Any]) -> bool:
        if origin is None:
            return True
        host = environ.get("HTTP_HOST", "")
        own = {f"{scheme}://{host}"}
        proto, forwarded = environ.get("HTTP_X_FORWARDED_PROTO"), environ.get(
            "HTTP_X_FORWARDED_HOST")
        if proto or forwarded:
            own.add(f"{(proto or scheme).split(',')[0].strip()}://"
                    f"{(forwarded or host).split(',')[0].strip()}")
        return origin in own
    return allowed


def edge_headers(*, hsts: bool) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as e:  # 404s and the like carry the headers too
            response = e
            _add(response, hsts)
            raise
        _add(response, hsts)
        return response
    return middleware


def _add(response: web.StreamResponse, hsts: bool) -> None:
    if response.prepared:  # a WebSocket or a stream already sent its headers
        return
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault(CSP_HEADER, csp())
    if hsts:
        response.headers.setdefault("Strict-Transport-Security", HSTS)
