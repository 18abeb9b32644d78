"""The models a server holds: each bundle opened, warmed up and given its own batching queue."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from arbiter.bundle import BundleError, Manifest, load_bundle
from arbiter.bundle.onnx_model import OnnxRewardModel
from arbiter.bundle.render import Encoded, InputBuilder, Prompt
from arbiter.bundle.steps import DEFAULT_STEP_AGGREGATE, reduced_logit, split_steps, step_text
from arbiter.clients.protocol import ModelEvaluation, ModelInfo, Normalization
from arbiter.errors import InvalidInput, ModelNotFound, NotReady
from arbiter.service.runtime.batcher import Batcher, BatchObserver
from arbiter.service.runtime.health import Health
from arbiter.service.runtime.remote import RemotePolicy, RemoteRunner, open_remote

log = logging.getLogger("arbiter.models")


class Runner(Protocol):
    """What the batcher drives: ONNX Runtime (bundles) or torch (checkpoints, bundles of runtime torch)."""

    builder: InputBuilder

    @property
    def device(self) -> object:
        """Where it runs, as /v1/models shows it: cpu, cuda:0 (a torch.device or a string)."""
        ...

    @property
    def precision(self) -> str:
        """What runs, as /v1/models shows it: fp32 or int8 (ONNX Runtime), fp32-torch or bf16-torch, remote."""
        ...

    def run(self, sequences: list[Sequence[int]]) -> np.ndarray: ...

    def run_rows(self, sequences: list[Sequence[int]]) -> np.ndarray:
        """[batch, 1 + objectives]: the score, then each objective's output."""
        ...


@dataclass(frozen=True)
class ModelPolicy:
    """Which bundles are served and how each runs: backend, file, threads, and its batching queue (settings of the
    same names)."""

    bundles: list[str]
    default_model: str | None
    backend: Literal["onnx", "torch"]
    precision: Literal["fp32", "int8", "bf16"]
    threads: int
    device: str
    max_batch_tokens: int | None
    max_batch_size: int
    max_wait_ms: float
    max_queue: int


# Padded tokens per batch when max_batch_tokens is unset, measured with bench/serve_throughput.py on 2 cores:
# ONNX Runtime and torch in fp32 were fastest between 1,024 and 2,048; bf16 on a Xeon's AMX ran 141 seq/s in
# batches of 1,024 and 166-177 in batches of 2,048 (3,072: 169-184, with longer waits).
DEFAULT_BATCH_TOKENS = 1024
BF16_CPU_BATCH_TOKENS = 2048


def default_batch_tokens(runner: Runner) -> int:
    bf16_on_cpu = runner.precision == "bf16-torch" and str(runner.device) == "cpu"
    return BF16_CPU_BATCH_TOKENS if bf16_on_cpu else DEFAULT_BATCH_TOKENS


def open_model(path: Path, policy: ModelPolicy, remote: RemotePolicy, name: str | None) -> tuple[Manifest, Runner]:
    if policy.backend == "torch":
        from arbiter.service.runtime.torch_backend import open_checkpoint

        return open_checkpoint(path, policy.device, policy.precision)
    bundle = load_bundle(path)
    if bundle.manifest.runtime == "torch":  # a bundle without a graph names the checkpoint torch scores
        from arbiter.service.runtime.torch_backend import open_imported

        # int8 picks the ONNX files of the other bundles; a model without a graph has none, and runs in fp32
        precision = "fp32" if policy.precision == "int8" else policy.precision
        return bundle.manifest, open_imported(bundle, policy.threads, policy.device, precision)
    if bundle.manifest.runtime == "remote":
        return bundle.manifest, open_remote(bundle, remote, name)
    if policy.precision == "bf16":  # ONNX Runtime's CPU kernels have no bf16 matrix products: torch runs it
        try:
            from arbiter.service.runtime.torch_backend import open_bf16
        except ImportError as exc:
            raise BundleError(f"{path}: precision bf16 runs on torch, which is not installed here ({exc})") from exc
        return bundle.manifest, open_bf16(bundle, policy.threads, policy.device)
    # Measured with bench/reward_pipeline.py at max length 512 on 2 cores: spinning off, an ensemble of two models
    # ran 8.5 seq/s against 7.5, and one model alone 16.0 against 17.5; so it is off only when models share the cores.
    spinning = len(policy.bundles) <= 1
    return bundle.manifest, OnnxRewardModel.from_bundle(bundle, policy.precision, policy.threads, spinning)


class ServedModel:
    def __init__(
        self,
        name: str,
        manifest: Manifest,
        runner: Runner,
        policy: ModelPolicy,
        observer: BatchObserver,
        cores: threading.Lock | None = None,
    ) -> None:
        self.name, self.manifest, self.runner = name, manifest, runner
        self.precision = runner.precision
        self.objectives = manifest.objectives.names if manifest.objectives else None
        self.steps = manifest.model.steps  # a process reward model: its rows are step logits (read_steps)
        try:  # the first run allocates; a model that cannot run is a bad bundle, found here rather than per request
            if not isinstance(
                runner, RemoteRunner
            ):  # an engine that is down now is this model's 502s, not a bad bundle
                self.runner.run([self.runner.builder.encode("warm up", "ok").ids] * 2)
        except Exception as exc:
            raise BundleError(f"{name}: the model does not run ({type(exc).__name__}: {exc})") from exc
        self.batcher = Batcher(
            self.runner.run_rows if self.objectives else self.runner.run,
            policy.max_batch_tokens or default_batch_tokens(runner),
            policy.max_batch_size,
            policy.max_wait_ms / 1000,
            policy.max_queue,
            observer,
            name,
            columns=manifest.model.max_length if self.steps else 1 + len(self.objectives) if self.objectives else 1,
            cores=None if isinstance(runner, RemoteRunner) else cores,  # an engine's batches run on its own hardware
        )

    def close(self) -> None:
        self.batcher.close()
        if isinstance(self.runner, RemoteRunner):
            self.runner.close()

    @property
    def version(self) -> str:
        return self.manifest.model_version

    async def encode(
        self, prompts: Sequence[Prompt], responses: Sequence[str | Sequence[str]], separator: str | None = None
    ) -> list[Encoded]:
        """Tokenized off the event loop, whatever the size: one long text must not stall both faces. A response is
        a text or, for a process reward model, its steps; a PRM's text is split into steps at `separator` (default:
        its step token)."""
        if self.steps is not None:
            texts = [
                self._step_text(p, r, separator, i) for i, (p, r) in enumerate(zip(prompts, responses, strict=True))
            ]
        elif any(not isinstance(r, str) for r in responses) or separator is not None:
            raise InvalidInput(f"{self.name} is not a process reward model: give each item's response, not its steps")
        else:
            texts = [r for r in responses if isinstance(r, str)]
        return await asyncio.to_thread(self.runner.builder.encode_many, prompts, texts)

    def _step_text(self, prompt: Prompt, response: str | Sequence[str], separator: str | None, index: int) -> str:
        assert self.steps is not None
        token = self.steps.token
        steps = split_steps(response, separator or token) if isinstance(response, str) else list(response)
        prompt_texts = [prompt] if isinstance(prompt, str) else [m["content"] for m in prompt]
        if any(token in text for text in (*prompt_texts, *steps)):
            raise InvalidInput(
                f"item {index}: its text holds {token!r}, the token that ends each step of {self.name}, so its steps "
                "cannot be told apart; remove it, or give the steps with another separator"
            )
        return step_text(steps, token)

    async def run(self, encoded: Sequence[Encoded]) -> np.ndarray:
        """Scores sequences already admitted (see admission.py) through this model's batching queue."""
        scores, _ = await self.run_objectives(encoded)
        return scores

    async def run_objectives(self, encoded: Sequence[Encoded]) -> tuple[np.ndarray, np.ndarray | None]:
        """The scores and, for a model with several objectives, each objective's output ([items, objectives]). A
        process reward model's score is the logit of its default step aggregate."""
        if self.steps is not None:
            logits = await self.step_logits(encoded)
            return np.array([reduced_logit(row, DEFAULT_STEP_AGGREGATE) for row in logits]), None
        rows = await self.batcher.score([e.ids for e in encoded])
        return (rows[:, 0], rows[:, 1:]) if self.objectives else (rows, None)

    async def step_logits(self, encoded: Sequence[Encoded]) -> list[np.ndarray]:
        """A process reward model's logit of P(right) for each step read, per sequence (one forward pass each)."""
        assert self.steps is not None, "a process reward model"
        token_id = self.steps.token_id
        if missing := [i for i, e in enumerate(encoded) if token_id not in e.ids]:
            raise InvalidInput(
                f"item {missing[0]} has no step to score: no {self.steps.token!r} within the model's "
                f"{self.manifest.model.max_length} tokens (the first step is too long, or the text marks no step)",
                details={"items": missing},
            )
        rows = await self.batcher.score([e.ids for e in encoded])
        return [row[~np.isnan(row)] for row in rows]

    def normalize(self, scores: np.ndarray) -> np.ndarray:
        stats = self.manifest.normalization
        if stats is None or stats.std <= 0:
            return scores
        return (scores - stats.mean) / stats.std

    def info(self, default: bool) -> ModelInfo:
        m = self.manifest
        norm = m.normalization
        return ModelInfo(
            name=self.name,
            version=m.model_version,
            base_model=m.model.base_model,
            architecture=m.model.architecture,
            max_length=m.model.max_length,
            precision=self.precision,
            eval_accuracy=served_accuracy(m, self.precision),
            normalization=Normalization(mean=norm.mean, std=norm.std) if norm else None,
            default=default,
            objectives=self.objectives,
            score_objective=m.objectives.score if m.objectives else None,
            source_format=m.source.format if m.source else None,
            engine=m.engine.url if m.engine else None,
            engine_up=self.runner.up if isinstance(self.runner, RemoteRunner) else None,
            evaluation=ModelEvaluation.model_validate(m.evaluation.model_dump()) if m.evaluation else None,
            device=str(self.runner.device),
            step_token=self.steps.token if self.steps else None,
        )


def served_accuracy(manifest: Manifest, precision: str) -> float | None:
    """The held-out accuracy of the weights that run. The export judged each reduced-precision file it kept on the
    pairs that fp32's accuracy comes from; bf16 cast at load (a checkpoint, an imported model) was never judged."""
    reduced: dict[str, Literal["int8", "bf16"]] = {"int8": "int8", "bf16-torch": "bf16"}
    if precision not in reduced:
        return manifest.eval_accuracy
    report = manifest.kept(reduced[precision])
    return report.accuracy if report is not None else None


class ModelRegistry:
    """Loads every configured bundle; the `models` component is ready only when all of them loaded."""

    def __init__(
        self, policy: ModelPolicy, observer: BatchObserver, health: Health, remote: RemotePolicy | None = None
    ) -> None:
        self.policy, self.observer, self.health = policy, observer, health
        self.remote = remote or RemotePolicy()
        self.models: dict[str, ServedModel] = {}
        self.failures: dict[str, str] = {}  # by bundle (or default_model): why it is not served
        self.load_seconds: dict[str, float] = {}
        self.default_name: str | None = None
        self.loaded = False
        # The models that run here share the cores (the CPU's threads, or the GPU that torch drives): their batches
        # take turns, each with all of them. (Models on two different GPUs would not need to; one lock is simpler.)
        self.cores = threading.Lock()

    @property
    def ready(self) -> bool:
        return self.loaded and not self.failures and bool(self.models)

    def _record(self) -> None:
        if self.ready:
            self.health.ok("models")
        elif self.loaded:
            reasons = "; ".join(f"{name}: {why}" for name, why in self.failures.items())
            self.health.fail("models", reasons or "no bundle configured (--bundles)")

    def load_all(self) -> None:
        for spec in self.policy.bundles:
            name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
            try:
                self.open(path, name or None)
            except (BundleError, OSError, ValueError) as exc:
                self.failures[name or path] = str(exc)
                log.error("bundle not loaded; the server stays not ready", extra={"bundle": path, "reason": str(exc)})
        wanted = self.policy.default_model
        if wanted and wanted not in self.models:
            self.failures[wanted] = f"default_model {wanted!r} is not among the loaded models"
        self.default_name = wanted or next(iter(self.models), None)
        self.loaded = True
        self._record()

    def open(self, path: str, name: str | None = None) -> tuple[ServedModel, ServedModel | None]:
        """Opens the bundle at `path` and serves it as `name` (default: its manifest's name); returns it and the
        model it replaced, which its caller closes once requests already holding it are done."""
        started = time.perf_counter()
        manifest, runner = open_model(Path(path), self.policy, self.remote, name)
        name = name or manifest.name
        model = ServedModel(name, manifest, runner, self.policy, self.observer, self.cores)
        replaced = self.models.get(name)
        self.models[name] = model
        self.failures.pop(name, None)
        self.failures.pop(path, None)
        self._record()  # a bundle loaded later (POST /v1/admin/models) may be the one that failed at start
        self.load_seconds[name] = time.perf_counter() - started
        seconds = round(self.load_seconds[name], 3)
        batch_tokens = model.batcher.max_batch_tokens
        log.info(
            "model loaded",
            extra={"model": name, "version": model.version, "seconds": seconds, "max_batch_tokens": batch_tokens},
        )
        return model, replaced

    def get(self, name: str | None) -> ServedModel:
        if not self.health.ready:
            # Not only the models: a server that is not ready (a bad key list or reward spec, say) does not serve.
            raise NotReady(f"the server is not ready: {self.health.summary()}", self.health.holding_back())
        key = name or self.default_name
        if key not in self.models:
            raise ModelNotFound(f"no model named {name!r}", details={"models": sorted(self.models)})
        return self.models[key]

    def close(self) -> None:
        for model in self.models.values():
            model.close()
