"""Starting a real OpenAI-compatible server (`transformers serve`, SmolLM2-135M-Instruct from local disk) on
127.0.0.1 for the judge's tests, and stopping it.

What `transformers serve` 5.24 does, which the tests rely on: the model name requests must give is the folder path
it was started with (another name is a 400; no name at all is also accepted); `usage` has prompt_tokens,
completion_tokens and total_tokens; `logprobs`/`top_logprobs` are accepted but ignored (no log-probabilities in the
reply); `continue_final_message`/`add_generation_prompt` are refused with a 422 ("Unexpected fields in the request").
It needs the `serving` extra of transformers (openai, fastapi, uvicorn...), starts in about 5 s on 2 cores, and holds
about 1 GB of memory with this model."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.server import free_port, server_process


@dataclass
class OpenAIServer:
    base_url: str  # with the /v1, as OpenAI clients want it
    model: str  # the name requests must give
    process: subprocess.Popen
    log: Path


@contextmanager
def transformers_serve(log_dir: Path, model: str | None = None, timeout: float = 120) -> Iterator[OpenAIServer]:
    """`transformers serve` pinned to `model` (a local folder; SmolLM2-135M-Instruct when None) on a free port."""
    if model is None:
        from arbiter.weights import SMOLLM2, resolve

        model = resolve(SMOLLM2)  # a local folder: the first call converts the packaged GGUF (about 30 s)
    port = free_port()
    log = log_dir / f"transformers-serve-{port}.log"
    # The console script's module, run with this interpreter, so the venv's transformers serves whatever PATH says.
    command = [sys.executable, "-m", "transformers.cli.transformers", "serve", model]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    root = f"http://127.0.0.1:{port}"
    offline = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    # /health answers once uvicorn listens, and the pinned model is loaded before that.
    with server_process(command, log, root + "/health", timeout, offline) as process:
        yield OpenAIServer(root + "/v1", model, process, log)
