"""The two ways a request reaches the server, behind one `call`: HTTP (httpx) and gRPC (grpc.aio).

Each turns the server's error answers into RewardServerError with the same code and HTTP status (over gRPC the
server's `arbiter-error` trailer names it), so the client's retry logic does not care which one carried the call.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Protocol, TypeVar
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel

from arbiter.clients import protocol as wire
from arbiter.clients.errors import RewardServerError
from arbiter.clients.operations import Operation

if TYPE_CHECKING:  # grpc is imported when a gRPC transport is opened: an HTTP-only client runs without it
    import grpc

M = TypeVar("M", bound=BaseModel)

# gRPC status -> the HTTP status of the same meaning, for answers without the server's trailer (gRPC's own failures).
GRPC_TO_HTTP = {
    "INVALID_ARGUMENT": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "FAILED_PRECONDITION": 409,
    "RESOURCE_EXHAUSTED": 429,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
}


class Transport(Protocol):
    """Sends one operation of the table (clients/operations.py) the way its face declares it."""

    async def call(
        self, operation: Operation, request: BaseModel | None, response_type: type[M], timeout: float
    ) -> M: ...

    async def aclose(self) -> None: ...


class HttpTransport:
    def __init__(self, url: str, headers: dict[str, str] | None = None, max_connections: int = 64) -> None:
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._http = httpx.AsyncClient(base_url=url, headers=headers, limits=limits)

    async def call(self, operation: Operation, request: BaseModel | None, response_type: type[M], timeout: float) -> M:
        assert operation.method is not None, f"{operation.name} has no HTTP route"
        body = request.model_dump(exclude_none=True) if request is not None else None
        try:
            response = await self._http.request(operation.method, operation.url(), json=body, timeout=timeout)
        except httpx.TimeoutException as exc:
            raise RewardServerError(None, "deadline_exceeded", f"no answer in {timeout} s ({exc!r})") from exc
        except httpx.TransportError as exc:
            raise RewardServerError(None, "unavailable", f"cannot reach {self._http.base_url}: {exc!r}") from exc
        if response.status_code >= 400:
            raise http_error(response)
        return response_type.model_validate_json(response.content)

    async def aclose(self) -> None:
        await self._http.aclose()


class GrpcTransport:
    """`grpc://host:port` (plaintext) or `grpcs://host:port` (TLS with the system roots)."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        import grpc

        from arbiter.clients.v1 import reward_pb2_grpc

        parts = urlsplit(url)
        target = parts.netloc
        options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        if parts.scheme == "grpcs":
            self._channel = grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(), options=options)
        else:
            self._channel = grpc.aio.insecure_channel(target, options=options)
        self._stub = reward_pb2_grpc.RewardServiceStub(self._channel)
        self._metadata = tuple((k.lower(), v) for k, v in (headers or {}).items())

    async def call(self, operation: Operation, request: BaseModel | None, response_type: type[M], timeout: float) -> M:
        import grpc
        from google.protobuf import message_factory

        from arbiter.clients import grpc_codec
        from arbiter.clients.v1 import reward_pb2 as pb

        assert operation.rpc is not None, f"{operation.name} has no RPC"
        name = operation.rpc.rsplit("/", 1)[1]
        rpc = getattr(self._stub, name)
        if request is None:  # an RPC without arguments still sends its (empty) request message
            described = pb.DESCRIPTOR.services_by_name["RewardService"].methods_by_name[name].input_type
            message = message_factory.GetMessageClass(described)()
        else:
            message = grpc_codec.to_proto(request)
        try:
            answer = await rpc(message, timeout=timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            raise grpc_error(exc) from exc
        return grpc_codec.from_proto(answer, response_type)

    async def aclose(self) -> None:
        await self._channel.close()


def http_error(response: httpx.Response) -> RewardServerError:
    """An HTTP error answer as RewardServerError: the server's JSON error body when it has one."""
    retry_after = response.headers.get("retry-after")
    request_id = response.headers.get("x-request-id")
    try:
        error = wire.ErrorBody.model_validate_json(response.content).error
        code, message, details = error.code, error.message, error.details
        request_id = error.request_id or request_id
    except ValueError:  # not our JSON (a proxy in between, say)
        code, message, details = f"http_{response.status_code}", response.text[:500], None
    if response.status_code == 503 and code.startswith("http_"):
        code = "unavailable"
    wait = float(retry_after) if retry_after else None
    return RewardServerError(response.status_code, code, message, details, wait, request_id)


def grpc_error(exc: grpc.aio.AioRpcError) -> RewardServerError:
    """An AioRpcError as RewardServerError: the server's JSON error from the trailing metadata when present."""
    status = exc.code().name
    trailing = {str(k): str(v) for k, v in exc.trailing_metadata() or ()}
    retry_after = float(trailing["retry-after"]) if "retry-after" in trailing else None
    http_status = GRPC_TO_HTTP.get(status, 500)
    if "arbiter-error" in trailing:
        error = wire.ErrorBody.model_validate(json.loads(trailing["arbiter-error"])).error
        code, message, details, request_id = error.code, error.message, error.details, error.request_id
        # gRPC has fewer statuses than HTTP (413 and 400 are both INVALID_ARGUMENT): the server's own word wins.
        http_status = error.status or http_status
    else:  # gRPC's own failures: connection refused, deadline, message too large, ...
        code = {"UNAVAILABLE": "unavailable", "DEADLINE_EXCEEDED": "deadline_exceeded"}.get(status, status.lower())
        message, details, request_id = exc.details() or status, None, None
    return RewardServerError(http_status, code, message, details, retry_after, request_id)


def open_transport(url: str, headers: dict[str, str] | None = None, max_connections: int = 64) -> Transport:
    scheme = urlsplit(url).scheme
    if scheme in ("http", "https"):
        return HttpTransport(url, headers, max_connections)
    if scheme in ("grpc", "grpcs"):
        return GrpcTransport(url, headers)
    raise ValueError(f"unsupported URL {url!r}: use http(s)://host:port or grpc(s)://host:port")
