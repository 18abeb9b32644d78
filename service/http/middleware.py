"""Small ASGI middlewares: request ids, metrics and the body-size limit (access checks: access.py)."""

from __future__ import annotations

import contextlib
import logging
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as Scope_

from arbiter.errors import INTERNAL_MESSAGE, ArbiterError, TooLarge
from arbiter.service import logs
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
        status, started = 500, False
        began = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                message.setdefault("headers", []).append((b"x-request-id", rid.encode("latin-1")))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # A bug. Answered here, inside the request id's context, rather than by Starlette's ServerErrorMiddleware
            # (outside every user middleware): that answer lacks the id and is followed by a re-raise, on which
            # uvicorn drops the connection.
            log.exception("unexpected error", extra={"route": getattr(scope.get("route"), "path", "unmatched")})
            if started:
                raise  # part of an answer is out: only closing the connection tells the client it is cut short
            await arbiter_error_response(ArbiterError(INTERNAL_MESSAGE))(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", "unmatched")
            seconds = time.perf_counter() - began
            self.metrics.requests.labels(name, str(status)).inc()
            self.metrics.latency.labels(name).observe(seconds)
            if name not in QUIET_ROUTES:
                log.info("request", extra={"route": name, "status": status, "ms": round(1e3 * seconds, 2)})
            logs.request_id.reset(token)


class BodyLimit:
    """413 for bodies over the limit, by Content-Length up front or by counting a streamed (chunked) body."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope_, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = TooLarge(f"request body over {self.max_bytes} bytes")
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await arbiter_error_response(too_large)(scope, receive, send)
            return
        seen, over, started = 0, False, False

        async def counting_receive() -> Message:
            nonlocal seen, over
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                over = True
                raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over and not started:
                return  # the app's own answer to a body cut short (FastAPI makes it a 400) gives way to the 413
            started = started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(_BodyTooLarge):  # out of a route that read the body itself: answered below
            await self.app(scope, counting_receive, guarded_send)
        if over and not started:
            await arbiter_error_response(too_large)(scope, receive, send)


class _BodyTooLarge(Exception):
    pass
