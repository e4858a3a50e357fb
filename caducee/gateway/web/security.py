"""HTTP security of the webmail: response headers on every page, and the checks on every POST.

Headers (an ASGI middleware, so that error pages and static files get them too):

* ``Content-Security-Policy``: ``default-src 'self'`` with no inline script or style, no
  plugin, no ``<base>``, forms only to ourselves, never framed (``frame-ancestors 'none'``);
  a route that sets its own policy keeps it (the sandboxed HTML body, the downloads);
* ``X-Frame-Options: DENY`` (``SAMEORIGIN`` for the framed HTML body), ``Referrer-Policy:
  no-referrer``, ``X-Content-Type-Options: nosniff``, ``Cross-Origin-Opener-Policy``,
  ``Permissions-Policy``, ``Cache-Control: no-store`` on pages (health data), and
  ``Strict-Transport-Security`` when served over HTTPS.

A POST must come from our own pages: when the browser names its ``Origin`` it must be ours
(:func:`same_origin`), and the form must carry the CSRF token of the session (synchronizer
pattern, :func:`caducee.gateway.web.sessions.csrf_matches`) or, before sign-in, the token
of the sign-in cookie (double submit).
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "frame-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
SANDBOX_POLICY = "sandbox; default-src 'none'; frame-ancestors 'self'"
"""The HTML body of a message: no script, no origin, nothing loaded, framed by us only."""
DOWNLOAD_POLICY = "sandbox; default-src 'none'; frame-ancestors 'none'"

_FIXED = {
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
}


class SecurityHeaders:
    """Adds the webmail's security headers to every response of the wrapped application."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = scope.get("scheme") == "https"
        static = str(scope.get("path", "")).startswith("/webmail/static/")

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                policy = headers.get("content-security-policy")
                if policy is None:
                    headers["Content-Security-Policy"] = PAGE_POLICY
                    policy = PAGE_POLICY
                framed = "frame-ancestors 'self'" in policy
                headers["X-Frame-Options"] = "SAMEORIGIN" if framed else "DENY"
                for name, value in _FIXED.items():
                    headers[name] = value
                if not static and "cache-control" not in headers:
                    headers["Cache-Control"] = "no-store"
                if https:
                    headers["Strict-Transport-Security"] = "max-age=31536000"
            await send(message)

        await self.app(scope, receive, sending)


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another site (CSRF defence).

    ``Sec-Fetch-Site`` says it for current browsers. ``Origin`` is compared when it names an
    origin; with ``Referrer-Policy: no-referrer`` browsers send ``Origin: null`` for our own
    forms, so ``null`` proves nothing either way and the CSRF token decides.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return True
    host = request.headers.get("host", "")
    return origin in (f"https://{host}", f"http://{host}")
