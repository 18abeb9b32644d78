"""One set of errors for both faces: each knows its HTTP status, its gRPC status name and its error code."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# A bug's answer on both faces: what went wrong is in the log, under the request id the answer carries.
INTERNAL_MESSAGE = "internal error; the server's log has it under this request id"


class ArbiterError(Exception):
    status = 500
    grpc_status = "INTERNAL"
    code = "internal"

    def __init__(self, message: str, details: object | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message, self.details, self.retry_after = message, details, retry_after


def error_body(error: ArbiterError, request_id: str | None) -> dict[str, Any]:
    """The one error body of both faces (HTTP answers, the gRPC `arbiter-error` trailer): {error: {code, message,
    details?, request_id, status}}. `status` is the HTTP one, so a gRPC client reports what an HTTP client would.
    Its schema is the wire's ErrorBody (clients/protocol.py), which this bottom layer cannot import; a test holds
    the two together."""
    detail = {"code": error.code, "message": error.message, "details": error.details, "request_id": request_id}
    return {"error": {k: v for k, v in detail.items() if v is not None} | {"status": error.status}}


def validation_details(errors: Sequence[Any]) -> list[dict[str, object]]:
    """pydantic's errors as both faces report them: where, what, which kind."""
    return [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]


class InvalidInput(ArbiterError):
    status, grpc_status, code = 400, "INVALID_ARGUMENT", "invalid_input"


class InvalidRequest(ArbiterError):
    """An HTTP body that does not match the route's schema (the gRPC face reports the same as InvalidInput)."""

    status, grpc_status, code = 422, "INVALID_ARGUMENT", "invalid_request"


class ModelNotFound(ArbiterError):
    status, grpc_status, code = 404, "NOT_FOUND", "model_not_found"


class TooLarge(ArbiterError):
    status, grpc_status, code = 413, "INVALID_ARGUMENT", "too_large"


class QueueFull(ArbiterError):
    status, grpc_status, code = 429, "RESOURCE_EXHAUSTED", "queue_full"


class NotReady(ArbiterError):
    status, grpc_status, code = 503, "UNAVAILABLE", "not_ready"


class ShuttingDown(ArbiterError):
    status, grpc_status, code = 503, "UNAVAILABLE", "shutting_down"


class NotFound(ArbiterError):
    """A named thing other than a model: a constitution or a principle."""

    status, grpc_status, code = 404, "NOT_FOUND", "not_found"


class JudgeOff(ArbiterError):
    status, grpc_status, code = 503, "UNAVAILABLE", "judge_off"


class JudgeBackendDown(ArbiterError):
    """The judge's model server failed or gave nothing usable: the gateway answer, not the client's fault."""

    status, grpc_status, code = 502, "UNAVAILABLE", "judge_backend_error"


class EngineDown(ArbiterError):
    """The engine that serves a remote model did not answer (or answered an error): this model only."""

    status, grpc_status, code = 502, "UNAVAILABLE", "engine_error"


class JudgeTimeout(ArbiterError):
    status, grpc_status, code = 504, "DEADLINE_EXCEEDED", "judge_timeout"


class Unauthorized(ArbiterError):
    status, grpc_status, code = 401, "UNAUTHENTICATED", "unauthorized"


class Forbidden(ArbiterError):
    status, grpc_status, code = 403, "PERMISSION_DENIED", "forbidden"


class Conflict(ArbiterError):
    """The request is well formed but clashes with what is stored (the code says how); retrying will not help."""

    status, grpc_status = 409, "FAILED_PRECONDITION"

    def __init__(self, code: str, message: str, details: object | None = None) -> None:
        super().__init__(message, details)
        self.code = code


class StoreUnavailable(ArbiterError):
    """The preference store's database cannot be reached; scoring is unaffected."""

    status, grpc_status, code = 503, "UNAVAILABLE", "store_unavailable"


class RateLimited(ArbiterError):
    """This caller's token bucket is empty; Retry-After says when it has one again."""

    status, grpc_status, code = 429, "RESOURCE_EXHAUSTED", "rate_limited"


class UnsupportedMediaType(ArbiterError):
    """A state-changing request that is not JSON (a browser's cross-site form post is never JSON)."""

    status, grpc_status, code = 415, "INVALID_ARGUMENT", "unsupported_media_type"
