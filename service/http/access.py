"""The HTTP face's access check: keys, scopes and rate limits before any work."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as Scope_

from arbiter.errors import ArbiterError
from arbiter.service import logs
from arbiter.service.access.control import AccessControl, bearer_token
from arbiter.service.access.keys import Scope
from arbiter.service.http.errors import arbiter_error_response

OPEN_PREFIXES = ("/healthz", "/readyz", "/metrics", "/docs", "/redoc", "/openapi.json", "/annotate")
ANNOTATION = "/v1/annotation/"


def scope_of(path: str) -> Scope | None:
    """What a route needs; None for the open ones (probes, metrics, API docs, the annotation pages' files)."""
    if path.startswith(OPEN_PREFIXES):
        return None
    if path.startswith("/v1/admin/"):
        return "admin"
    if path.startswith(("/v1/judge", "/v1/constitutions")):
        return "judge"
    if path.startswith(ANNOTATION):
        return "annotate"
    return "score"


class AccessCheck:
    """401/403/429 before any work. Annotation routes also take annotators' own keys (the preference store checks
    those), so there an unknown key is passed on, rate-limited under its hash."""

    def __init__(self, app: ASGIApp, access: AccessControl) -> None:
        self.app, self.access = app, access

    async def __call__(self, scope: Scope_, receive: Receive, send: Send) -> None:
        needed = scope_of(scope["path"]) if scope["type"] == "http" else None
        if needed is None or scope["method"] == "OPTIONS":  # CORS preflights carry no key
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        bearer = bearer_token(headers.get(b"authorization", b"").decode("latin-1"))
        client = (scope.get("client") or ("unknown", 0))[0]
        try:
            if needed == "annotate" and self.access.key(bearer) is None:
                await self.access.limit(f"annotator:{logs.fingerprint(bearer or client)}", None)
            else:
                await self.access.admit(bearer, needed, client)
        except ArbiterError as error:
            await arbiter_error_response(error)(scope, receive, send)
            return
        await self.app(scope, receive, send)
