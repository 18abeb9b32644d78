"""A client for the preference store, for trainers that send their samples to annotators and leads who pull the
results: `AnnotationClient(url, key).create_tasks(samples, idempotency_key=f"step-{step}")`.

Uploads go in chunks, each with its own key derived from the one given, so an upload cut off halfway can simply be
run again (with the same chunk_size): the chunks already stored are answered from the store and nothing is created
twice.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import httpx

from arbiter.clients import operations as ops
from arbiter.clients.annotation import (
    AnnotationInput,
    AnnotationRecord,
    AnnotationStats,
    Progress,
    TaskBatch,
    TaskBatchResult,
    TaskSpec,
    TaskView,
)
from arbiter.clients.errors import RewardServerError
from arbiter.clients.operations import Operation
from arbiter.clients.retry import Retry
from arbiter.clients.transport import http_error

T = TypeVar("T")


class AnnotationClient:
    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        key: str | None = None,
        *,
        timeout: float = 60.0,
        retry: Retry | None = None,
        chunk_size: int = 1000,
    ) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(base_url=url, headers=headers, timeout=timeout)
        self.retry, self.chunk_size = retry or Retry(), chunk_size

    def create_tasks(
        self, tasks: Sequence[TaskSpec | dict[str, Any]], *, idempotency_key: str | None = None
    ) -> TaskBatchResult:
        """Uploads tasks (a lead's key); `idempotency_key` makes the whole upload safe to repeat."""
        specs = [t if isinstance(t, TaskSpec) else TaskSpec.model_validate(t) for t in tasks]
        ids, created, replayed = [], 0, True
        for number, start in enumerate(range(0, len(specs), self.chunk_size)):
            batch = TaskBatch(tasks=specs[start : start + self.chunk_size])
            headers = {"Idempotency-Key": _chunk_key(idempotency_key, number)} if idempotency_key else {}
            part = self._call(ops.ANNOTATION_TASKS, TaskBatchResult.model_validate, batch, headers)
            ids += part.task_ids
            created += 0 if part.replayed else part.created  # a replayed chunk created nothing now
            replayed = replayed and part.replayed
        return TaskBatchResult(task_ids=ids, created=created, replayed=replayed and bool(ids))

    def next_task(self) -> TaskView | None:
        return self._call(ops.ANNOTATION_NEXT, lambda body: TaskView.model_validate(body) if body else None)

    def submit(self, task_id: int, answer: AnnotationInput | dict[str, Any]) -> AnnotationRecord:
        answer = answer if isinstance(answer, AnnotationInput) else AnnotationInput.model_validate(answer)
        return self._call(ops.ANNOTATION_SUBMIT, AnnotationRecord.model_validate, answer, path={"task_id": task_id})

    def skip(self, task_id: int) -> None:
        self._call(ops.ANNOTATION_SKIP, lambda _: None, path={"task_id": task_id})

    def progress(self) -> Progress:
        return self._call(ops.ANNOTATION_ME, Progress.model_validate)

    def stats(self, model: str | None = None) -> AnnotationStats:
        return self._call(
            ops.ANNOTATION_STATS, AnnotationStats.model_validate, params={"model": model} if model else None
        )

    def export(self, **filters: object) -> list[dict[str, Any]]:
        """Preference rows as `arbiter train` reads them; filters as GET /v1/annotation/export takes them
        (since, until, policy_version, min_annotations, min_agreement, include_flagged, aggregate)."""
        params = {k: v for k, v in filters.items() if v is not None}
        text = self._call(ops.ANNOTATION_EXPORT, lambda body: body, params=params, raw=True)
        return [json.loads(line) for line in text.splitlines()]

    def _call(
        self,
        operation: Operation,
        parse: Callable[[Any], T],
        body: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        raw: bool = False,
        path: dict[str, object] | None = None,
    ) -> T:
        payload = body.model_dump(mode="json", exclude_none=True) if body is not None else None
        method, url = operation.method or "GET", operation.url(**(path or {}))
        if method != "GET":  # the server takes state-changing requests as JSON only, bodiless ones too
            headers = {"content-type": "application/json", **(headers or {})}
        for attempt in range(self.retry.attempts):
            try:
                response = self._http.request(method, url, json=payload, headers=headers, params=params)
            except httpx.TransportError as exc:
                error = RewardServerError(None, "unavailable", f"cannot reach {self._http.base_url}: {exc!r}")
            else:
                if response.status_code < 400:
                    content = response.text if raw else (response.json() if response.content else None)
                    return parse(content)
                error = http_error(response)
            if not error.retryable or attempt == self.retry.attempts - 1:
                raise error
            time.sleep(self.retry.delay(attempt, error.retry_after))
        raise AssertionError("unreachable: the last attempt raises")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AnnotationClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _chunk_key(key: str, number: int) -> str:
    """The key of one chunk; a long key is hashed so the header stays within the server's 200 characters."""
    base = key if len(key) <= 160 else hashlib.sha256(key.encode()).hexdigest()
    return f"{base}:{number}"
