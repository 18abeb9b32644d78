"""Every error as {error: {code, message, details?}}, with the status the error class names."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from arbiter.clients.protocol import ErrorBody, ErrorDetail
from arbiter.errors import ArbiterError, validation_details

log = logging.getLogger("arbiter.http")


def error_response(status: int, code: str, message: str, details: object = None, headers: dict | None = None):  # noqa: ANN201
    body = ErrorBody(error=ErrorDetail(code=code, message=message, details=details))
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def arbiter_error_response(exc: ArbiterError) -> JSONResponse:
    """An ArbiterError as the HTTP face answers it, from a route or from a middleware (JSONResponse is an ASGI app)."""
    headers = {}
    if exc.retry_after:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    if exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return error_response(exc.status, exc.code, exc.message, exc.details, headers or None)


def install(app: FastAPI) -> None:
    @app.exception_handler(ArbiterError)
    async def arbiter_error(_: Request, exc: ArbiterError) -> JSONResponse:
        return arbiter_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = validation_details(exc.errors())
        return error_response(422, "invalid_request", "the request body does not match the schema", details)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, f"http_{exc.status_code}", str(exc.detail), headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return error_response(500, "internal", "internal error; the request id is in the logs")
