"""Errors on the gRPC face: the status each error names, and the HTTP face's JSON body (arbiter.errors.error_body)
in trailing metadata."""

from __future__ import annotations

import json
import logging

import grpc
from pydantic import ValidationError

from arbiter.clients.v1 import reward_pb2 as pb
from arbiter.errors import INTERNAL_MESSAGE, ArbiterError, InvalidInput, error_body, validation_details
from arbiter.service import logs

log = logging.getLogger("arbiter.grpc")


def as_arbiter_error(exc: Exception) -> ArbiterError:
    if isinstance(exc, ArbiterError):
        return exc
    if isinstance(exc, ValidationError):
        return InvalidInput("the request does not match the schema", validation_details(exc.errors()))
    log.exception("unexpected error", exc_info=exc)
    return ArbiterError(INTERNAL_MESSAGE)


async def abort(context: grpc.aio.ServicerContext, error: ArbiterError) -> None:
    """Ends the call with the error's status; the HTTP face's JSON body travels in the trailing metadata, with the
    request id of the call (set by the servicer) and the HTTP status, which the client reports on both faces."""
    trailing = [("arbiter-error", json.dumps(error_body(error, logs.request_id.get())))]
    if error.retry_after:
        trailing.append(("retry-after", str(max(1, round(error.retry_after)))))
    context.set_trailing_metadata(tuple(trailing))
    await context.abort(getattr(grpc.StatusCode, error.grpc_status), error.message)


def stream_error(error: ArbiterError) -> pb.Error:
    """A ScoreStream message's error answer, from the same body (pb.Error has no request id or HTTP status)."""
    body = error_body(error, None)["error"]
    details = body.get("details")
    return pb.Error(
        code=body["code"],
        message=body["message"],
        details_json=json.dumps(details) if details is not None else "",
        grpc_status=error.grpc_status,
    )
