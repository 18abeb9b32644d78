"""Every HTTP error answer: the body arbiter.errors.error_body builds, with the status the error class names."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from arbiter.errors import ArbiterError, InvalidRequest, error_body, validation_details
from arbiter.service import logs


class RouterError(ArbiterError):
    """What Starlette's router answers by itself: 404 for no such route, 405 for a method the route lacks."""

    def __init__(self, exc: HTTPException) -> None:
        super().__init__(str(exc.detail))
        self.status, self.code = exc.status_code, f"http_{exc.status_code}"


def arbiter_error_response(exc: ArbiterError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """An ArbiterError as the HTTP face answers it, from a route or from a middleware (JSONResponse is an ASGI app).
    The request id is the one RequestContext set for this request."""
    headers = dict(headers or {})
    if exc.retry_after:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    if exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(error_body(exc, logs.request_id.get()), status_code=exc.status, headers=headers or None)


def install(app: FastAPI) -> None:
    """Handlers for what routes raise; anything else is a bug, answered by RequestContext (middleware.py)."""

    @app.exception_handler(ArbiterError)
    async def arbiter_error(_: Request, exc: ArbiterError) -> JSONResponse:
        return arbiter_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = validation_details(exc.errors())
        return arbiter_error_response(InvalidRequest("the request body does not match the schema", details))

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return arbiter_error_response(RouterError(exc), exc.headers)
