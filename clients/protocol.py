"""The wire protocol, defined once: the JSON bodies of every route. The server imports these models.

Scores are raw logits (higher is better) unless the request asks for `sigmoid`; vLLM and TEI squash
single-label outputs by default, which hides the scale a PPO loop needs.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

# Every text a request carries is capped here, on both faces (gRPC requests are validated by these models too), so
# a multi-megabyte string is refused before anything tokenizes it; names are short by nature.
MAX_TEXT_CHARS = 1_000_000
MAX_NAME_CHARS = 200
Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]
Name = Annotated[str, Field(max_length=MAX_NAME_CHARS)]


class Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ChatMessage(Wire):
    role: Literal["system", "user", "assistant", "tool"]
    content: Text


Prompt = Text | list[ChatMessage]
# A prompt as rendering and the judge take it: the text, or the messages as plain dicts.
PlainPrompt = str | list[dict[str, str]]


def plain_prompt(value: Prompt) -> PlainPrompt:
    """A wire prompt as rendering takes it: the text, or the messages as plain dicts."""
    return value if isinstance(value, str) else [m.model_dump() for m in value]


# How a process reward model's step scores become one score; the same names as arbiter.bundle.steps.StepAggregate,
# spelled here because clients carry no bundle code (a test checks that the two agree).
StepAggregate = Literal["min", "last", "product", "mean"]


class ScoreItem(Wire):
    """A prompt and its response, or, for a process reward model, the response's `steps` in order."""

    prompt: Prompt
    response: Text | None = None
    steps: list[Text] | None = Field(None, min_length=1, description="a PRM's steps, instead of `response`")

    @model_validator(mode="after")
    def one_form(self) -> ScoreItem:
        if (self.response is None) == (self.steps is None):
            raise ValueError("give either response or steps (a process reward model's), not both or neither")
        return self


class ScoreRequest(Wire):
    model: Name | None = Field(None, description="model name; the server's default when omitted")
    items: list[ScoreItem] = Field(min_length=1)
    normalize: bool = Field(False, description="also return (score - mean) / std with the bundle's statistics")
    sigmoid: bool = Field(False, description="return sigmoid(score) instead of the raw logit")
    step_aggregate: StepAggregate = Field(
        "min", description="a PRM: which reduction of the step scores is the item's score (as a logit)"
    )
    step_separator: Text | None = Field(
        None,
        min_length=1,
        description="a PRM: what ends each step of a `response` (such as a blank line); the bundle's step token "
        "when omitted",
    )


class StepScores(Wire):
    """A process reward model's reading of one item: P(step right) for each step read, and their reductions."""

    probabilities: list[float] = Field(description="one per step read; fewer than given when the item was cut")
    min: float
    last: float
    product: float
    mean: float


class ScoreResponse(Wire):
    model: str
    model_version: str
    scores: list[float]
    normalized_scores: list[float] | None = None
    tokens: list[int] = Field(description="tokens scored per item, special tokens included")
    truncated: list[bool] = Field(description="whether the item's prompt or response was cut to fit")
    objectives: list[dict[str, float]] | None = Field(
        None, description="a model with several objectives: each one's raw output, per item (the score is one of them)"
    )
    steps: list[StepScores] | None = Field(
        None, description="a process reward model: each item's step scores; `scores` is logit(step_aggregate)"
    )


class ComparePair(Wire):
    prompt: Prompt
    response_a: Text
    response_b: Text


class CompareRequest(Wire):
    """One pair (prompt, response_a, response_b) or a batch of them in `pairs`."""

    model: Name | None = None
    prompt: Prompt | None = None
    response_a: Text | None = None
    response_b: Text | None = None
    pairs: list[ComparePair] | None = None

    @model_validator(mode="after")
    def one_form(self) -> CompareRequest:
        single = (self.prompt, self.response_a, self.response_b)
        if self.pairs is not None and any(v is not None for v in single):
            raise ValueError("give either prompt/response_a/response_b or pairs, not both")
        if self.pairs is None and any(v is None for v in single):
            raise ValueError("give prompt, response_a and response_b (or a list of pairs)")
        if self.pairs is not None and not self.pairs:
            raise ValueError("pairs must not be empty")
        return self

    def all_pairs(self) -> list[ComparePair]:
        if self.pairs is not None:
            return self.pairs
        return [ComparePair(prompt=self.prompt, response_a=self.response_a, response_b=self.response_b)]


class Comparison(Wire):
    score_a: float
    score_b: float
    prob_a: float = Field(description="P(a preferred) = sigmoid(score_a - score_b)")


class CompareResponse(Wire):
    model: str
    model_version: str
    comparisons: list[Comparison]


class RankRequest(Wire):
    model: Name | None = None
    prompt: Prompt
    responses: list[Text] = Field(min_length=2)


class RankResponse(Wire):
    model: str
    model_version: str
    scores: list[float]
    order: list[int] = Field(description="indices into responses, best first")


class Normalization(Wire):
    mean: float
    std: float


class AccuracyReport(Wire):
    """Held-out accuracy of a model on one source (or all of them), with its length bias."""

    pairs: int
    prompts: int | None = Field(None, description="distinct prompts among the pairs (bundles from format 1.6)")
    accuracy: float
    accuracy_low: float | None = Field(
        None, description="bootstrap 95% interval, lower end (from format 1.6: resampling prompts, not pairs)"
    )
    accuracy_high: float | None = Field(None, description="bootstrap 95% interval, upper end")
    labels_prefer_longer: float | None = Field(
        None, description="among pairs of different lengths, the share whose chosen response is the longer"
    )
    model_prefers_longer: float | None = Field(None, description="the share of those the model scores longer-higher")


class ModelEvaluation(Wire):
    """The evaluation the bundle was exported with (its model card's table)."""

    data: str = Field(description="what was evaluated, such as the held-out split of the training files")
    overall: AccuracyReport
    by_source: dict[str, AccuracyReport]
    ece: float | None = Field(None, description="expected calibration error of sigmoid(score difference)")


class ModelInfo(Wire):
    name: str
    version: str
    base_model: str
    architecture: str
    max_length: int
    precision: str
    eval_accuracy: float | None = Field(
        description="held-out accuracy of the precision that runs (int8, bf16: as the export's fidelity gate "
        "measured it); null when it was never measured"
    )
    normalization: Normalization | None
    default: bool
    objectives: list[str] | None = Field(None, description="a model with several outputs: their names, in order")
    score_objective: str | None = Field(None, description="the objective that is each item's `score`")
    source_format: str | None = Field(None, description="where an imported model came from: transformers, openrlhf")
    engine: str | None = Field(None, description="a remote model: the engine's URL")
    engine_up: bool | None = Field(None, description="a remote model: whether the engine's health check passes")
    evaluation: ModelEvaluation | None = Field(
        None, description="held-out evaluation of fp32 at export, when there was one"
    )
    device: str = Field("", description="where the model runs: cpu, cuda:0, ...; empty for a remote model")
    step_token: str | None = Field(None, description="a process reward model: the token that ends each step")


class ModelList(Wire):
    models: list[ModelInfo]


class LoadModelRequest(Wire):
    """Serve a bundle without a restart: a new name adds a model, a served name is replaced once loaded."""

    bundle: str = Field(min_length=1, description="the bundle folder, as the server sees it")
    name: Name | None = Field(None, description="the model's name (default: the bundle's own name)")
    default: bool = Field(False, description="make it the default model")


class ErrorDetail(Wire):
    code: str
    message: str
    details: object | None = None
    request_id: str | None = Field(None, description="the request's X-Request-ID: the server's log lines carry it")
    status: int | None = Field(None, description="the HTTP status, on the gRPC face too (its `arbiter-error` trailer)")


class ErrorBody(Wire):
    error: ErrorDetail


class OpenRLHFRewardRequest(BaseModel):
    """OpenRLHF's remote reward-model protocol (`--remote_rm_url`): full texts, optionally their prompts."""

    model_config = ConfigDict(extra="allow")
    query: list[Text] = Field(min_length=1)
    prompts: list[Text] | None = None
    labels: list[object] | None = None


class OpenRLHFRewardResponse(BaseModel):
    rewards: list[float]
    scores: list[float]
    extra_logs: dict[str, list[float]] = Field(default_factory=dict)


# -- the LLM judge ---------------------------------------------------------------------------------------------


class JudgeItem(Wire):
    """Absolute mode: prompt and response. Pairwise mode: prompt, response_a and response_b."""

    prompt: Prompt
    response: Text | None = None
    response_a: Text | None = None
    response_b: Text | None = None


class JudgeRequest(Wire):
    mode: Literal["absolute", "pairwise"] = "absolute"
    constitution: Name | None = Field(None, description="constitution name; the server's default when omitted")
    principles: list[Name] | None = Field(None, description="principle names to use (default: all)")
    sampling: Literal["all", "sample"] = Field(
        "all", description="all: every principle, averaged; sample: one principle drawn per item (as in CAI)"
    )
    chain_of_thought: bool = Field(
        False, description="pairwise: reason first, then answer; P(A) is clamped to [0.4, 0.6] as in CAI"
    )
    rationale: bool = Field(True, description="absolute: write a rationale before the score")
    seed: int = Field(0, description="seed of principle sampling")
    items: list[JudgeItem] = Field(min_length=1)

    @model_validator(mode="after")
    def items_fit_the_mode(self) -> JudgeRequest:
        for i, item in enumerate(self.items):
            if self.mode == "absolute" and (item.response is None or item.response_a or item.response_b):
                raise ValueError(f"items[{i}]: absolute judging takes prompt and response")
            if self.mode == "pairwise" and (item.response_a is None or item.response_b is None or item.response):
                raise ValueError(f"items[{i}]: pairwise judging takes prompt, response_a and response_b")
        return self


class PrincipleVerdict(Wire):
    principle: str
    score: float | None = Field(None, description="absolute: the rubric score (an expected value with log-probs)")
    normalized: float | None = Field(None, description="absolute: the score mapped onto [0, 1] over the rubric")
    prob_a: float | None = Field(None, description="pairwise: P(a preferred), averaged over both orders")
    prob_a_swapped_order: float | None = Field(None, description="pairwise: P(a preferred) when a was shown second")
    position_disagreement: float | None = Field(None, description="pairwise: |P(a) first - P(a) second|")
    inconsistent: bool | None = Field(None, description="pairwise: the two orders picked different responses")
    rationale: str | None = None
    method: Literal["logprobs", "parsed"] = Field(description="log-probabilities, or the answer parsed from text")
    cached: bool = False


class Verdict(Wire):
    score: float = Field(description="absolute: mean normalized score in [0, 1]; pairwise: mean P(a preferred)")
    inconsistent: bool | None = Field(None, description="pairwise: the two orders picked different responses")
    principles: list[PrincipleVerdict]
    prompt_tokens: int
    completion_tokens: int


class JudgeResponse(Wire):
    backend: str
    model: str
    constitution: str
    constitution_version: str
    mode: Literal["absolute", "pairwise"]
    verdicts: list[Verdict]


class PrincipleInfo(Wire):
    name: str
    text: str
    rubric: dict[int, str]
    pairwise: str


class ConstitutionInfo(Wire):
    name: str
    version: str
    description: str
    principles: list[PrincipleInfo]
    default: bool


class ConstitutionList(Wire):
    constitutions: list[ConstitutionInfo]


# -- reward pipelines ------------------------------------------------------------------------------------------


class RewardItem(Wire):
    prompt: Prompt
    response: Text
    group: Name | None = Field(None, description="responses to the same prompt share a group (group_norm, GRPO)")
    unsafe: bool | None = Field(None, description="the prompt is flagged unsafe (the Llama 2 gating rule)")
    label: JsonValue = Field(
        None,
        description="the reference verifiers check against: a final answer, a list of acceptable answers, or an "
        'object such as HumanEval\'s {"test": ..., "entry_point": ...}',
    )
    data_source: Name | None = Field(
        None, description="where the item comes from (gsm8k, humaneval, ...): verifier components may be routed by it"
    )


class RewardRequest(Wire):
    spec: Name | None = Field(None, description="reward spec name; the server's default when omitted")
    items: list[RewardItem] = Field(min_length=1)
    update_stats: bool = Field(
        True,
        description="false: score under the running statistics as they stand, neither folding this batch into "
        "them nor counting it in the spec's telemetry (evaluation, a look at the reward without moving it)",
    )


class Verification(Wire):
    """One verifier's verdict on one item: why its score is what it is."""

    status: Literal["ok", "wrong", "no_answer", "timeout", "error", "skipped"] = Field(
        description="skipped: the component is routed to other data sources"
    )
    score: float
    extracted: str | None = Field(None, description="the answer as the verifier read it")
    detail: str | None = Field(None, description="why, for a failure")


class RewardResponse(Wire):
    spec: str
    spec_version: str
    rewards: list[float]
    components: dict[str, list[float]] = Field(description="every component's value per item, after its transforms")
    extras: dict[str, list[float]] = Field(default_factory=dict, description="e.g. ensemble std, safety gate used")
    mask: list[bool] | None = Field(
        None,
        description="with verifier components: true where a verifier failed (timeout, error, or no answer) and "
        "the spec masks such items; leave them out of the loss, their reward is not a judgement",
    )
    failure_kind: list[str | None] | None = Field(
        None, description="per item: the first failing verifier component and its status (`correct: timeout`)"
    )
    verifications: dict[str, list[Verification]] = Field(
        default_factory=dict, description="each verifier component's verdict per item"
    )


class SampleRewardRequest(BaseModel):
    """One sample, as slime's `remote_rm` posts it (`--rm-type remote_rm --rm-url
    http://host:8000/v1/reward/sample?spec=math`): its prompt, its response and its label."""

    model_config = ConfigDict(extra="allow")  # a trainer's own fields beside these are not the server's concern
    prompt: Prompt
    response: Text
    label: JsonValue = None


class SampleRewardResponse(Wire):
    """slime takes the reward from `reward` with `--reward-key reward`; the rest is there to be logged."""

    reward: float
    spec: str
    spec_version: str
    components: dict[str, float]
    mask: bool = Field(False, description="a verifier failed and the spec masks such samples: leave it out of the loss")
    failure_kind: str | None = None


class RewardSpecInfo(Wire):
    name: str
    version: str
    description: str
    components: list[str]
    default: bool


class RewardSpecList(Wire):
    specs: list[RewardSpecInfo]
