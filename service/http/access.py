"""The HTTP face's way in: the declared operation of every request (clients/operations.py), its key, scope and rate
limit, and the browser-facing checks that keep a loopback server from being driven by any page open on that
machine. Refusals come before any work, as the same JSON error bodies every route answers with."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as Scope_

from arbiter.clients.operations import http_operation
from arbiter.errors import ArbiterError, Forbidden, InvalidInput, UnsupportedMediaType
from arbiter.service.access.control import AccessControl, bearer_token
from arbiter.service.http.errors import arbiter_error_response

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def request_host(header: str) -> str:
    """The host of a Host header, without its port ([::1]:8000 is ::1)."""
    if header.startswith("["):
        return header[1:].partition("]")[0].lower()
    return header.rpartition(":")[0].lower() if header.count(":") == 1 else header.lower()


def is_json(content_type: str) -> bool:
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class AccessCheck:
    """Host (with auth off), media type, then key, scope and rate limit. The principal it admits rides on the ASGI
    scope (`state.principal`) into the routes, which hand it to the runtime."""

    def __init__(self, app: ASGIApp, access: AccessControl, allowed_hosts: list[str]) -> None:
        self.app, self.access = app, access
        self.allowed_hosts = {h.lower() for h in (*LOOPBACK_HOSTS, *allowed_hosts)}

    async def __call__(self, scope: Scope_, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS":  # CORS preflights carry no key
            await self.app(scope, receive, send)
            return
        try:
            scope.setdefault("state", {})["principal"] = await self._admit(scope)
        except ArbiterError as error:
            await arbiter_error_response(error)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _admit(self, scope: Scope_) -> object:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if not self.access.enabled and request_host(headers.get("host", "")) not in self.allowed_hosts:
            # A DNS-rebinding page reaches a loopback server under its own host name: refuse any other name.
            raise InvalidInput(
                f"host {headers.get('host', '')!r} is not served here; with auth off only loopback names and "
                "allowed_hosts are",
            )
        method, path = scope["method"], scope["path"]
        operation = http_operation(method, path)
        if operation is None:
            if self.access.enabled:
                raise Forbidden(f"{method} {path} is not a declared operation")
            return None  # with auth off the router answers (404, 405) as it would anyway
        if method in STATE_CHANGING and not is_json(headers.get("content-type", "")):
            bodiless = headers.get("content-length", "0") == "0" and "transfer-encoding" not in headers
            if not bodiless or "origin" in headers:  # a browser's cross-site form or beacon: never JSON
                raise UnsupportedMediaType(f"{method} {path} takes application/json")
        client = (scope.get("client") or ("unknown", 0))[0]
        return await self.access.admit(operation, bearer_token(headers.get("authorization")), client)
