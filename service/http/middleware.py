"""Small ASGI middlewares: request ids, metrics, access (keys, scopes, rate limits) and the body-size limit."""

from __future__ import annotations

import json
import logging
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as Scope_

from arbiter.service import logs
from arbiter.service.access.control import AccessControl, bearer_token
from arbiter.service.access.keys import Scope
from arbiter.service.errors import ArbiterError
from arbiter.service.http.errors import arbiter_error_response
from arbiter.service.metrics import Metrics

log = logging.getLogger("arbiter.http")
QUIET_ROUTES = {"/healthz", "/readyz", "/metrics"}  # probes and scrapes would drown the log


class RequestContext:
    """Takes X-Request-ID (or makes one), echoes it back, and counts and times the request by route."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope_, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")[:128]
        rid = given or uuid.uuid4().hex
        token = logs.request_id.set(rid)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", rid.encode("latin-1")))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", "unmatched")
            seconds = time.perf_counter() - started
            self.metrics.requests.labels(name, str(status)).inc()
            self.metrics.latency.labels(name).observe(seconds)
            if name not in QUIET_ROUTES:
                log.info("request", extra={"route": name, "status": status, "ms": round(1e3 * seconds, 2)})
            logs.request_id.reset(token)


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


class BodyLimit:
    """413 for bodies over the limit, by Content-Length up front or by counting a streamed body."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope_, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _too_large(send, self.max_bytes)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _BodyTooLarge
            return message

        try:
            await self.app(scope, counting_receive, send)
        except _BodyTooLarge:
            await _too_large(send, self.max_bytes)


class _BodyTooLarge(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps({"error": {"code": "too_large", "message": f"request body over {limit} bytes"}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
