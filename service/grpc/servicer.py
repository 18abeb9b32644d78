"""RewardService: each RPC decodes into the JSON face's request model, calls the shared runtime, and
encodes the answer. Errors end the call with their gRPC status and the JSON error body in trailing metadata."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
from google.protobuf.message import Message
from pydantic import BaseModel

from arbiter.clients import grpc_codec
from arbiter.clients import protocol as wire
from arbiter.clients.v1 import reward_pb2 as pb
from arbiter.clients.v1 import reward_pb2_grpc
from arbiter.errors import ArbiterError
from arbiter.service import logs
from arbiter.service.access.control import bearer_token
from arbiter.service.access.keys import Scope
from arbiter.service.grpc.errors import abort, as_arbiter_error
from arbiter.service.runtime.judging import require_judge
from arbiter.service.runtime.runtime import Runtime

log = logging.getLogger("arbiter.grpc")
SERVICE = "arbiter.v1.RewardService"


class RewardServicer(reward_pb2_grpc.RewardServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime, self.scoring, self.metrics = runtime, runtime.scoring, runtime.metrics

    async def _unary(
        self,
        method: str,
        message: Message,
        context: grpc.aio.ServicerContext,
        request_type: type[BaseModel] | None,
        handle: Callable[[BaseModel | None], Awaitable[BaseModel]],
    ) -> Message:
        """Request id, metrics and the log line as the HTTP middleware does them; errors as status + body."""
        route = f"/{SERVICE}/{method}"
        metadata = dict(context.invocation_metadata() or ())
        rid = str(metadata.get("x-request-id", ""))[:128] or uuid.uuid4().hex
        token = logs.request_id.set(rid)
        await context.send_initial_metadata((("x-request-id", rid),))
        started, status = time.perf_counter(), "OK"
        try:
            await self._admit(context, "judge" if method == "Judge" else "score")
            request = grpc_codec.from_proto(message, request_type) if request_type else None
            return grpc_codec.to_proto(await handle(request))
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

    async def _admit(self, context: grpc.aio.ServicerContext, scope: Scope) -> None:
        metadata = dict(context.invocation_metadata() or ())
        await self.runtime.access.admit(bearer_token(str(metadata.get("authorization", ""))), scope, context.peer())

    async def Score(self, request: pb.ScoreRequest, context: grpc.aio.ServicerContext) -> pb.ScoreResponse:
        return await self._unary("Score", request, context, wire.ScoreRequest, self.scoring.score)  # type: ignore[arg-type,return-value]

    async def Compare(self, request: pb.CompareRequest, context: grpc.aio.ServicerContext) -> pb.CompareResponse:
        return await self._unary("Compare", request, context, wire.CompareRequest, self.scoring.compare)  # type: ignore[arg-type,return-value]

    async def Rank(self, request: pb.RankRequest, context: grpc.aio.ServicerContext) -> pb.RankResponse:
        return await self._unary("Rank", request, context, wire.RankRequest, self.scoring.rank)  # type: ignore[arg-type,return-value]

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        async def listed(_: BaseModel | None) -> BaseModel:
            return self.scoring.models()

        return await self._unary("ListModels", request, context, None, listed)  # type: ignore[return-value]

    async def Judge(self, request: pb.JudgeRequest, context: grpc.aio.ServicerContext) -> pb.JudgeResponse:
        async def judged(message: BaseModel | None) -> BaseModel:
            return await require_judge(self.runtime.judging).judge(message)  # type: ignore[arg-type]

        return await self._unary("Judge", request, context, wire.JudgeRequest, judged)  # type: ignore[return-value]

    async def Reward(self, request: pb.RewardRequest, context: grpc.aio.ServicerContext) -> pb.RewardResponse:
        return await self._unary("Reward", request, context, wire.RewardRequest, self.runtime.pipelines.reward)  # type: ignore[arg-type,return-value]

    async def ScoreStream(
        self, requests: AsyncIterator[pb.ScoreStreamRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ScoreStreamResponse]:
        """Each request is scored as soon as it arrives, concurrently with the others; answers go out in the
        order they finish. A bad request gets an error answer, and the stream goes on."""
        route = f"/{SERVICE}/ScoreStream"
        try:
            await self._admit(context, "score")  # once for the stream
        except ArbiterError as error:
            self.metrics.requests.labels(route, error.grpc_status).inc()
            await abort(context, error)
        answers: asyncio.Queue[pb.ScoreStreamResponse | None] = asyncio.Queue()
        in_flight: set[asyncio.Task[None]] = set()

        async def one(item: pb.ScoreStreamRequest) -> None:
            started = time.perf_counter()
            try:
                response = await self.scoring.score(grpc_codec.from_proto(item.request, wire.ScoreRequest))
                answer = pb.ScoreStreamResponse(id=item.id, response=grpc_codec.to_proto(response))
                status = "OK"
            except Exception as exc:
                error = as_arbiter_error(exc)
                status = error.grpc_status
                answer = pb.ScoreStreamResponse(
                    id=item.id,
                    error=pb.Error(
                        code=error.code,
                        message=error.message,
                        details_json=json.dumps(error.details) if error.details is not None else "",
                        grpc_status=status,
                    ),
                )
            self.metrics.requests.labels(route, status).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
            await answers.put(answer)

        async def read() -> None:
            async for item in requests:
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
