"""`arbiter serve`: print the settings, then run both faces (HTTP with uvicorn, gRPC with grpc.aio) on one event
loop over one runtime, so the two share the models and the batching queue."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
from collections.abc import Iterator

import uvicorn

from arbiter.errors import ArbiterError
from arbiter.service import logs
from arbiter.service.http.app import create_app
from arbiter.service.runtime.runtime import Runtime
from arbiter.service.settings import ServerSettings

log = logging.getLogger("arbiter.serve")


class _HttpServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """run_server owns SIGTERM and SIGINT (drain first, then stop); uvicorn's own handlers would stop at once
        and re-raise the signal, killing the process before the gRPC face and the queues are done."""
        yield


async def run_server(settings: ServerSettings) -> None:
    runtime = Runtime(settings)
    config = uvicorn.Config(
        create_app(settings, runtime),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s),  # uvicorn takes whole seconds
    )
    http = _HttpServer(config)
    grpc_server = None
    if settings.grpc_port:
        from arbiter.service.grpc.server import start_grpc

        grpc_server = await start_grpc(settings, runtime)
        log.info("grpc listening", extra={"address": f"{settings.host}:{settings.grpc_port}"})
    loading = asyncio.create_task(runtime.start())
    loop = asyncio.get_running_loop()
    # SIGHUP reloads the API keys and reward specs in place, as POST /v1/admin/reload does; requests keep flowing.
    loop.add_signal_handler(signal.SIGHUP, _reload, runtime)

    def stop(name: str) -> None:
        """SIGTERM/SIGINT: not ready at once (probes and load balancers stop sending), serving on for the drain
        time, then no new connections while the requests in flight finish; a second signal stops at once."""
        if runtime.shutting_down:
            http.force_exit = True
            return
        log.info("shutting down", extra={"signal": name, "drain_s": settings.shutdown_drain_s})
        runtime.begin_shutdown()
        loop.call_later(settings.shutdown_drain_s, setattr, http, "should_exit", True)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, sig.name)
    try:
        await http.serve()
    finally:
        loading.cancel()
        if grpc_server is not None:
            await grpc_server.stop(grace=settings.shutdown_grace_s)  # calls in flight finish, new ones are refused
        await asyncio.to_thread(runtime.close)  # the batchers run what is queued, then stop
        log.info("stopped")


def _reload(runtime: Runtime) -> None:
    with contextlib.suppress(ArbiterError):  # already logged with the reasons; the specs in force stay
        runtime.reload()


def serve(settings: ServerSettings) -> None:
    logs.configure(settings.log_level)
    log.info("starting", extra={"settings": settings.loggable()})
    asyncio.run(run_server(settings))
