"""Human preference collection as the server offers it: the store's calls run off the event loop, a store that
cannot be reached answers 503 (and is tried again on the next call) while scoring goes on, and the statistics
include how often the served reward model agrees with the annotators."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar, cast

from arbiter.annotation.export import ExportFilter, export, export_rows
from arbiter.annotation.stats import annotation_stats
from arbiter.annotation.store import AnnotationStore, Caller, StorePolicy
from arbiter.clients.annotation import (
    AnnotationEdit,
    AnnotationInput,
    AnnotationRecord,
    AnnotationStats,
    AnnotatorCreate,
    AnnotatorCreated,
    AuditLog,
    Progress,
    RewardModelAgreement,
    TaskBatch,
    TaskBatchResult,
    TaskView,
)
from arbiter.clients.protocol import ComparePair
from arbiter.errors import ArbiterError, NotFound, StoreUnavailable
from arbiter.service.access.control import AccessControl
from arbiter.service.runtime.scoring import ScoringService

log = logging.getLogger("arbiter.annotation")
T = TypeVar("T")


@dataclass(frozen=True)
class AnnotationPolicy:
    """The preference store and its rules (settings of the same names)."""

    annotation_db: str | None
    annotation_migrate: bool
    annotators_per_task: int
    assignment_ttl_s: float
    annotation_edit_window_s: float
    annotation_rm_pairs: int


class AnnotationService:
    def __init__(self, policy: AnnotationPolicy, scoring: ScoringService, access: AccessControl) -> None:
        self.policy, self.scoring, self.access = policy, scoring, access
        self.store_policy = StorePolicy(
            annotators_per_task=policy.annotators_per_task,
            assignment_ttl=timedelta(seconds=policy.assignment_ttl_s),
            edit_window=timedelta(seconds=policy.annotation_edit_window_s),
        )
        self._store: AnnotationStore | None = None
        self._opening = threading.Lock()
        self._agreement: tuple[tuple[str, str, bytes], RewardModelAgreement] | None = None

    def store(self) -> AnnotationStore:
        """The open store; opened (and migrated) on first use, again after a failed attempt."""
        if not self.policy.annotation_db:
            raise NotFound("annotation is off on this server (annotation_db is empty)")
        with self._opening:
            if self._store is None:
                try:
                    self._store = AnnotationStore.open(
                        self.policy.annotation_db, self.store_policy, migrate=self.policy.annotation_migrate
                    )
                except ArbiterError:
                    raise
                except Exception as exc:  # a database that is down or refuses us: 503 now, retried next call
                    log.error("preference store not opened", extra={"reason": str(exc)})
                    raise StoreUnavailable("the preference store's database is unavailable", str(exc)) from exc
                log.info("preference store open", extra={"url": self._store.engine.url.render_as_string()})
            return self._store

    async def _call(self, work: Callable[[AnnotationStore], T]) -> T:
        return await asyncio.to_thread(lambda: work(self.store()))

    async def caller(self, key: str | None) -> Caller:
        """An annotator by their own key, or an API key with the annotate scope acting as a lead (a trainer
        uploading its samples, say); the access check already refused such a key without the scope."""
        service = self.access.key(key)
        if service is not None:
            return await self._call(lambda store: store.service_account(f"key:{service.name}"))
        return await self._call(lambda store: store.authenticate(key))

    async def add_annotator(self, lead: Caller, request: AnnotatorCreate) -> AnnotatorCreated:
        lead.require_lead()
        return await self._call(lambda store: store.add_annotator(request.name, request.role, lead))

    async def create_tasks(self, lead: Caller, batch: TaskBatch, key: str | None) -> TaskBatchResult:
        lead.require_lead()
        return await self._call(lambda store: store.create_tasks(batch, lead, key))

    async def next_task(self, caller: Caller) -> TaskView | None:
        return await self._call(lambda store: store.next_task(caller))

    async def skip(self, caller: Caller, task_id: int) -> None:
        await self._call(lambda store: store.skip(caller, task_id))

    async def submit(self, caller: Caller, task_id: int, answer: AnnotationInput) -> AnnotationRecord:
        return await self._call(lambda store: store.submit(caller, task_id, answer))

    async def edit(self, caller: Caller, annotation_id: int, change: AnnotationEdit) -> AnnotationRecord:
        return await self._call(lambda store: store.edit(caller, annotation_id, change))

    async def progress(self, caller: Caller) -> Progress:
        return await self._call(lambda store: store.progress(caller))

    async def audit(self, lead: Caller, limit: int, before: int | None) -> AuditLog:
        lead.require_lead()
        return await self._call(lambda store: store.audit(limit, before))

    async def export(self, lead: Caller, where: ExportFilter) -> list[dict[str, object]]:
        lead.require_lead()

        def work(store: AnnotationStore) -> list[dict[str, object]]:
            rows = export(store, where)
            store.record(lead, "annotations.export", f"rows:{len(rows)}", _filter_data(where))
            return rows

        return await self._call(work)

    async def stats(self, lead: Caller, model: str | None) -> AnnotationStats:
        lead.require_lead()

        def work(store: AnnotationStore) -> tuple[AnnotationStats, list[dict[str, object]]]:
            tasks = store.judged_tasks()
            stats = annotation_stats(tasks, *store.counts(), reward_model=None)
            return stats, list(export_rows(tasks, ExportFilter()))

        stats, rows = await self._call(work)
        if self.scoring.registry.ready and self.policy.annotation_rm_pairs and rows:
            stats.reward_model = await self._reward_model_agreement(rows, model)
        return stats

    async def _reward_model_agreement(self, rows: list[dict[str, object]], model: str | None) -> RewardModelAgreement:
        pairs = list(_preferred_pairs(rows))[-self.policy.annotation_rm_pairs :]
        served = self.scoring.registry.get(model)
        # Scoring hundreds of pairs takes seconds on a CPU: the answer is kept until the model or the pairs change.
        key = (
            served.name,
            served.version,
            hashlib.sha256(json.dumps([p.model_dump() for p in pairs]).encode()).digest(),
        )
        if self._agreement is not None and self._agreement[0] == key:
            return self._agreement[1]
        better, worse = await self.scoring.pair_scores(served, pairs)  # in requests that fit the limits
        agree, compared = int((better > worse).sum()), len(pairs)
        result = RewardModelAgreement(
            model=served.name,
            model_version=served.version,
            comparisons=compared,
            agreement=agree / compared if compared else None,
        )
        self._agreement = (key, result)
        return result

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def _preferred_pairs(rows: list[dict[str, object]]) -> Iterator[ComparePair]:
    """Every (prompt, better, worse) the annotators' majority gives: a pair row, or each ordered pair of a ranking."""
    for row in rows:
        if "chosen" in row:
            yield ComparePair(prompt=row["prompt"], response_a=row["chosen"], response_b=row["rejected"])
            continue
        responses, ranking = cast(list[str], row["responses"]), cast(list[int], row["ranking"])  # export's K-wise shape
        for i, better in enumerate(responses):
            for j, worse in enumerate(responses):
                if ranking[i] < ranking[j]:
                    yield ComparePair(prompt=row["prompt"], response_a=better, response_b=worse)


def _filter_data(where: ExportFilter) -> dict[str, object]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in where.__dict__.items()}
