"""The bundle manifest: every fact a server needs to score with a bundle exactly as training did."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# Major.minor. A reader accepts any minor of its own major; a new major means an incompatible layout.
FORMAT_VERSION = "1.6"
MANIFEST_FILE = "manifest.json"


class Section(BaseModel):
    # A newer minor version may add fields; a reader of the same major ignores what it does not know.
    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class Rendering(Section):
    """How a (prompt, response) pair becomes text. See arbiter.bundle.render."""

    kind: Literal["chat_template", "plain"]
    chat_template: str | None = Field(None, description="Jinja chat template, when kind is chat_template.")
    special_tokens: dict[str, str] = Field(
        default_factory=dict, description="bos_token, eos_token, ... as the chat template expects them."
    )


class FileEntry(Section):
    sha256: str
    bytes: int


class Parity(Section):
    max_abs_diff: float = Field(description="max |onnx - torch| over the checked items")
    items: int
    tolerance: float


class FidelityReport(Section):
    """How a reduced-precision file (int8; 1.5: bf16) scores next to fp32 on the eval data, and whether it passed
    the gate that keeps it.

    1.2 gates on accuracy and rank correlation; pairwise order agreement is still reported, but it counts flips of
    pairs whose fp32 scores differ by less than the rounding error: noise, not fidelity.
    """

    file: str | None = Field(description="model.int8.onnx or model.bf16.safetensors, or None when it was refused")
    accuracy: float
    fp32_accuracy: float
    spearman: float | None = Field(None, description="1.2: rank correlation with fp32 over every eval response")
    pairwise_agreement: float = Field(description="share of eval pairs ordered the same as fp32")
    max_accuracy_change: float | None = Field(None, description="1.2 gate: |accuracy - fp32_accuracy| at most this")
    min_spearman: float | None = Field(None, description="1.2 gate: spearman at least this")
    min_agreement: float | None = Field(None, description="before 1.2, the gate: pairwise_agreement at least this")
    pairs: int
    reason: str | None = None


class Graph(Section):
    """1.3: how model.onnx was written. Fused graphs use ONNX Runtime's own operators (the com.microsoft domain:
    Attention, SkipLayerNormalization, BiasGelu, ...), which other ONNX runtimes do not have."""

    exporter: Literal["torch.export"] = "torch.export"
    fusions: dict[str, int] = Field(
        default_factory=dict, description="onnxscript's ONNX Runtime fusions applied, by name; empty when unfused"
    )
    reason: str | None = Field(None, description="why the graph is unfused, when it is")


class Normalization(Section):
    mean: float
    std: float
    count: int
    source: str = Field(description="what the statistics were computed on")


class SourceEvaluation(Section):
    """Held-out accuracy on one source (or all of them), its bootstrap 95% interval, and its length bias."""

    pairs: int
    prompts: int | None = Field(
        None, description="1.6: distinct prompts; the interval resamples them, each with all of its pairs"
    )
    accuracy: float
    accuracy_low: float | None = None
    accuracy_high: float | None = None
    labels_prefer_longer: float | None = Field(None, description="pairs of different lengths: chosen is longer")
    model_prefers_longer: float | None = Field(None, description="of those: the longer one scores higher")


class Evaluation(Section):
    """1.2: the evaluation at export, per source; the model card's table and GET /v1/models/{name} show it."""

    data: str = Field(description="what was evaluated")
    overall: SourceEvaluation
    by_source: dict[str, SourceEvaluation]
    ece: float | None = None


class StepReading(Section):
    """A process reward model: one score per step, the logit of P(step right) read at the token that ends each step
    (the text is the steps, each followed by `token`). 1.4: bundles carry it too; their graph gives `token_scores`,
    one logit per token ([batch, tokens]), read at the step tokens, instead of `score`."""

    token: str = Field(description="the text that ends every step, one token of the tokenizer (<step>, <extra_0>)")
    token_id: int


class StepEvaluation(Section):
    """1.4: a process reward model's held-out step evaluation (the full report is step_eval.json)."""

    data: str = Field(description="what was evaluated")
    solutions: int
    steps: int
    wrong_steps: int
    step_auc: float = Field(description="P(a right step scores above a wrong one); chance is 0.5")
    step_auc_low: float
    step_auc_high: float
    position_auc: float = Field(description="the same AUC from the step's index alone: what position explains")
    within_position_auc: float = Field(description="the AUC among steps at the same index")
    step_accuracy: float = Field(description="steps judged right at P(right) >= 0.5")
    first_wrong_f1: float = Field(description="ProcessBench's F1 of the first wrong step (or none) predicted")


class ModelSpec(Section):
    """What a model is and how its inputs are built: shared by training checkpoints and bundles."""

    base_model: str
    architecture: Literal["encoder", "decoder"]
    model_type: str
    # first_token/last_token: the token where the mask says the text starts/ends. The two below came in 1.1, with
    # imported models: last_non_pad is transformers' *ForSequenceClassification rule for decoders (the last token
    # that is not pad_token_id), classifier an encoder's own classification head (BERT's pooler, ModernBERT's mean).
    # mean came in 1.2: the average of the real tokens' states, what sentence encoders were trained to summarise into.
    pooling: Literal["first_token", "last_token", "last_non_pad", "classifier", "mean"]
    max_length: int = Field(gt=8)
    padding_side: Literal["left", "right"]
    pad_token_id: int
    rendering: Rendering
    steps: StepReading | None = Field(None, description="set for a process reward model")


class Objectives(Section):
    """A model with several outputs (one per objective, such as helpfulness and safety): all come back per item."""

    names: list[str] = Field(min_length=2, description="the objectives, in the order of the graph's `scores` columns")
    score: str = Field(description="the objective that is the item's scalar `score`")


class Source(Section):
    """Where an imported model came from (arbiter import)."""

    format: Literal["transformers", "openrlhf"]
    checkpoint: str = Field(description="the folder or hub id imported")
    adapter: str | None = Field(None, description="a PEFT adapter folder merged into the checkpoint at import")
    architectures: list[str] = Field(default_factory=list, description="the checkpoint config's `architectures`")


class Engine(Section):
    """The engine that serves a model of runtime remote."""

    url: str = Field(description="the engine's base URL, such as http://vllm:8000")
    protocol: Literal["vllm", "sglang", "tei"] = Field(
        description="vllm: /classify; sglang: /v1/embeddings; tei: /predict"
    )
    model: str | None = Field(None, description="the model name the engine serves it under (vLLM, SGLang)")


class Manifest(Section):
    format_version: str = FORMAT_VERSION
    name: str
    model_version: str
    created_at: str
    arbiter_version: str
    model: ModelSpec
    score_semantics: Literal["raw_logit"] = "raw_logit"
    files: dict[str, FileEntry] = Field(default_factory=dict, description="checksums of every other file")
    parity: Parity | None = None
    graph: Graph | None = None
    int8: FidelityReport | None = None
    bf16: FidelityReport | None = Field(
        None, description="1.5: model.bf16.safetensors (the torch backend's bf16 weights) against fp32"
    )
    normalization: Normalization | None = None
    eval_accuracy: float | None = None
    evaluation: Evaluation | None = None
    step_evaluation: StepEvaluation | None = None
    training: dict[str, object] = Field(default_factory=dict)
    objectives: Objectives | None = None
    source: Source | None = None
    # onnx: model.onnx is the model. torch: the bundle has no graph (too large for one ONNX file, or not
    # exportable); the torch backend loads `source` and scores it with the same inputs. remote: `engine` scores it.
    runtime: Literal["onnx", "torch", "remote"] = "onnx"
    engine: Engine | None = None

    def kept(self, precision: Literal["int8", "bf16"]) -> FidelityReport | None:
        """The fidelity report of `precision`'s file, when the export's gate kept the file (None: not requested,
        or refused)."""
        report = self.int8 if precision == "int8" else self.bf16
        return report if report is not None and report.file is not None else None
