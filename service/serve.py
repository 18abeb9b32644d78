"""`arbiter serve`: print the settings, then run the HTTP face with uvicorn."""

from __future__ import annotations

import logging

import uvicorn

from arbiter.service import logs
from arbiter.service.http.app import create_app
from arbiter.service.settings import ServerSettings


def serve(settings: ServerSettings) -> None:
    logs.configure(settings.log_level)
    logging.getLogger("arbiter.serve").info("starting", extra={"settings": settings.model_dump()})
    app = create_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False, lifespan="on")
