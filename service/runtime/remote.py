"""The remote backend: a model that a GPU engine serves (vLLM's /classify, SGLang's /v1/embeddings, TEI's /predict)
becomes a named model here, so that normalization, reward specs, ensembles, metrics, access control and the trainer
adapters work unchanged over an engine this server does not run.

The batcher hands each window of work to `run_rows`, which cuts it into the engine's batch size and posts the pieces
concurrently, at most `concurrency` at a time. Token ids go to vLLM and SGLang as they are (the engine does not
tokenize again); TEI takes text only, so it gets the ids decoded. A failed post (connection refused, a timeout, a
5xx or 429) is retried with jittered exponential backoff; after the last try, or at once while the engine's health
check fails, the request is a 502 for this model only. A thread polls the engine's /health and lets requests through
again as soon as it answers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from arbiter.bundle import Bundle, BundleError
from arbiter.clients.engines import ClassifyResponse, EmbeddingsResponse, Prediction
from arbiter.clients.retry import Retry
from arbiter.errors import EngineDown, InvalidInput

log = logging.getLogger("arbiter.remote")
RETRIED_STATUSES = {408, 429, 500, 502, 503, 504}
REFUSED_INPUT = {400, 413, 422}


@dataclass(frozen=True)
class RemotePolicy:
    """How this server treats the engines it fronts (settings of the same names)."""

    remote_timeout_s: float = 30.0
    remote_attempts: int = 3
    remote_concurrency: int = 8
    remote_batch_size: int = 32
    remote_health_interval_s: float = 2.0


class EngineError(Exception):
    """One post failed; `retry` says whether another try may succeed, `retry_after` what the engine asked for."""

    def __init__(self, message: str, retry: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry, self.retry_after = retry, retry_after


class RemoteRunner:
    device = ""  # nothing runs here: the engine scores
    precision = "remote"

    def __init__(self, bundle: Bundle, policy: RemotePolicy, name: str | None = None) -> None:
        engine = bundle.manifest.engine
        if engine is None:
            raise BundleError(f"{bundle.path}: runtime remote, but the manifest names no engine")
        self.engine, self.policy, self.name = engine, policy, name or bundle.manifest.name
        self.spec, self.builder = bundle.manifest.model, bundle.input_builder()
        objectives = bundle.manifest.objectives
        self.labels = objectives.names if objectives else ["LABEL_0"]
        self.score_index = self.labels.index(objectives.score) if objectives else 0
        limits = httpx.Limits(
            max_connections=policy.remote_concurrency, max_keepalive_connections=policy.remote_concurrency
        )
        self.client = httpx.Client(base_url=engine.url, timeout=policy.remote_timeout_s, limits=limits)
        # Its own connection: a health check must not wait behind busy scoring connections and read as "down".
        self.prober = httpx.Client(base_url=engine.url, timeout=min(policy.remote_timeout_s, 5.0))
        self.pool = ThreadPoolExecutor(policy.remote_concurrency, thread_name_prefix=f"engine-{self.name}")
        self.retry = Retry(attempts=policy.remote_attempts, backoff=0.1, max_backoff=2.0)
        self.up, self.down_reason = True, ""
        self._closed = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name=f"engine-health-{self.name}", daemon=True)
        self._watcher.start()

    def run(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        rows: np.ndarray = self.run_rows(sequences)[:, 0]
        return rows

    def run_rows(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """[batch, 1 + labels]: the score, then each label's raw output, as every runner gives them."""
        if not self.up:
            raise EngineDown(f"the engine of model {self.name!r} is down ({self.down_reason})", self._details())
        size = self.policy.remote_batch_size
        pieces = [list(sequences[i : i + size]) for i in range(0, len(sequences), size)]
        try:
            outputs = np.concatenate(list(self.pool.map(self._post_with_retries, pieces)))
        except RuntimeError as error:  # the pool shut down under this window (the server is stopping)
            raise EngineDown(f"model {self.name!r} is closing ({error})", self._details()) from None
        return np.column_stack([outputs[:, self.score_index], outputs])

    def close(self) -> None:
        """After the batcher has stopped: the posts in flight finish (or fail) before the client goes."""
        self._closed.set()
        self._watcher.join(timeout=10)
        self.pool.shutdown(wait=True)
        self.client.close()
        self.prober.close()

    def _details(self) -> dict[str, object]:
        return {"model": self.name, "engine": self.engine.url, "protocol": self.engine.protocol}

    def _post_with_retries(self, piece: list[list[int]]) -> np.ndarray:
        for attempt in range(self.policy.remote_attempts):
            try:
                return self._post(piece)
            except EngineError as error:
                if not error.retry or attempt == self.policy.remote_attempts - 1:
                    log.warning("engine request failed", extra={**self._details(), "reason": str(error)})
                    raise EngineDown(f"the engine of model {self.name!r} failed: {error}", self._details()) from None
                time.sleep(self.retry.delay(attempt, error.retry_after))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _post(self, piece: list[list[int]]) -> np.ndarray:
        path, body = self._request(piece)
        try:
            answer = self.client.post(path, json=body)
        except httpx.TransportError as error:  # refused, reset, timed out: worth another try
            raise EngineError(f"{type(error).__name__}: {error}", retry=True) from None
        except (httpx.HTTPError, RuntimeError) as error:  # a body it cannot decode; a client closed by close()
            raise EngineError(f"{type(error).__name__}: {error}", retry=False) from None
        if answer.status_code in REFUSED_INPUT:
            # The engine refuses what it was sent (over its own length limit, say): the caller's input, not a fault.
            raise InvalidInput(f"the engine of model {self.name!r} refused the input: {answer.text[:300]}")
        if answer.status_code != 200:
            retry_after = answer.headers.get("retry-after")
            raise EngineError(
                f"HTTP {answer.status_code}: {answer.text[:300]}",
                answer.status_code in RETRIED_STATUSES,
                float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else None,
            )
        try:
            return self._rows(answer.json(), len(piece))
        except (ValueError, KeyError, TypeError) as error:  # an answer of another shape: not worth retrying
            raise EngineError(f"an answer this backend cannot read ({error})", retry=False) from None

    def _request(self, piece: list[list[int]]) -> tuple[str, dict[str, Any]]:
        model = self.engine.model
        if self.engine.protocol == "vllm":
            return "/classify", {"model": model, "input": piece, "use_activation": False}
        if self.engine.protocol == "sglang":
            return "/v1/embeddings", {"model": model, "input": piece}
        texts = [self._text(ids) for ids in piece]
        # Cut as Arbiter cuts (the start goes), should TEI's limit be shorter than the bundle's.
        body = {"inputs": [[t] for t in texts], "raw_scores": True, "truncate": True, "truncation_direction": "Left"}
        return "/predict", body

    def _text(self, ids: list[int]) -> str:
        """TEI tokenizes itself: the text without the special tokens it will add again (when the ids have them:
        ids a caller sent through /classify have none)."""
        head, tail = self.builder.head_special, self.builder.tail_special
        if head and ids[: len(head)] == head:
            ids = ids[len(head) :]
        if tail and ids[len(ids) - len(tail) :] == tail:
            ids = ids[: len(ids) - len(tail)]
        return self.builder.tokenizer.decode(ids, skip_special_tokens=False)

    def _rows(self, answer: Any, count: int) -> np.ndarray:
        """[count, labels] raw outputs, from any of the three protocols' answers."""
        if self.engine.protocol == "vllm":
            data = sorted(ClassifyResponse.model_validate(answer).data, key=lambda d: d.index)
            rows = [d.probs for d in data]
        elif self.engine.protocol == "sglang":
            embeddings = sorted(EmbeddingsResponse.model_validate(answer).data, key=lambda d: d.index)
            rows = [e.embedding for e in embeddings]
        else:  # TEI: each input's labels, sorted by score; put back in the model's label order
            rows = []
            for predictions in answer:
                scores = {p.label: p.score for p in (Prediction.model_validate(x) for x in predictions)}
                # One output: whatever the model calls its label (TEI answers with id2label's name).
                rows.append(list(scores.values())[:1] if len(self.labels) == 1 else [scores[k] for k in self.labels])
        out = np.asarray(rows, dtype=np.float64)
        if out.shape != (count, len(self.labels)):
            raise ValueError(f"{out.shape[0]} rows of {out.shape[1:]} for {count} inputs of {len(self.labels)} labels")
        return out

    def _watch(self) -> None:
        """Polls GET /health: down when it fails, up again when it answers."""
        while not self._closed.wait(self.policy.remote_health_interval_s):
            try:
                ok = self.prober.get("/health").status_code == 200
                reason = "" if ok else "its /health is not 200"
            except Exception as error:  # whatever it is, the engine did not answer: keep watching
                ok, reason = False, f"{type(error).__name__}: {error}"
            if ok != self.up:
                log.warning("engine " + ("up" if ok else "down"), extra={**self._details(), "reason": reason})
            self.up, self.down_reason = ok, reason


def open_remote(bundle: Bundle, policy: RemotePolicy, name: str | None = None) -> RemoteRunner:
    return RemoteRunner(bundle, policy, name)
