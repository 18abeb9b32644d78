"""The annotation API (/v1/annotation/...): thin routes over AnnotationService. Every call names its annotator
with `Authorization: Bearer <key>`; leads (role `lead`) also upload tasks, add annotators, export and read stats."""

# No `from __future__ import annotations` here: FastAPI reads the route signatures at run time, and `Me` is local.
import json
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from arbiter.annotation.export import ExportFilter, utc
from arbiter.annotation.store import Caller
from arbiter.clients.annotation import (
    AnnotationEdit,
    AnnotationInput,
    AnnotationRecord,
    AnnotationStats,
    AnnotatorCreate,
    AnnotatorCreated,
    AuditLog,
    Progress,
    TaskBatch,
    TaskBatchResult,
    TaskView,
)
from arbiter.service.runtime.annotation import AnnotationService

NDJSON = "application/x-ndjson"
MAX_ID = 2**31 - 1  # the store's INTEGER ids: a larger one is a 422, not an overflow in the database
RowId = Annotated[int, Path(ge=1, le=MAX_ID)]


def annotation_routes(service: AnnotationService) -> APIRouter:
    router = APIRouter(prefix="/v1/annotation", tags=["annotation"])
    bearer = HTTPBearer(auto_error=False, description="an annotator's key")

    async def caller(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Caller:
        return await service.caller(credentials.credentials if credentials else None)

    Me = Annotated[Caller, Depends(caller)]

    @router.get("/me", response_model=Progress)
    async def me(who: Me) -> Progress:
        return await service.progress(who)

    @router.post("/annotators", response_model=AnnotatorCreated, status_code=201)
    async def add_annotator(who: Me, request: AnnotatorCreate) -> AnnotatorCreated:
        return await service.add_annotator(who, request)

    @router.post(
        "/tasks",
        response_model=TaskBatchResult,
        status_code=201,
        responses={200: {"model": TaskBatchResult, "description": "the stored answer to a retried upload"}},
    )
    async def create_tasks(
        who: Me,
        batch: TaskBatch,
        response: Response,
        idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    ) -> TaskBatchResult:
        """Creates tasks; a retry with the same Idempotency-Key gets the first answer (200) and creates nothing."""
        result = await service.create_tasks(who, batch, idempotency_key)
        if result.replayed:
            response.status_code = 200
        return result

    @router.post("/next", response_model=TaskView, responses={204: {"description": "nothing left for you"}})
    async def next_task(who: Me) -> TaskView | Response:
        """Your unfinished task, or a new one (204 when there is none)."""
        view = await service.next_task(who)
        return view if view is not None else Response(status_code=204)

    @router.post("/tasks/{task_id}/skip", status_code=204)
    async def skip(who: Me, task_id: RowId) -> Response:
        await service.skip(who, task_id)
        return Response(status_code=204)

    @router.post(
        "/tasks/{task_id}/annotations",
        response_model=AnnotationRecord,
        status_code=201,
        responses={200: {"model": AnnotationRecord, "description": "this answer was stored already"}},
    )
    async def submit(who: Me, task_id: RowId, answer: AnnotationInput, response: Response) -> AnnotationRecord:
        """Stores your answer (201); sending the same answer again returns it (200) and stores nothing."""
        record = await service.submit(who, task_id, answer)
        if record.replayed:
            response.status_code = 200
        return record

    @router.patch("/annotations/{annotation_id}", response_model=AnnotationRecord)
    async def edit(who: Me, annotation_id: RowId, change: AnnotationEdit) -> AnnotationRecord:
        return await service.edit(who, annotation_id, change)

    @router.get("/export", response_class=Response, responses={200: {"content": {NDJSON: {}}}})
    async def export(
        who: Me,
        since: datetime | None = None,
        until: datetime | None = None,
        policy_version: str | None = None,
        min_annotations: Annotated[int, Query(ge=1)] = 1,
        min_agreement: Annotated[float, Query(ge=0, le=1)] = 0.0,
        include_flagged: bool = True,
        aggregate: Literal["majority", "each"] = "majority",
    ) -> Response:
        """Preference rows as `arbiter train --data` reads them, one JSON object a line."""
        where = ExportFilter(
            utc(since), utc(until), policy_version, min_annotations, min_agreement, include_flagged, aggregate
        )
        rows = await service.export(who, where)
        body = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        disposition = 'attachment; filename="preferences.jsonl"'
        return Response(body, media_type=NDJSON, headers={"Content-Disposition": disposition})

    @router.get("/stats", response_model=AnnotationStats)
    async def stats(who: Me, model: str | None = None) -> AnnotationStats:
        return await service.stats(who, model)

    @router.get("/audit", response_model=AuditLog)
    async def audit(
        who: Me,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        before: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    ) -> AuditLog:
        return await service.audit(who, limit, before)

    return router
