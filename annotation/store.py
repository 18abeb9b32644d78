"""The preference store: tasks in, assignments out, annotations back, every change audited.

Each method is one transaction. What keeps concurrent annotators apart is in the database, not in this process,
so several replicas can share one PostgreSQL:
- a task's free slots are taken with a conditional UPDATE (`open_slots > 0`), so a task is never handed out to more
  annotators than it wants;
- (task, annotator) is unique for assignments and for annotations, so nobody is shown a task twice and a retried
  submission finds the first one;
- an Idempotency-Key is a primary key stored in the same transaction as the tasks it created.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

from sqlalchemy import CursorResult, Engine, Select, exists, func, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from arbiter.annotation import database
from arbiter.annotation.keys import key_hash, new_key
from arbiter.annotation.render import markdown_html, prompt_html
from arbiter.annotation.tables import (
    Annotation,
    Annotator,
    Assignment,
    AuditEvent,
    IdempotencyRecord,
    Response,
    Task,
    utcnow,
)
from arbiter.clients.annotation import (
    LABELS,
    AnnotationEdit,
    AnnotationInput,
    AnnotationRecord,
    AnnotatorCreated,
    AuditLog,
    Progress,
    ResponseView,
    Role,
    TaskBatch,
    TaskBatchResult,
    TaskView,
)
from arbiter.clients.annotation import AuditEvent as AuditEventView
from arbiter.clients.protocol import plain_prompt
from arbiter.errors import Conflict, Forbidden, InvalidInput, NotFound, StoreUnavailable, Unauthorized

log = logging.getLogger("arbiter.annotation")
T = TypeVar("T")
CONCURRENT_RETRIES = 3  # a unique-key race lost to another transaction is retried; the retry sees its rows


@dataclass(frozen=True)
class StorePolicy:
    annotators_per_task: int = 1
    assignment_ttl: timedelta = timedelta(minutes=30)
    edit_window: timedelta = timedelta(minutes=15)


@dataclass(frozen=True)
class Caller:
    """An authenticated annotator, detached from any session."""

    id: int
    name: str
    role: Role

    def require_lead(self) -> None:
        if self.role != "lead":
            raise Forbidden(f"{self.name} is an annotator; this needs a lead's key")


@dataclass(frozen=True)
class Judgement:
    annotator: str
    ranking: list[int]
    strength: str | None
    safety_flag: bool
    created_at: datetime
    seconds: float  # from being given the task to submitting it


@dataclass(frozen=True)
class JudgedTask:
    task_id: int
    kind: str
    prompt: Any
    responses: list[Response]
    created_at: datetime
    judgements: list[Judgement]


class Contended(Conflict):
    """Another transaction got in the way (a unique key taken, a deadlock); running the work again resolves it."""

    def __init__(self) -> None:
        super().__init__("concurrent_update", "the store was changed concurrently; retry the request")


def unavailable(exc: DBAPIError, event: str) -> StoreUnavailable:
    """The driver's words go to the log, under the request id: they can name hosts, users and files. The caller
    gets a short message and that request id."""
    log.error(event, extra={"reason": str(exc.orig)})
    return StoreUnavailable("the preference store's database is unavailable; the server's log says why")


class AnnotationStore:
    def __init__(self, engine: Engine, policy: StorePolicy | None = None, reader: Engine | None = None) -> None:
        self.engine, self.policy, self.reader = engine, policy or StorePolicy(), reader or engine
        self._sessions = database.sessions(engine)
        self._read_sessions = database.sessions(self.reader)

    @classmethod
    def open(cls, url: str, policy: StorePolicy | None = None, migrate: bool = True) -> AnnotationStore:
        engine = database.open_engine(url)
        try:
            if migrate:
                database.upgrade(engine)
        except (OperationalError, InterfaceError) as exc:
            engine.dispose()
            raise unavailable(exc, "preference store not opened") from exc
        reader = database.open_engine(url, writer=False) if database.is_sqlite(url) else None
        return cls(engine, policy, reader)

    def close(self) -> None:
        self.engine.dispose()
        self.reader.dispose()

    @contextmanager
    def _transaction(self, read: bool = False) -> Iterator[Session]:
        try:
            with (self._read_sessions if read else self._sessions).begin() as session:
                yield session
        except OperationalError as exc:
            if database.contended(exc):
                raise Contended() from exc
            raise unavailable(exc, "preference store unavailable") from exc
        except InterfaceError as exc:
            raise unavailable(exc, "preference store unavailable") from exc

    def _retrying(self, work: Callable[[Session], T]) -> T:
        for _ in range(CONCURRENT_RETRIES):
            try:
                with self._transaction() as session:
                    return work(session)
            except (IntegrityError, Contended):
                continue
        raise Contended()

    # -- annotators ---------------------------------------------------------------------------------------------

    def add_annotator(self, name: str, role: Role = "annotator", actor: Caller | None = None) -> AnnotatorCreated:
        key = new_key()
        try:
            with self._transaction() as s:
                annotator = Annotator(name=name, role=role, key_hash=key_hash(key))
                s.add(annotator)
                s.flush()
                _audit(s, actor, "annotator.create", f"annotator:{annotator.id}", {"name": name, "role": role})
        except IntegrityError as exc:
            raise Conflict("annotator_exists", f"an annotator named {name!r} exists") from exc
        return AnnotatorCreated(id=annotator.id, name=name, role=role, key=key)

    def service_account(self, name: str) -> Caller:
        """A lead standing for an API key (its requests are audited under `name`); made on first use, with no
        key of its own."""
        with self._transaction(read=True) as s:
            found = s.scalars(select(Annotator).where(Annotator.name == name)).first()
        if found is None:
            try:
                with self._transaction() as s:
                    found = Annotator(name=name, role="lead", key_hash=key_hash(new_key()))
                    s.add(found)
                    s.flush()
                    _audit(s, None, "annotator.create", f"annotator:{found.id}", {"name": name, "role": "lead"})
            except IntegrityError:  # made by a concurrent first request
                return self.service_account(name)
        return _caller(found)

    def authenticate(self, key: str | None) -> Caller:
        if not key:
            raise Unauthorized("give your annotator key as 'Authorization: Bearer <key>'")
        with self._transaction(read=True) as s:
            found = s.scalars(select(Annotator).where(Annotator.key_hash == key_hash(key))).first()
        if found is None or found.disabled:
            raise Unauthorized("unknown or disabled key")
        return _caller(found)

    # -- tasks --------------------------------------------------------------------------------------------------

    def create_tasks(self, batch: TaskBatch, actor: Caller, idempotency_key: str | None = None) -> TaskBatchResult:
        digest = hashlib.sha256(batch.model_dump_json().encode()).hexdigest()
        key = f"{actor.id}:{idempotency_key}" if idempotency_key is not None else None  # one lead's keys are theirs

        def work(s: Session) -> TaskBatchResult:
            if key is not None and (stored := s.get(IdempotencyRecord, key)) is not None:
                if stored.request_hash != digest or stored.scope != "tasks":
                    raise Conflict(
                        "idempotency_key_reused", "this Idempotency-Key was used with a different request body"
                    )
                return TaskBatchResult.model_validate({**stored.response, "replayed": True})
            wanted = [t.external_id for t in batch.tasks if t.external_id is not None]
            known: dict[str | None, int] = dict(
                s.execute(select(Task.external_id, Task.id).where(Task.external_id.in_(wanted))).tuples().all()
            )
            new: dict[str, Task] = {}  # by external_id, for an id given twice in one batch
            tasks: list[Task | int] = []
            for spec in batch.tasks:
                if spec.external_id in known:
                    tasks.append(known[spec.external_id])
                    continue
                if spec.external_id in new:
                    tasks.append(new[spec.external_id])
                    continue
                required = spec.annotators or self.policy.annotators_per_task
                task = Task(
                    kind="pair" if len(spec.responses) == 2 else "ranking",
                    prompt=plain_prompt(spec.prompt),
                    annotators_required=required,
                    open_slots=required,
                    submitted=0,
                    priority=spec.priority,
                    external_id=spec.external_id,
                    meta=spec.meta,
                    created_by=actor.id,
                    responses=[
                        Response(position=i, **c.model_dump(exclude={"meta"}), meta=c.meta)
                        for i, c in enumerate(spec.candidates())
                    ],
                )
                s.add(task)
                tasks.append(task)
                if spec.external_id is not None:
                    new[spec.external_id] = task
            s.flush()
            ids = [t if isinstance(t, int) else t.id for t in tasks]
            created = len({t.id for t in tasks if isinstance(t, Task)})
            result = TaskBatchResult(task_ids=ids, created=created)
            if key is not None:
                s.add(IdempotencyRecord(key=key, scope="tasks", request_hash=digest, response=result.model_dump()))
            _audit(
                s, actor, "tasks.create", f"tasks:{min(ids)}-{max(ids)}", {"created": created, "key": idempotency_key}
            )
            return result

        return self._retrying(work)

    def next_task(self, caller: Caller) -> TaskView | None:
        """The annotator's unfinished assignment if there is one, else a new one, else None."""

        def work(s: Session) -> TaskView | None:
            now = utcnow()
            self._expire(s, now)
            active = s.scalars(
                select(Assignment)
                .where(Assignment.annotator_id == caller.id, Assignment.state == "active")
                .order_by(Assignment.id)
            ).first()
            if active is not None:
                return _view(s.get_one(Task, active.task_id), active)
            seen = exists().where(Assignment.task_id == Task.id, Assignment.annotator_id == caller.id)
            query = select(Task.id).where(Task.open_slots > 0, ~seen).order_by(Task.priority.desc(), Task.id)
            for task_id in _candidates(s, query):
                if not _take_slot(s, task_id):
                    continue  # another annotator took the last slot first
                task = s.get_one(Task, task_id)
                order = list(range(len(task.responses)))
                random.shuffle(order)
                assignment = Assignment(
                    task_id=task_id,
                    annotator_id=caller.id,
                    state="active",
                    order=order,
                    created_at=now,
                    expires_at=now + self.policy.assignment_ttl,
                )
                s.add(assignment)
                s.flush()
                _audit(s, caller, "assignment.create", f"task:{task_id}", {"assignment": assignment.id, "order": order})
                return _view(task, assignment)
            return None

        return self._retrying(work)

    def skip(self, caller: Caller, task_id: int) -> None:
        def work(s: Session) -> None:
            assignment = _assignment(s, caller, task_id)
            if assignment.state != "active" or not _close(s, assignment, "skipped"):
                raise Conflict("not_active", f"this task's assignment is {assignment.state}")
            _audit(s, caller, "assignment.skip", f"task:{task_id}", {"assignment": assignment.id})

        self._retrying(work)

    def expire(self) -> int:
        with self._transaction() as s:
            return self._expire(s, utcnow())

    def _expire(self, s: Session, now: datetime) -> int:
        stale = s.scalars(
            select(Assignment)
            .where(Assignment.state == "active", Assignment.expires_at < now)
            .order_by(Assignment.id)  # one lock order for every transaction: no deadlocks between expiries
            .limit(1000)
        ).all()
        expired = 0
        for assignment in stale:
            if _close(s, assignment, "expired"):
                expired += 1
                _audit(s, None, "assignment.expire", f"task:{assignment.task_id}", {"assignment": assignment.id})
        return expired

    # -- annotations --------------------------------------------------------------------------------------------

    def submit(self, caller: Caller, task_id: int, answer: AnnotationInput) -> AnnotationRecord:
        def work(s: Session) -> AnnotationRecord:
            assignment = _assignment(s, caller, task_id)
            task = s.get_one(Task, task_id)
            ranking = _canonical_ranking(task, assignment, answer.choice, answer.ranking)
            strength = _strength(ranking, answer.strength)
            earlier = s.scalars(
                select(Annotation).where(Annotation.task_id == task_id, Annotation.annotator_id == caller.id)
            ).first()
            if earlier is not None:
                same = (earlier.ranking, earlier.strength, earlier.rationale, earlier.safety_flag) == (
                    ranking,
                    strength,
                    answer.rationale,
                    answer.safety_flag,
                )
                if not same:
                    raise Conflict(
                        "already_submitted",
                        "this task was annotated already with other answers; edit it instead",
                        {"annotation_id": earlier.id},
                    )
                return self._record(earlier, assignment, caller, replayed=True)
            if assignment.state == "skipped":
                raise Conflict("skipped", "this task was skipped")
            if assignment.state == "expired" and not _take_slot(s, task_id):
                raise Conflict("assignment_expired", "the assignment expired and the task went to someone else")
            now = utcnow()
            s.execute(update(Assignment).where(Assignment.id == assignment.id).values(state="submitted", closed_at=now))
            s.execute(update(Task).where(Task.id == task_id).values(submitted=Task.submitted + 1))
            annotation = Annotation(
                task_id=task_id,
                annotator_id=caller.id,
                assignment_id=assignment.id,
                ranking=ranking,
                strength=strength,
                rationale=answer.rationale,
                safety_flag=answer.safety_flag,
                time_spent_ms=answer.time_spent_ms,
                created_at=now,
                updated_at=now,
            )
            s.add(annotation)
            s.flush()
            _audit(s, caller, "annotation.submit", f"annotation:{annotation.id}", _snapshot(annotation))
            return self._record(annotation, assignment, caller)

        return self._retrying(work)

    def edit(self, caller: Caller, annotation_id: int, change: AnnotationEdit) -> AnnotationRecord:
        def work(s: Session) -> AnnotationRecord:
            annotation = s.get(Annotation, annotation_id, with_for_update=True, populate_existing=True)
            if annotation is None or annotation.annotator_id != caller.id:
                raise NotFound(f"no annotation {annotation_id} of yours")
            if utcnow() > annotation.created_at + self.policy.edit_window:
                raise Conflict("edit_window_closed", "annotations can be edited for a while after submission only")
            assignment = s.get_one(Assignment, annotation.assignment_id)
            before = _snapshot(annotation)
            if change.choice is not None or change.ranking is not None:
                task = s.get_one(Task, annotation.task_id)
                annotation.ranking = _canonical_ranking(task, assignment, change.choice, change.ranking)
            for name, value in change.model_dump(exclude_none=True, exclude={"choice", "ranking"}).items():
                setattr(annotation, name, value)
            annotation.strength = _strength(annotation.ranking, annotation.strength)
            annotation.updated_at = utcnow()
            after = _snapshot(annotation)
            _audit(s, caller, "annotation.edit", f"annotation:{annotation.id}", {"before": before, "after": after})
            return self._record(annotation, assignment, caller)

        return self._retrying(work)

    def _record(
        self, a: Annotation, assignment: Assignment, caller: Caller, replayed: bool = False
    ) -> AnnotationRecord:
        shown = [a.ranking[position] for position in assignment.order]
        choice = None
        if len(shown) == 2:
            choice = "tie" if shown[0] == shown[1] else ("A" if shown[0] < shown[1] else "B")
        return AnnotationRecord(
            id=a.id,
            task_id=a.task_id,
            annotator=caller.name,
            ranking=a.ranking,
            choice=choice,
            strength=a.strength,
            rationale=a.rationale,
            safety_flag=a.safety_flag,
            created_at=a.created_at,
            updated_at=a.updated_at,
            editable_until=a.created_at + self.policy.edit_window,
            replayed=replayed,
        )

    def record(self, actor: Caller, action: str, target: str, data: dict[str, Any] | None = None) -> None:
        """An audit event for an action that changes nothing stored (an export, say)."""
        with self._transaction() as s:
            _audit(s, actor, action, target, data)

    # -- reading ------------------------------------------------------------------------------------------------

    def progress(self, caller: Caller) -> Progress:
        with self._transaction(read=True) as s:
            states = dict(
                s.execute(
                    select(Assignment.state, func.count())
                    .where(Assignment.annotator_id == caller.id)
                    .group_by(Assignment.state)
                ).all()
            )
            seen = exists().where(Assignment.task_id == Task.id, Assignment.annotator_id == caller.id)
            available = s.scalar(select(func.count()).select_from(Task).where(Task.open_slots > 0, ~seen)) or 0
        return Progress(
            annotator=caller.name,
            role=caller.role,
            submitted=states.get("submitted", 0),
            skipped=states.get("skipped", 0),
            active=states.get("active", 0),
            available=available,
        )

    def judged_tasks(
        self, since: datetime | None = None, until: datetime | None = None, policy_version: str | None = None
    ) -> list[JudgedTask]:
        """Tasks with at least one annotation in [since, until), with those annotations, oldest task first."""
        query = (
            select(Annotation, Annotator.name, Assignment.created_at)
            .join(Annotator, Annotator.id == Annotation.annotator_id)
            .join(Assignment, Assignment.id == Annotation.assignment_id)
            .order_by(Annotation.task_id, Annotation.id)
        )
        if since is not None:
            query = query.where(Annotation.created_at >= since)
        if until is not None:
            query = query.where(Annotation.created_at < until)
        if policy_version is not None:
            query = query.where(
                exists().where(Response.task_id == Annotation.task_id, Response.policy_version == policy_version)
            )
        with self._transaction(read=True) as s:
            rows = s.execute(query).all()
            task_ids = sorted({a.task_id for a, _, _ in rows})
            tasks = {t.id: t for t in s.scalars(select(Task).where(Task.id.in_(task_ids)))} if task_ids else {}
            judged: dict[int, list[Judgement]] = {}
            for annotation, name, given_at in rows:
                judged.setdefault(annotation.task_id, []).append(
                    Judgement(
                        name,
                        annotation.ranking,
                        annotation.strength,
                        annotation.safety_flag,
                        annotation.created_at,
                        (annotation.created_at - given_at).total_seconds(),
                    )
                )
            return [
                JudgedTask(i, tasks[i].kind, tasks[i].prompt, list(tasks[i].responses), tasks[i].created_at, judged[i])
                for i in task_ids
            ]

    def counts(self) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
        """Tasks per state, assignments per state, and skips per annotator."""
        with self._transaction(read=True) as s:
            active = exists().where(Assignment.task_id == Task.id, Assignment.state == "active")
            complete = Task.submitted >= Task.annotators_required
            tasks = {
                "complete": s.scalar(select(func.count()).select_from(Task).where(complete)) or 0,
                "in_progress": s.scalar(
                    select(func.count()).select_from(Task).where(~complete, (Task.submitted > 0) | active)
                )
                or 0,
                "waiting": s.scalar(select(func.count()).select_from(Task).where(Task.submitted == 0, ~active)) or 0,
            }
            assignments = dict(s.execute(select(Assignment.state, func.count()).group_by(Assignment.state)).all())
            skips = dict(
                s.execute(
                    select(Annotator.name, func.count())
                    .join(Assignment, Assignment.annotator_id == Annotator.id)
                    .where(Assignment.state == "skipped")
                    .group_by(Annotator.name)
                ).all()
            )
        for state in ("active", "submitted", "skipped", "expired"):
            assignments.setdefault(state, 0)
        return tasks, assignments, skips

    def audit(self, limit: int = 100, before: int | None = None) -> AuditLog:
        query = (
            select(AuditEvent, Annotator.name)
            .outerjoin(Annotator, Annotator.id == AuditEvent.actor_id)
            .order_by(AuditEvent.id.desc())
            .limit(limit)
        )
        if before is not None:
            query = query.where(AuditEvent.id < before)
        with self._transaction(read=True) as s:
            rows = s.execute(query).all()
        return AuditLog(
            events=[
                AuditEventView(id=e.id, at=e.at, actor=name, action=e.action, target=e.target, data=e.data)
                for e, name in rows
            ]
        )


def _caller(found: Annotator) -> Caller:
    # The role column holds what add_annotator (a Role) and service_account ("lead") write, nothing else.
    return Caller(found.id, found.name, cast(Role, found.role))


def _audit(s: Session, actor: Caller | None, action: str, target: str, data: dict[str, Any] | None = None) -> None:
    s.add(AuditEvent(actor_id=actor.id if actor else None, action=action, target=target, data=data))


def _take_slot(s: Session, task_id: int) -> bool:
    # An UPDATE without RETURNING gives a CursorResult (SQLAlchemy's typing says Result: it recommends the cast).
    taken = cast(
        "CursorResult[Any]",
        s.execute(
            update(Task)
            .where(Task.id == task_id, Task.open_slots > 0)
            .values(open_slots=Task.open_slots - 1)
            .execution_options(synchronize_session=False)
        ),
    )
    return taken.rowcount == 1


def _close(s: Session, assignment: Assignment, state: str) -> bool:
    """Ends an active assignment and frees its slot; False when another transaction ended it first."""
    ended = cast(
        "CursorResult[Any]",  # as in _take_slot
        s.execute(
            update(Assignment)
            .where(Assignment.id == assignment.id, Assignment.state == "active")
            .values(state=state, closed_at=utcnow())
            .execution_options(synchronize_session=False)
        ),
    )
    if ended.rowcount != 1:
        return False
    s.execute(
        update(Task)
        .where(Task.id == assignment.task_id)
        .values(open_slots=Task.open_slots + 1)
        .execution_options(synchronize_session=False)
    )
    return True


def _assignment(s: Session, caller: Caller, task_id: int) -> Assignment:
    """The caller's assignment for the task, locked (PostgreSQL) so that a concurrent skip or expiry of it waits
    for this transaction, or this one sees what it did."""
    found = s.scalars(
        select(Assignment)
        .where(Assignment.task_id == task_id, Assignment.annotator_id == caller.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if found is None:
        if s.get(Task, task_id) is None:
            raise NotFound(f"no task {task_id}")
        raise Conflict("not_assigned", f"task {task_id} was not given to {caller.name}; ask for the next task")
    return found


def _canonical_ranking(task: Task, assignment: Assignment, choice: str | None, ranking: list[int] | None) -> list[int]:
    """The answer, given in the annotator's display order, as ranks per upload position."""
    k = len(task.responses)
    if choice is not None:
        if k != 2:
            raise InvalidInput(f"task {task.id} ranks {k} responses: give a ranking, not a choice")
        shown = {"A": [1, 2], "B": [2, 1], "tie": [1, 1]}[choice]
    else:
        assert ranking is not None
        if len(ranking) != k or max(ranking) > k:
            raise InvalidInput(f"task {task.id} has {k} responses: give {k} ranks between 1 and {k}")
        shown = ranking
    canonical = [0] * k
    for display, position in enumerate(assignment.order):
        canonical[position] = shown[display]
    return canonical


def _candidates(s: Session, query: Select[int]) -> Iterator[int]:
    """Tasks to try to take a slot of, best first. A batch can fill up while this transaction waits on locks
    (other annotators taking the same tasks), so a spent batch is followed by a fresh look."""
    for _ in range(CONCURRENT_RETRIES):
        batch = s.scalars(query.limit(32)).all()
        if not batch:
            return
        yield from batch


def _strength(ranking: list[int], strength: str | None) -> str | None:
    """Ties have no strength; a pair's preference must have one (it becomes the training margin)."""
    if len(set(ranking)) == 1:
        return None
    if strength is None and len(ranking) == 2:
        raise InvalidInput("a preference between two responses needs a strength")
    return strength


def _snapshot(a: Annotation) -> dict[str, Any]:
    return {
        "task": a.task_id,
        "ranking": a.ranking,
        "strength": a.strength,
        "rationale": a.rationale,
        "safety_flag": a.safety_flag,
    }


def _view(task: Task, assignment: Assignment) -> TaskView:
    responses = [task.responses[position] for position in assignment.order]
    return TaskView(
        task_id=task.id,
        kind=task.kind,
        prompt=task.prompt,
        prompt_html=prompt_html(task.prompt),
        responses=[
            ResponseView(label=LABELS[i], text=r.text, html=markdown_html(r.text)) for i, r in enumerate(responses)
        ],
        expires_at=assignment.expires_at,
    )
