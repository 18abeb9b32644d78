from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ChatMessage(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class Conversation(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    def __init__(self, messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ...) -> None: ...

class Prompt(_message.Message):
    __slots__ = ("text", "chat")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CHAT_FIELD_NUMBER: _ClassVar[int]
    text: str
    chat: Conversation
    def __init__(self, text: _Optional[str] = ..., chat: _Optional[_Union[Conversation, _Mapping]] = ...) -> None: ...

class ScoreItem(_message.Message):
    __slots__ = ("prompt", "response", "steps")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    prompt: Prompt
    response: str
    steps: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, prompt: _Optional[_Union[Prompt, _Mapping]] = ..., response: _Optional[str] = ..., steps: _Optional[_Iterable[str]] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("model", "items", "normalize", "sigmoid", "step_aggregate", "step_separator")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    SIGMOID_FIELD_NUMBER: _ClassVar[int]
    STEP_AGGREGATE_FIELD_NUMBER: _ClassVar[int]
    STEP_SEPARATOR_FIELD_NUMBER: _ClassVar[int]
    model: str
    items: _containers.RepeatedCompositeFieldContainer[ScoreItem]
    normalize: bool
    sigmoid: bool
    step_aggregate: str
    step_separator: str
    def __init__(self, model: _Optional[str] = ..., items: _Optional[_Iterable[_Union[ScoreItem, _Mapping]]] = ..., normalize: _Optional[bool] = ..., sigmoid: _Optional[bool] = ..., step_aggregate: _Optional[str] = ..., step_separator: _Optional[str] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("model", "model_version", "scores", "normalized_scores", "tokens", "truncated", "objectives", "steps")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    NORMALIZED_SCORES_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVES_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_version: str
    scores: _containers.RepeatedScalarFieldContainer[float]
    normalized_scores: _containers.RepeatedScalarFieldContainer[float]
    tokens: _containers.RepeatedScalarFieldContainer[int]
    truncated: _containers.RepeatedScalarFieldContainer[bool]
    objectives: _containers.RepeatedCompositeFieldContainer[Objectives]
    steps: _containers.RepeatedCompositeFieldContainer[StepScores]
    def __init__(self, model: _Optional[str] = ..., model_version: _Optional[str] = ..., scores: _Optional[_Iterable[float]] = ..., normalized_scores: _Optional[_Iterable[float]] = ..., tokens: _Optional[_Iterable[int]] = ..., truncated: _Optional[_Iterable[bool]] = ..., objectives: _Optional[_Iterable[_Union[Objectives, _Mapping]]] = ..., steps: _Optional[_Iterable[_Union[StepScores, _Mapping]]] = ...) -> None: ...

class StepScores(_message.Message):
    __slots__ = ("probabilities", "min", "last", "product", "mean")
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    min: float
    last: float
    product: float
    mean: float
    def __init__(self, probabilities: _Optional[_Iterable[float]] = ..., min: _Optional[float] = ..., last: _Optional[float] = ..., product: _Optional[float] = ..., mean: _Optional[float] = ...) -> None: ...

class Objectives(_message.Message):
    __slots__ = ("values",)
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.ScalarMap[str, float]
    def __init__(self, values: _Optional[_Mapping[str, float]] = ...) -> None: ...

class ComparePair(_message.Message):
    __slots__ = ("prompt", "response_a", "response_b")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_A_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_B_FIELD_NUMBER: _ClassVar[int]
    prompt: Prompt
    response_a: str
    response_b: str
    def __init__(self, prompt: _Optional[_Union[Prompt, _Mapping]] = ..., response_a: _Optional[str] = ..., response_b: _Optional[str] = ...) -> None: ...

class CompareRequest(_message.Message):
    __slots__ = ("model", "pairs")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    model: str
    pairs: _containers.RepeatedCompositeFieldContainer[ComparePair]
    def __init__(self, model: _Optional[str] = ..., pairs: _Optional[_Iterable[_Union[ComparePair, _Mapping]]] = ...) -> None: ...

class Comparison(_message.Message):
    __slots__ = ("score_a", "score_b", "prob_a")
    SCORE_A_FIELD_NUMBER: _ClassVar[int]
    SCORE_B_FIELD_NUMBER: _ClassVar[int]
    PROB_A_FIELD_NUMBER: _ClassVar[int]
    score_a: float
    score_b: float
    prob_a: float
    def __init__(self, score_a: _Optional[float] = ..., score_b: _Optional[float] = ..., prob_a: _Optional[float] = ...) -> None: ...

class CompareResponse(_message.Message):
    __slots__ = ("model", "model_version", "comparisons")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    COMPARISONS_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_version: str
    comparisons: _containers.RepeatedCompositeFieldContainer[Comparison]
    def __init__(self, model: _Optional[str] = ..., model_version: _Optional[str] = ..., comparisons: _Optional[_Iterable[_Union[Comparison, _Mapping]]] = ...) -> None: ...

class RankRequest(_message.Message):
    __slots__ = ("model", "prompt", "responses")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    model: str
    prompt: Prompt
    responses: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[str] = ..., prompt: _Optional[_Union[Prompt, _Mapping]] = ..., responses: _Optional[_Iterable[str]] = ...) -> None: ...

class RankResponse(_message.Message):
    __slots__ = ("model", "model_version", "scores", "order")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_version: str
    scores: _containers.RepeatedScalarFieldContainer[float]
    order: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, model: _Optional[str] = ..., model_version: _Optional[str] = ..., scores: _Optional[_Iterable[float]] = ..., order: _Optional[_Iterable[int]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Normalization(_message.Message):
    __slots__ = ("mean", "std")
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    mean: float
    std: float
    def __init__(self, mean: _Optional[float] = ..., std: _Optional[float] = ...) -> None: ...

class AccuracyReport(_message.Message):
    __slots__ = ("pairs", "accuracy", "accuracy_low", "accuracy_high", "labels_prefer_longer", "model_prefers_longer", "prompts")
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_LOW_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_HIGH_FIELD_NUMBER: _ClassVar[int]
    LABELS_PREFER_LONGER_FIELD_NUMBER: _ClassVar[int]
    MODEL_PREFERS_LONGER_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    pairs: int
    accuracy: float
    accuracy_low: float
    accuracy_high: float
    labels_prefer_longer: float
    model_prefers_longer: float
    prompts: int
    def __init__(self, pairs: _Optional[int] = ..., accuracy: _Optional[float] = ..., accuracy_low: _Optional[float] = ..., accuracy_high: _Optional[float] = ..., labels_prefer_longer: _Optional[float] = ..., model_prefers_longer: _Optional[float] = ..., prompts: _Optional[int] = ...) -> None: ...

class ModelEvaluation(_message.Message):
    __slots__ = ("data", "overall", "by_source", "ece")
    class BySourceEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: AccuracyReport
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[AccuracyReport, _Mapping]] = ...) -> None: ...
    DATA_FIELD_NUMBER: _ClassVar[int]
    OVERALL_FIELD_NUMBER: _ClassVar[int]
    BY_SOURCE_FIELD_NUMBER: _ClassVar[int]
    ECE_FIELD_NUMBER: _ClassVar[int]
    data: str
    overall: AccuracyReport
    by_source: _containers.MessageMap[str, AccuracyReport]
    ece: float
    def __init__(self, data: _Optional[str] = ..., overall: _Optional[_Union[AccuracyReport, _Mapping]] = ..., by_source: _Optional[_Mapping[str, AccuracyReport]] = ..., ece: _Optional[float] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "base_model", "architecture", "max_length", "precision", "eval_accuracy", "normalization", "default", "objectives", "score_objective", "source_format", "engine", "engine_up", "evaluation", "device", "step_token")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    EVAL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    NORMALIZATION_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVES_FIELD_NUMBER: _ClassVar[int]
    SCORE_OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    ENGINE_UP_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    STEP_TOKEN_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    base_model: str
    architecture: str
    max_length: int
    precision: str
    eval_accuracy: float
    normalization: Normalization
    default: bool
    objectives: _containers.RepeatedScalarFieldContainer[str]
    score_objective: str
    source_format: str
    engine: str
    engine_up: bool
    evaluation: ModelEvaluation
    device: str
    step_token: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., base_model: _Optional[str] = ..., architecture: _Optional[str] = ..., max_length: _Optional[int] = ..., precision: _Optional[str] = ..., eval_accuracy: _Optional[float] = ..., normalization: _Optional[_Union[Normalization, _Mapping]] = ..., default: _Optional[bool] = ..., objectives: _Optional[_Iterable[str]] = ..., score_objective: _Optional[str] = ..., source_format: _Optional[str] = ..., engine: _Optional[str] = ..., engine_up: _Optional[bool] = ..., evaluation: _Optional[_Union[ModelEvaluation, _Mapping]] = ..., device: _Optional[str] = ..., step_token: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message", "details_json", "grpc_status")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    GRPC_STATUS_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    details_json: str
    grpc_status: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., details_json: _Optional[str] = ..., grpc_status: _Optional[str] = ...) -> None: ...

class ScoreStreamRequest(_message.Message):
    __slots__ = ("id", "request")
    ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    id: str
    request: ScoreRequest
    def __init__(self, id: _Optional[str] = ..., request: _Optional[_Union[ScoreRequest, _Mapping]] = ...) -> None: ...

class ScoreStreamResponse(_message.Message):
    __slots__ = ("id", "response", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    response: ScoreResponse
    error: Error
    def __init__(self, id: _Optional[str] = ..., response: _Optional[_Union[ScoreResponse, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class JudgeItem(_message.Message):
    __slots__ = ("prompt", "response", "response_a", "response_b")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_A_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_B_FIELD_NUMBER: _ClassVar[int]
    prompt: Prompt
    response: str
    response_a: str
    response_b: str
    def __init__(self, prompt: _Optional[_Union[Prompt, _Mapping]] = ..., response: _Optional[str] = ..., response_a: _Optional[str] = ..., response_b: _Optional[str] = ...) -> None: ...

class JudgeRequest(_message.Message):
    __slots__ = ("mode", "constitution", "principles", "sampling", "chain_of_thought", "rationale", "seed", "items")
    MODE_FIELD_NUMBER: _ClassVar[int]
    CONSTITUTION_FIELD_NUMBER: _ClassVar[int]
    PRINCIPLES_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    CHAIN_OF_THOUGHT_FIELD_NUMBER: _ClassVar[int]
    RATIONALE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    mode: str
    constitution: str
    principles: _containers.RepeatedScalarFieldContainer[str]
    sampling: str
    chain_of_thought: bool
    rationale: bool
    seed: int
    items: _containers.RepeatedCompositeFieldContainer[JudgeItem]
    def __init__(self, mode: _Optional[str] = ..., constitution: _Optional[str] = ..., principles: _Optional[_Iterable[str]] = ..., sampling: _Optional[str] = ..., chain_of_thought: _Optional[bool] = ..., rationale: _Optional[bool] = ..., seed: _Optional[int] = ..., items: _Optional[_Iterable[_Union[JudgeItem, _Mapping]]] = ...) -> None: ...

class PrincipleVerdict(_message.Message):
    __slots__ = ("principle", "score", "normalized", "prob_a", "prob_a_swapped_order", "position_disagreement", "inconsistent", "rationale", "method", "cached")
    PRINCIPLE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    NORMALIZED_FIELD_NUMBER: _ClassVar[int]
    PROB_A_FIELD_NUMBER: _ClassVar[int]
    PROB_A_SWAPPED_ORDER_FIELD_NUMBER: _ClassVar[int]
    POSITION_DISAGREEMENT_FIELD_NUMBER: _ClassVar[int]
    INCONSISTENT_FIELD_NUMBER: _ClassVar[int]
    RATIONALE_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    principle: str
    score: float
    normalized: float
    prob_a: float
    prob_a_swapped_order: float
    position_disagreement: float
    inconsistent: bool
    rationale: str
    method: str
    cached: bool
    def __init__(self, principle: _Optional[str] = ..., score: _Optional[float] = ..., normalized: _Optional[float] = ..., prob_a: _Optional[float] = ..., prob_a_swapped_order: _Optional[float] = ..., position_disagreement: _Optional[float] = ..., inconsistent: _Optional[bool] = ..., rationale: _Optional[str] = ..., method: _Optional[str] = ..., cached: _Optional[bool] = ...) -> None: ...

class Verdict(_message.Message):
    __slots__ = ("score", "inconsistent", "principles", "prompt_tokens", "completion_tokens")
    SCORE_FIELD_NUMBER: _ClassVar[int]
    INCONSISTENT_FIELD_NUMBER: _ClassVar[int]
    PRINCIPLES_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    score: float
    inconsistent: bool
    principles: _containers.RepeatedCompositeFieldContainer[PrincipleVerdict]
    prompt_tokens: int
    completion_tokens: int
    def __init__(self, score: _Optional[float] = ..., inconsistent: _Optional[bool] = ..., principles: _Optional[_Iterable[_Union[PrincipleVerdict, _Mapping]]] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ...) -> None: ...

class JudgeResponse(_message.Message):
    __slots__ = ("backend", "model", "constitution", "constitution_version", "mode", "verdicts")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CONSTITUTION_FIELD_NUMBER: _ClassVar[int]
    CONSTITUTION_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    backend: str
    model: str
    constitution: str
    constitution_version: str
    mode: str
    verdicts: _containers.RepeatedCompositeFieldContainer[Verdict]
    def __init__(self, backend: _Optional[str] = ..., model: _Optional[str] = ..., constitution: _Optional[str] = ..., constitution_version: _Optional[str] = ..., mode: _Optional[str] = ..., verdicts: _Optional[_Iterable[_Union[Verdict, _Mapping]]] = ...) -> None: ...

class RewardItem(_message.Message):
    __slots__ = ("prompt", "response", "group", "unsafe", "label", "data_source")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    UNSAFE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    DATA_SOURCE_FIELD_NUMBER: _ClassVar[int]
    prompt: Prompt
    response: str
    group: str
    unsafe: bool
    label: _struct_pb2.Value
    data_source: str
    def __init__(self, prompt: _Optional[_Union[Prompt, _Mapping]] = ..., response: _Optional[str] = ..., group: _Optional[str] = ..., unsafe: _Optional[bool] = ..., label: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., data_source: _Optional[str] = ...) -> None: ...

class RewardRequest(_message.Message):
    __slots__ = ("spec", "items", "update_stats")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    UPDATE_STATS_FIELD_NUMBER: _ClassVar[int]
    spec: str
    items: _containers.RepeatedCompositeFieldContainer[RewardItem]
    update_stats: bool
    def __init__(self, spec: _Optional[str] = ..., items: _Optional[_Iterable[_Union[RewardItem, _Mapping]]] = ..., update_stats: _Optional[bool] = ...) -> None: ...

class Values(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class Verification(_message.Message):
    __slots__ = ("status", "score", "extracted", "detail")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    EXTRACTED_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    status: str
    score: float
    extracted: str
    detail: str
    def __init__(self, status: _Optional[str] = ..., score: _Optional[float] = ..., extracted: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class Verifications(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Verification]
    def __init__(self, items: _Optional[_Iterable[_Union[Verification, _Mapping]]] = ...) -> None: ...

class ItemFailure(_message.Message):
    __slots__ = ("kind",)
    KIND_FIELD_NUMBER: _ClassVar[int]
    kind: str
    def __init__(self, kind: _Optional[str] = ...) -> None: ...

class RewardResponse(_message.Message):
    __slots__ = ("spec", "spec_version", "rewards", "components", "extras", "mask", "failure_kind", "verifications")
    class ComponentsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Values
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Values, _Mapping]] = ...) -> None: ...
    class ExtrasEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Values
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Values, _Mapping]] = ...) -> None: ...
    class VerificationsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Verifications
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Verifications, _Mapping]] = ...) -> None: ...
    SPEC_FIELD_NUMBER: _ClassVar[int]
    SPEC_VERSION_FIELD_NUMBER: _ClassVar[int]
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    EXTRAS_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    FAILURE_KIND_FIELD_NUMBER: _ClassVar[int]
    VERIFICATIONS_FIELD_NUMBER: _ClassVar[int]
    spec: str
    spec_version: str
    rewards: _containers.RepeatedScalarFieldContainer[float]
    components: _containers.MessageMap[str, Values]
    extras: _containers.MessageMap[str, Values]
    mask: _containers.RepeatedScalarFieldContainer[bool]
    failure_kind: _containers.RepeatedCompositeFieldContainer[ItemFailure]
    verifications: _containers.MessageMap[str, Verifications]
    def __init__(self, spec: _Optional[str] = ..., spec_version: _Optional[str] = ..., rewards: _Optional[_Iterable[float]] = ..., components: _Optional[_Mapping[str, Values]] = ..., extras: _Optional[_Mapping[str, Values]] = ..., mask: _Optional[_Iterable[bool]] = ..., failure_kind: _Optional[_Iterable[_Union[ItemFailure, _Mapping]]] = ..., verifications: _Optional[_Mapping[str, Verifications]] = ...) -> None: ...
