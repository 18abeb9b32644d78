"""Errors on the gRPC face: the status each error names, and the HTTP face's JSON body in trailing metadata."""

from __future__ import annotations

import json
import logging

import grpc
from pydantic import ValidationError

from arbiter.clients import protocol as wire
from arbiter.errors import ArbiterError, InvalidInput, validation_details

log = logging.getLogger("arbiter.grpc")


def as_arbiter_error(exc: Exception) -> ArbiterError:
    if isinstance(exc, ArbiterError):
        return exc
    if isinstance(exc, ValidationError):
        return InvalidInput("the request does not match the schema", validation_details(exc.errors()))
    log.exception("unexpected error", exc_info=exc)
    return ArbiterError("internal error; the request id is in the logs")


def error_body(error: ArbiterError) -> str:
    body = wire.ErrorBody(error=wire.ErrorDetail(code=error.code, message=error.message, details=error.details))
    return json.dumps(body.model_dump(exclude_none=True))


async def abort(context: grpc.aio.ServicerContext, error: ArbiterError) -> None:
    """Ends the call with the error's status; the HTTP face's JSON body travels in the trailing metadata."""
    trailing = [("arbiter-error", error_body(error))]
    if error.retry_after:
        trailing.append(("retry-after", str(max(1, round(error.retry_after)))))
    context.set_trailing_metadata(tuple(trailing))
    await context.abort(getattr(grpc.StatusCode, error.grpc_status), error.message)
