"""Server settings: defaults < YAML file < ARBITER_* environment < command-line flags; and no torch when serving."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from arbiter.service.settings import ServerSettings


def test_precedence(tmp_path, monkeypatch):
    config = tmp_path / "serve.yaml"
    config.write_text("port: 9000\nmax_queue: 10\nthreads: 3\nbundles: [a=/x, /y]\n")
    monkeypatch.setenv("ARBITER_MAX_QUEUE", "20")
    monkeypatch.setenv("ARBITER_THREADS", "4")
    settings = ServerSettings.load(config, threads=5)
    assert settings.port == 9000  # from the file
    assert settings.max_queue == 20  # the environment beats the file
    assert settings.threads == 5  # a flag beats both
    assert settings.bundles == ["a=/x", "/y"] and settings.host == "127.0.0.1" and settings.grpc_port == 50051


def test_defaults_serve_loopback_on_8000():
    settings = ServerSettings.load()
    assert (settings.host, settings.port, settings.grpc_port) == ("127.0.0.1", 8000, 50051)


def test_bad_values_are_rejected(tmp_path):
    config = tmp_path / "serve.yaml"
    config.write_text("max_queue: 0\n")
    with pytest.raises(ValidationError, match="max_queue"):
        ServerSettings.load(config)
    config.write_text("no_such_setting: 1\n")
    with pytest.raises(ValidationError, match="no_such_setting"):
        ServerSettings.load(config)


def test_onnx_serving_path_never_imports_torch(bundle_dir):
    code = f"""
import asyncio, sys
from arbiter.service.http.app import create_app
from arbiter.service.runtime.runtime import Runtime
from arbiter.service.settings import ServerSettings
settings = ServerSettings(bundles=[{str(bundle_dir)!r}])
runtime = Runtime(settings)
create_app(settings, runtime)
asyncio.run(runtime.start())
from arbiter.clients.protocol import ScoreRequest
async def one():
    return await runtime.scoring.score(ScoreRequest(items=[{{"prompt": "a", "response": "b"}}]))
print(len(asyncio.run(one()).scores), runtime.registry.ready, "torch" in sys.modules, "transformers" in sys.modules)
runtime.registry.close()
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["1", "True", "False", "False"], result.stderr[-2000:]
