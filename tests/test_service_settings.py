"""Server settings: defaults < YAML file < ARBITER_* environment < command-line flags; and no torch when serving."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from arbiter.annotation.location import store_url
from arbiter.judge.settings import JudgeSettings
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


def test_judge_settings_keep_their_flat_names_in_the_file_and_the_environment(tmp_path, monkeypatch):
    config = tmp_path / "serve.yaml"
    config.write_text("judge_backend: openai\njudge_model: from-file\ndefault_constitution: mine\n")
    monkeypatch.setenv("ARBITER_JUDGE_MODEL", "from-env")
    monkeypatch.setenv("ARBITER_CONSTITUTIONS", '["extra.yaml"]')
    monkeypatch.setenv("ARBITER_JUDGE_CACHE_SIZE", "0")
    settings = ServerSettings.load(config, judge_base_url="http://judge:8001/v1")
    assert isinstance(settings, JudgeSettings)
    assert (settings.judge_backend, settings.judge_model) == ("openai", "from-env")  # the environment beats the file
    assert settings.default_constitution == "mine"
    assert settings.constitutions == ["extra.yaml"] and settings.judge_base_url == "http://judge:8001/v1"
    assert settings.open_cache() is None  # judge_cache_size 0: no cache
    with pytest.raises(ValidationError, match="judge_timeout_s"):
        ServerSettings.load(config, judge_timeout_s=0)


def test_store_commands_find_the_database_the_server_uses(tmp_path, monkeypatch):
    monkeypatch.delenv("ARBITER_ANNOTATION_DB", raising=False)
    assert store_url() == ServerSettings().annotation_db
    config = tmp_path / "serve.yaml"
    config.write_text("annotation_db: sqlite:///from-file.sqlite\nport: 9000\n")
    assert store_url(config) == ServerSettings.load(config).annotation_db == "sqlite:///from-file.sqlite"
    monkeypatch.setenv("ARBITER_ANNOTATION_DB", "postgresql://arbiter@db/prefs")
    assert store_url(config) == ServerSettings.load(config).annotation_db == "postgresql://arbiter@db/prefs"


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
from arbiter.annotation.location import store_url
from arbiter.judge.settings import JudgeSettings
from arbiter.service.settings import ServerSettings
settings = ServerSettings(bundles=[{str(bundle_dir)!r}])
runtime = Runtime(settings)
create_app(settings, runtime)
asyncio.run(runtime.start())
from arbiter.clients.protocol import ScoreRequest
from arbiter.service.access.control import INTERNAL
async def one():
    return await runtime.scoring.score(ScoreRequest(items=[{{"prompt": "a", "response": "b"}}]), INTERNAL)
print(len(asyncio.run(one()).scores), runtime.registry.ready, "torch" in sys.modules, "transformers" in sys.modules)
runtime.registry.close()
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["1", "True", "False", "False"], result.stderr[-2000:]
