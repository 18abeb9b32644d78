"""The wire protocol of human preference collection (/v1/annotation/...): tasks in, annotations and statistics out.

A task is a prompt with 2 (a pair) or K (a ranking) candidate responses. Annotators are shown tasks one at a time,
with the responses in an order drawn for them (position bias is real), and answer with a choice ("A", "B", "tie")
or a full ranking of the labels they saw. Strength follows Llama 2's four-level scale.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from arbiter.clients.protocol import Prompt, Wire

Strength = Literal["significantly_better", "better", "slightly_better", "negligibly_better"]
Role = Literal["annotator", "lead"]
LABELS = "ABCDEFGHIJKLMNOP"  # display labels; a task has at most 16 responses
MAX_RESPONSES = len(LABELS)


class Candidate(Wire):
    text: str = Field(min_length=1)
    policy: str | None = Field(None, description="the policy that wrote it, e.g. a model name")
    policy_version: str | None = Field(None, description="the policy's version or checkpoint step")
    sampling: dict[str, Any] | None = Field(None, description="sampling settings: temperature, top_p, seed, ...")
    meta: dict[str, Any] | None = None


class TaskSpec(Wire):
    prompt: Prompt
    responses: list[Candidate | Annotated[str, Field(min_length=1)]] = Field(min_length=2, max_length=MAX_RESPONSES)
    annotators: int | None = Field(None, ge=1, le=50, description="annotations wanted (the server's default if none)")
    priority: int = Field(0, ge=-(2**31), lt=2**31, description="higher is shown first")
    external_id: str | None = Field(
        None, max_length=200, description="your id for it: a task with an id already stored is not created again"
    )
    meta: dict[str, Any] | None = None

    def candidates(self) -> list[Candidate]:
        return [r if isinstance(r, Candidate) else Candidate(text=r) for r in self.responses]


class TaskBatch(Wire):
    tasks: list[TaskSpec] = Field(min_length=1, max_length=10_000)


class TaskBatchResult(Wire):
    task_ids: list[int] = Field(description="one id per task given, in order")
    created: int = Field(
        description="tasks the call created (tasks already stored by external_id are not); a replay repeats it"
    )
    replayed: bool = Field(
        False, description="true when this is the stored answer to an earlier call with this key: nothing was created"
    )


class ResponseView(Wire):
    label: str
    text: str
    html: str = Field(description="the text rendered from markdown, raw HTML escaped")


class TaskView(Wire):
    """What an annotator sees: the responses in the order drawn for this annotator."""

    task_id: int
    kind: Literal["pair", "ranking"]
    prompt: Prompt
    prompt_html: str
    responses: list[ResponseView]
    expires_at: datetime


class AnnotationInput(Wire):
    """A pair takes `choice`; any task takes `ranking` (rank per label shown, 1 the best, equal ranks tie)."""

    choice: Literal["A", "B", "tie"] | None = None
    ranking: list[int] | None = Field(None, min_length=2, max_length=MAX_RESPONSES)
    strength: Strength | None = Field(None, description="how much better the preferred response is (Llama 2 scale)")
    rationale: str | None = Field(None, max_length=20_000)
    safety_flag: bool = Field(False, description="a response is unsafe, whatever the preference")
    time_spent_ms: int | None = Field(None, ge=0, lt=2**31)

    @model_validator(mode="after")
    def one_answer(self) -> AnnotationInput:
        if self.choice is None and self.ranking is None:
            raise ValueError("give a choice or a ranking")
        _check_answer(self.choice, self.ranking)
        if self.choice in ("A", "B") and self.strength is None:
            raise ValueError("a choice of A or B needs a strength")
        return self


class AnnotationEdit(Wire):
    """Fields to change in an annotation, within the edit window; the answer is given as on submission. Fields left
    out or null stay as they are."""

    choice: Literal["A", "B", "tie"] | None = None
    ranking: list[int] | None = Field(None, min_length=2, max_length=MAX_RESPONSES)
    strength: Strength | None = None
    rationale: str | None = Field(None, max_length=20_000)
    safety_flag: bool | None = None

    @model_validator(mode="after")
    def at_most_one_answer(self) -> AnnotationEdit:
        _check_answer(self.choice, self.ranking)
        return self


def _check_answer(choice: str | None, ranking: list[int] | None) -> None:
    if choice is not None and ranking is not None:
        raise ValueError("give a choice or a ranking, not both")
    if ranking is not None and any(r < 1 for r in ranking):
        raise ValueError("ranks start at 1")


class AnnotationRecord(Wire):
    id: int
    task_id: int
    annotator: str
    ranking: list[int] = Field(description="rank of each response in the order they were uploaded, 1 the best")
    choice: Literal["A", "B", "tie"] | None = Field(None, description="for the annotator's own display order")
    strength: Strength | None
    rationale: str | None
    safety_flag: bool
    created_at: datetime
    updated_at: datetime
    editable_until: datetime
    replayed: bool = Field(False, description="true when this submission was already stored")


class AnnotatorCreate(Wire):
    name: str = Field(min_length=1, max_length=200, pattern=r"^[\w.@+-]+$")
    role: Role = "annotator"


class AnnotatorCreated(Wire):
    id: int
    name: str
    role: Role
    key: str = Field(description="the annotator's key, shown once; the server keeps only its hash")


class Progress(Wire):
    annotator: str
    role: Role
    submitted: int
    skipped: int
    active: int
    available: int = Field(description="tasks this annotator could still be given")


class AnnotatorThroughput(Wire):
    annotator: str
    submitted: int
    skipped: int
    per_hour: float | None = Field(description="submissions per hour over this annotator's active span")
    median_seconds: float | None = Field(description="median time between being given a task and submitting it")


class Agreement(Wire):
    cohen_kappa: float | None = Field(description="mean pairwise Cohen's kappa over annotator pairs, on pair tasks")
    krippendorff_alpha: float | None = Field(description="nominal alpha over all response pairs of all tasks")
    units: int = Field(description="response pairs with two or more judgements")
    annotator_pairs: int


class RewardModelAgreement(Wire):
    model: str
    model_version: str
    comparisons: int
    agreement: float | None = Field(description="share of majority human preferences the model also prefers")


class DailyCount(Wire):
    date: str
    annotations: int


class AnnotationStats(Wire):
    tasks: dict[str, int] = Field(description="tasks per state: waiting, in_progress, complete")
    assignments: dict[str, int] = Field(description="assignments per state: active, submitted, skipped, expired")
    annotations: int
    safety_flags: int
    annotators: list[AnnotatorThroughput]
    agreement: Agreement
    reward_model: RewardModelAgreement | None = None
    daily: list[DailyCount]


class AuditEvent(Wire):
    id: int
    at: datetime
    actor: str | None
    action: str
    target: str
    data: dict[str, Any] | None


class AuditLog(Wire):
    events: list[AuditEvent]
