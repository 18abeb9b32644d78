"""RewardService: each RPC decodes into the JSON face's request model, calls the shared runtime, and
encodes the answer. Errors end the call with their gRPC status and the JSON error body in trailing metadata."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import unquote

import grpc
from google.protobuf.message import Message
from pydantic import BaseModel

from arbiter.clients import grpc_codec
from arbiter.clients import operations as ops
from arbiter.clients import protocol as wire
from arbiter.clients.operations import Operation
from arbiter.clients.v1 import reward_pb2 as pb
from arbiter.clients.v1 import reward_pb2_grpc
from arbiter.errors import ArbiterError, Forbidden
from arbiter.service import logs
from arbiter.service.access.control import Principal, bearer_token
from arbiter.service.grpc.errors import abort, as_arbiter_error, stream_error
from arbiter.service.runtime.judging import require_judge
from arbiter.service.runtime.runtime import Runtime

log = logging.getLogger("arbiter.grpc")
SERVICE = ops.GRPC_SERVICE
P = TypeVar("P", bound=Message)


def peer_address(peer: str) -> str:
    """The caller's address without its port ("ipv4:10.0.0.7:5123" is 10.0.0.7), so that a new channel per call
    lands in the same rate-limit bucket."""
    kind, _, rest = unquote(peer).partition(":")
    if kind in ("ipv4", "ipv6"):
        return rest.rpartition(":")[0].strip("[]")
    return peer


class RewardServicer(reward_pb2_grpc.RewardServiceServicer):
    def __init__(self, runtime: Runtime, stream_in_flight: int) -> None:
        self.runtime, self.scoring, self.metrics = runtime, runtime.scoring, runtime.metrics
        self.stream_in_flight = stream_in_flight

    async def _unary(
        self,
        operation: Operation,
        message: Message,
        context: grpc.aio.ServicerContext,
        request_type: type[BaseModel] | None,
        handle: Callable[[Any, Principal], Awaitable[BaseModel]],
        response_type: type[P],
    ) -> P:
        """Request id, metrics and the log line as the HTTP middleware does them; errors as status + body."""
        route = operation.rpc or ""
        metadata = dict(context.invocation_metadata() or ())
        rid = str(metadata.get("x-request-id", ""))[:128] or uuid.uuid4().hex
        token = logs.request_id.set(rid)
        await context.send_initial_metadata((("x-request-id", rid),))
        started, status = time.perf_counter(), "OK"
        try:
            caller = await self._admit(operation, context)
            request = grpc_codec.from_proto(message, request_type) if request_type else None
            return grpc_codec.to_proto(await handle(request, caller), response_type)
        except asyncio.CancelledError:
            status = "CANCELLED"  # the client's deadline passed or it went away: its queued work is dropped
            raise
        except Exception as exc:
            error = as_arbiter_error(exc)
            status = error.grpc_status
            await abort(context, error)
            raise  # abort raises; this line satisfies the type checker
        finally:
            seconds = time.perf_counter() - started
            self.metrics.requests.labels(route, status).inc()
            self.metrics.latency.labels(route).observe(seconds)
            log.info("request", extra={"route": route, "status": status, "ms": round(1e3 * seconds, 2)})
            logs.request_id.reset(token)

    async def _admit(self, operation: Operation, context: grpc.aio.ServicerContext, rate: bool = True) -> Principal:
        metadata = dict(context.invocation_metadata() or ())
        bearer = bearer_token(str(metadata.get("authorization", "")))
        return await self.runtime.access.admit(operation, bearer, peer_address(context.peer()), rate=rate)

    async def Score(self, request: pb.ScoreRequest, context: grpc.aio.ServicerContext) -> pb.ScoreResponse:
        return await self._unary(ops.SCORE, request, context, wire.ScoreRequest, self.scoring.score, pb.ScoreResponse)

    async def Compare(self, request: pb.CompareRequest, context: grpc.aio.ServicerContext) -> pb.CompareResponse:
        return await self._unary(
            ops.COMPARE, request, context, wire.CompareRequest, self.scoring.compare, pb.CompareResponse
        )

    async def Rank(self, request: pb.RankRequest, context: grpc.aio.ServicerContext) -> pb.RankResponse:
        return await self._unary(ops.RANK, request, context, wire.RankRequest, self.scoring.rank, pb.RankResponse)

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        async def listed(_: None, __: Principal) -> BaseModel:
            return self.scoring.models()

        return await self._unary(ops.MODELS, request, context, None, listed, pb.ListModelsResponse)

    async def Judge(self, request: pb.JudgeRequest, context: grpc.aio.ServicerContext) -> pb.JudgeResponse:
        async def judged(message: wire.JudgeRequest, _: Principal) -> BaseModel:
            return await require_judge(self.runtime.judging).judge(message)

        return await self._unary(ops.JUDGE, request, context, wire.JudgeRequest, judged, pb.JudgeResponse)

    async def Reward(self, request: pb.RewardRequest, context: grpc.aio.ServicerContext) -> pb.RewardResponse:
        return await self._unary(
            ops.REWARD, request, context, wire.RewardRequest, self.runtime.pipelines.reward, pb.RewardResponse
        )

    async def ScoreStream(
        self, requests: AsyncIterator[pb.ScoreStreamRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ScoreStreamResponse]:
        """Each request is scored as soon as it arrives, concurrently with the others; answers go out in the
        order they finish. The key and scope are checked when the stream opens; every message takes a rate-limit
        token of its own. At most `stream_in_flight` messages are scored at once: past that the stream is not read
        until one finishes, so a fast sender is held back by gRPC's flow control instead of piling up tasks. A bad
        or over-limit message gets an error answer, and the stream goes on."""
        operation = ops.SCORE_STREAM
        route = operation.rpc or ""
        try:
            caller = await self._admit(operation, context, rate=False)
        except ArbiterError as error:
            self.metrics.requests.labels(route, error.grpc_status).inc()
            await abort(context, error)
        client = peer_address(context.peer())
        answers: asyncio.Queue[pb.ScoreStreamResponse | None] = asyncio.Queue(maxsize=self.stream_in_flight)
        room = asyncio.Semaphore(self.stream_in_flight)
        in_flight: set[asyncio.Task[None]] = set()

        async def one(item: pb.ScoreStreamRequest) -> None:
            started = time.perf_counter()
            try:
                await self.runtime.access.limit(operation, caller, client)
                request = grpc_codec.from_proto(item.request, wire.ScoreRequest)
                response = await self.scoring.score(request, caller)
                answer = pb.ScoreStreamResponse(id=item.id, response=grpc_codec.to_proto(response, pb.ScoreResponse))
                status = "OK"
            except Exception as exc:
                error = as_arbiter_error(exc)
                status = error.grpc_status
                answer = pb.ScoreStreamResponse(id=item.id, error=stream_error(error))
            self.metrics.requests.labels(route, status).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
            await answers.put(answer)
            room.release()

        async def read() -> None:
            async for item in requests:
                await room.acquire()
                task = asyncio.create_task(one(item))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            await asyncio.gather(*in_flight)
            await answers.put(None)

        reader = asyncio.create_task(read())
        try:
            while (answer := await answers.get()) is not None:
                yield answer
            await reader  # surfaces a failure of the request stream itself
        finally:
            reader.cancel()
            for task in list(in_flight):
                task.cancel()


class DeclaredOnly(grpc.aio.ServerInterceptor):
    """Deny by default: with auth on, an RPC that clients/operations.py does not declare is refused before any
    handler runs (a service added to the server without an entry there cannot be reached unchecked)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = details.method
        if not self.enabled or ops.rpc_operation(method) is not None:
            return await continuation(details)

        async def refuse(_: object, context: grpc.aio.ServicerContext) -> None:
            await abort(context, Forbidden(f"{method} is not a declared operation"))

        return grpc.unary_unary_rpc_method_handler(refuse)
