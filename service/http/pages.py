"""The annotation web pages: static HTML and JavaScript that talk to /v1/annotation like any client.
The Content-Security-Policy allows scripts from this server only, so text that slipped past escaping still
could not run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response

STATIC = Path(__file__).parent / "static"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class SecureStaticFiles(StaticFiles):
    """The page assets, with the pages' headers (the HTML files are reachable here too)."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.update(SECURITY_HEADERS)
        return response


def install_pages(app: FastAPI) -> None:
    router = APIRouter(include_in_schema=False)

    @router.get("/annotate")
    async def annotate() -> FileResponse:
        return FileResponse(STATIC / "annotate.html", headers=SECURITY_HEADERS)

    @router.get("/annotate/overview")
    async def overview() -> FileResponse:
        return FileResponse(STATIC / "overview.html", headers=SECURITY_HEADERS)

    app.include_router(router)
    app.mount("/annotate/static", SecureStaticFiles(directory=STATIC), name="annotate-static")
