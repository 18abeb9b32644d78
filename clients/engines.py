"""The inference engines' scoring protocols, as their clients send them: vLLM's `/classify` and `/pooling`, TEI's
`/predict` and the OpenAI-style `/v1/embeddings` that SGLang answers for reward models. The server answers them
(service/http/engines.py) and the remote model backend speaks them toward a real engine.

Texts arrive rendered: the caller has applied the reward model's chat template (veRL's reward loop does, with the
reward model's own tokenizer), so they are scored as they are, with the tokenizer's special tokens around them,
as the engines do. A text over the model's limit is cut from its start (the end of a conversation is what a reward
model reads), unless the request asks for another cut (vLLM's `truncate_prompt_tokens`, TEI's `truncate` and
`truncation_direction`). Unknown fields are ignored, as vLLM ignores them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from arbiter.clients.protocol import Name, Text

TokenIds = list[Annotated[int, Field(ge=0)]]


class EngineWire(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=(), populate_by_name=True)


EngineInput = Text | list[Text] | TokenIds | list[TokenIds]


def as_inputs(value: EngineInput) -> list[str | list[int]]:
    """One text, a list of texts, one list of token ids or a list of them: always a list of inputs."""
    if isinstance(value, str):
        return [value]
    if value and all(isinstance(v, int) for v in value):
        return [list(value)]  # type: ignore[arg-type]  # one list of ids
    return list(value)  # type: ignore[arg-type]


class Usage(EngineWire):
    prompt_tokens: int
    total_tokens: int
    completion_tokens: int = 0


class ClassifyRequest(EngineWire):
    """vLLM's `POST /classify`."""

    model: Name | None = None
    input: EngineInput = Field(min_length=1)
    # vLLM renamed `activation` to `use_activation`; both are taken. True: sigmoid for one label, softmax otherwise.
    use_activation: bool | None = Field(None, validation_alias=AliasChoices("use_activation", "activation"))
    truncate_prompt_tokens: int | None = Field(None, ge=-1, description="keep the last N tokens; -1: the model's limit")


class ClassifyData(EngineWire):
    index: int
    label: str
    probs: list[float]
    num_classes: int


class ClassifyResponse(EngineWire):
    id: str
    object: Literal["list"] = "list"
    created: int
    model: str
    data: list[ClassifyData]
    usage: Usage


class PoolingRequest(EngineWire):
    """vLLM's `POST /pooling` for a classification (reward) model: each input's head outputs."""

    model: Name | None = None
    input: EngineInput = Field(min_length=1)
    task: Literal["classify", "score", "token_classify"] | None = Field(
        None, description="token_classify: a process reward model's step pooling (one [wrong, right] per step)"
    )
    encoding_format: Literal["float"] = "float"
    use_activation: bool | None = Field(None, validation_alias=AliasChoices("use_activation", "activation"))
    truncate_prompt_tokens: int | None = Field(None, ge=-1)


class PoolingData(EngineWire):
    index: int
    object: Literal["pooling"] = "pooling"
    data: list[float] | list[list[float]] = Field(description="the head's outputs; per step for token_classify")


class PoolingResponse(EngineWire):
    id: str
    object: Literal["list"] = "list"
    created: int
    model: str
    data: list[PoolingData]
    usage: Usage


class PredictRequest(EngineWire):
    """TEI's `POST /predict`: `"text"` or `["text"]` is one input, `[["text"], ["text"]]` a batch (TEI reads
    `["a", "b"]` as a sentence pair, which is for cross-encoders: refused here)."""

    inputs: Text | list[Text] | list[list[Text]] = Field(min_length=1)
    raw_scores: bool = False
    truncate: bool | None = None  # false: an input over the limit is refused (413), as TEI refuses it
    truncation_direction: Literal["Left", "Right", "left", "right"] | None = None  # unset: Arbiter's cut (the start)

    def texts(self) -> tuple[list[str], bool]:
        """The inputs, and whether they came as a batch (TEI answers a batch with a list per input)."""
        value = self.inputs
        if isinstance(value, str):
            return [value], False
        if all(isinstance(v, str) for v in value):
            if len(value) == 1:
                return [value[0]], False  # type: ignore[list-item]
            raise ValueError('["a", "b"] is a sentence pair, for cross-encoders; send a batch as [["a"], ["b"]]')
        batch = []
        for item in value:
            if isinstance(item, str) or len(item) != 1:
                raise ValueError('each input of a batch is a one-text list: [["a"], ["b"]] (pairs are not scored)')
            batch.append(item[0])
        return batch, True


class Prediction(EngineWire):
    score: float
    label: str


class EmbeddingsRequest(EngineWire):
    """`POST /v1/embeddings` as veRL's reward loop sends it to SGLang for a reward model."""

    model: Name | None = None
    input: EngineInput = Field(min_length=1)


class Embedding(EngineWire):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float]


class EmbeddingsResponse(EngineWire):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage
