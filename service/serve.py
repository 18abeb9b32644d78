"""`arbiter serve`: print the settings, then run both faces (HTTP with uvicorn, gRPC with grpc.aio) on one event
loop over one runtime, so the two share the models and the batching queue."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import uvicorn

from arbiter.service import logs
from arbiter.service.errors import ArbiterError
from arbiter.service.http.app import create_app
from arbiter.service.runtime.runtime import Runtime
from arbiter.service.settings import ServerSettings

log = logging.getLogger("arbiter.serve")


async def run_server(settings: ServerSettings) -> None:
    runtime = Runtime(settings)
    config = uvicorn.Config(
        create_app(settings, runtime),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="off",
    )
    http = uvicorn.Server(config)
    grpc_server = None
    if settings.grpc_port:
        from arbiter.service.grpc.server import start_grpc

        grpc_server = await start_grpc(settings, runtime)
        log.info("grpc listening", extra={"address": f"{settings.host}:{settings.grpc_port}"})
    loading = asyncio.create_task(runtime.start())
    # SIGHUP reloads the reward specs in place, as POST /v1/admin/reload does; requests keep flowing.
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, _reload, runtime)
    try:
        await http.serve()  # returns on SIGINT/SIGTERM (uvicorn handles the signals)
    finally:
        loading.cancel()
        if grpc_server is not None:
            await grpc_server.stop(grace=5)
        await runtime.access.aclose()
        runtime.close()


def _reload(runtime: Runtime) -> None:
    with contextlib.suppress(ArbiterError):  # already logged with the reasons; the specs in force stay
        runtime.reload()


def serve(settings: ServerSettings) -> None:
    logs.configure(settings.log_level)
    log.info("starting", extra={"settings": settings.loggable()})
    asyncio.run(run_server(settings))
