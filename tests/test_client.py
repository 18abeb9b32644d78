"""RewardClient / AsyncRewardClient against a real server, over HTTP and gRPC: answers, chunking, retries."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from arbiter.clients import AsyncRewardClient, Retry, RewardClient, RewardServerError
from tests.server import free_port, running_server

ROOT = Path(__file__).resolve().parents[1]
ROUTES = {"url": "/v1/score", "grpc_url": "/arbiter.v1.RewardService/Score"}
QUICK = Retry(attempts=3, backoff=0.01, max_backoff=0.05)


@pytest.fixture(params=["url", "grpc_url"])
def url(request, server):
    return getattr(server, request.param)


def requests_seen(server, route: str, status: str | None = None) -> float:
    text = httpx.get(server.url + "/metrics").text
    total = 0.0
    for labels, value in re.findall(r"^arbiter_requests_total\{([^}]*)\} (\S+)$", text, re.M):
        if f'route="{route}"' in labels and (status is None or f'status="{status}"' in labels):
            total += float(value)
    return total


def route_of(server, url: str) -> str:
    return ROUTES["grpc_url" if url.startswith("grpc") else "url"]


def test_score_compare_rank_and_models(server, url, reference):
    chat = [{"role": "user", "content": "Say something kind."}]
    with RewardClient(url) as client:
        one_prompt = client.score("What is 2+2?", ["4", "5"])
        assert one_prompt.model == "rm" and np.allclose(one_prompt.scores, reference(["What is 2+2?"] * 2, ["4", "5"]))
        each = client.score(["2+2?", chat], ["4", "You matter."], normalize=True)
        assert np.allclose(each.scores, reference(["2+2?", chat], ["4", "You matter."]), atol=1e-5)
        assert each.normalized_scores is not None and len(each.tokens) == 2
        (c,) = client.compare("2+2?", ["4"], ["5"]).comparisons
        assert math.isclose(c.prob_a, 1 / (1 + math.exp(c.score_b - c.score_a)), rel_tol=1e-9)
        ranked = client.rank(chat, ["hello", "go away", "hi!"])
        assert [ranked.scores[i] for i in ranked.order] == sorted(ranked.scores, reverse=True)
        (info,) = client.models()
        assert info.name == "rm" and info.default
        with pytest.raises(ValueError, match="2 prompts for 3 responses"):
            client.score(["a", "b"], ["x", "y", "z"])


def test_large_calls_are_chunked_and_reassembled_in_order(server, url, reference):
    prompts = [f"Question {i}?" for i in range(23)]
    responses = [f"Answer number {i}." for i in range(23)]
    route = route_of(server, url)
    before = requests_seen(server, route)
    with RewardClient(url, chunk_size=5, max_concurrency=3) as client:
        scores = client.score(prompts, responses).scores
        pairs = client.compare(prompts[:7], responses[:7], responses[7:14]).comparisons
    assert requests_seen(server, route) - before == 5  # ceil(23 / 5) score requests
    assert np.allclose(scores, reference(prompts, responses), atol=1e-5)
    assert np.allclose([p.score_b for p in pairs], reference(prompts[:7], responses[7:14]), atol=1e-5)


def test_async_client(server, url, reference):
    async def run() -> list[list[float]]:
        async with AsyncRewardClient(url, chunk_size=4) as client:
            calls = [client.score(f"prompt {i}", [f"a{i}", f"b{i}", f"c{i}"]) for i in range(6)]
            return [r.scores for r in await asyncio.gather(*calls)]

    for i, scores in enumerate(asyncio.run(run())):
        assert np.allclose(scores, reference([f"prompt {i}"] * 3, [f"a{i}", f"b{i}", f"c{i}"]), atol=1e-5)


def test_client_mistakes_are_not_retried(server, url):
    route = route_of(server, url)
    before = requests_seen(server, route)
    with RewardClient(url, retry=QUICK) as client, pytest.raises(RewardServerError) as raised:
        client.score("p", ["r"], model="nope")
    assert raised.value.status == 404 and raised.value.code == "model_not_found" and not raised.value.retryable
    assert requests_seen(server, route) - before == 1


def test_queue_full_is_retried_with_backoff_honouring_retry_after(bundle_dir, reference, tmp_path, caplog):
    flags = ("--bundles", str(bundle_dir), "--max-queue", "8", "--max-wait-ms", "300", "--max-batch-size", "1000")
    prompts = [f"p{i}" for i in range(48)]
    responses = [f"r{i}" for i in range(48)]
    with running_server(tmp_path, *flags) as small:
        for url, route, refused in (
            (small.url, "/v1/score", "429"),
            (small.grpc_url, ROUTES["grpc_url"], "RESOURCE_EXHAUSTED"),
        ):
            caplog.clear()
            with (
                caplog.at_level(logging.INFO, "arbiter.client"),
                RewardClient(url, chunk_size=4, max_concurrency=12) as client,
            ):
                started = time.perf_counter()
                scores = client.score(prompts, responses).scores
                elapsed = time.perf_counter() - started
            assert np.allclose(scores, reference(prompts, responses), atol=1e-5)  # nothing lost, all in order
            assert requests_seen(small, route, refused) > 0
            delays = [
                float(m.group(1))
                for r in caplog.records
                if (m := re.match(r"retrying in (\S+) s after queue_full", r.getMessage()))
            ]
            assert delays and min(delays) >= 1.0 and elapsed >= 1.0  # the server's Retry-After: 1 s at least


def test_not_ready_is_retried_then_raised_or_nan(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{}")
    with running_server(tmp_path, "--bundles", str(broken), wait_ready=False) as bad:
        for url, route in ((bad.url, "/v1/score"), (bad.grpc_url, ROUTES["grpc_url"])):
            before = requests_seen(bad, route)
            with RewardClient(url, retry=QUICK) as client, pytest.raises(RewardServerError) as raised:
                client.score("p", ["r"])
            assert raised.value.code == "not_ready" and raised.value.status == 503
            assert requests_seen(bad, route) - before == QUICK.attempts
            with RewardClient(url, retry=QUICK, on_failure="nan", chunk_size=2) as client:
                result = client.score("p", ["a", "b", "c"])
                assert all(math.isnan(s) for s in result.scores) and result.tokens == [0, 0, 0]
                assert all(math.isnan(c.prob_a) for c in client.compare("p", ["a"], ["b"]).comparisons)


@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_no_server_is_unavailable_after_retries(scheme):
    url = f"{scheme}://127.0.0.1:{free_port()}"
    with RewardClient(url, retry=QUICK, timeout=5) as client, pytest.raises(RewardServerError) as raised:
        client.score("p", ["r"])
    assert raised.value.code == "unavailable" and raised.value.retryable


def test_backoff_grows_with_full_jitter_and_never_undercuts_retry_after():
    retry = Retry(attempts=6, backoff=0.5, max_backoff=4.0)
    rng = random.Random(0)
    for attempt, ceiling in enumerate([0.5, 1.0, 2.0, 4.0, 4.0]):
        delays = [retry.delay(attempt, rng=rng) for _ in range(200)]
        assert min(delays) >= 0 and max(delays) <= ceiling and max(delays) > 0.8 * ceiling
    assert all(retry.delay(0, retry_after=3.0, rng=rng) >= 3.0 for _ in range(50))


def test_unsupported_url_is_refused():
    with RewardClient("ftp://example") as client, pytest.raises(ValueError, match="unsupported URL"):
        client.models()


@pytest.mark.slow
def test_client_installs_and_runs_without_torch_or_server_packages(server, tmp_path):
    """The `client` extra alone, in a fresh virtual environment, talks to the server over both transports."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", f"{ROOT}[client]"], check=True, capture_output=True)
    code = f"""
import sys
from arbiter.clients import RewardClient
for url in ({server.url!r}, {server.grpc_url!r}):
    with RewardClient(url) as client:
        assert len(client.score("2+2?", ["4", "5"]).scores) == 2
heavy = sorted(m for m in ("torch", "transformers", "fastapi", "onnxruntime", "numpy", "uvicorn") if m in sys.modules)
print("heavy:", heavy)
"""
    result = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "heavy: []"
    for package in ("torch", "transformers", "fastapi", "onnxruntime"):
        found = subprocess.run([python, "-c", f"import {package}"], capture_output=True, cwd=tmp_path)
        assert found.returncode != 0, f"{package} is installed by the client extra"
