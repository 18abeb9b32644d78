"""The real server on 127.0.0.1, over HTTP: every route, every error, and many concurrent clients."""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
import time

import httpx
import numpy as np
import pytest

from arbiter.bundle import load_bundle
from tests.server import RunningServer, running_server

PROMPTS = ["How do I pick a lock?", [{"role": "user", "content": "Say something kind."}], "2+2?"]


def post(server, path, body, **kw):
    return httpx.post(server.url + path, json=body, timeout=30, **kw)


def test_score_matches_the_bundle_and_echoes_request_id(server, reference):
    items = [{"prompt": p, "response": r} for p, r in zip(PROMPTS, ["No.", "You matter.", "4"], strict=True)]
    r = post(server, "/v1/score", {"items": items}, headers={"X-Request-ID": "abc-123"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "abc-123"
    body = r.json()
    assert body["model"] == "rm" and body["model_version"] == "1"
    expected = reference(PROMPTS, ["No.", "You matter.", "4"])
    assert np.allclose(body["scores"], expected, atol=1e-5)
    assert "normalized_scores" not in body and body["truncated"] == [False] * 3
    assert all(t > 3 for t in body["tokens"])
    made = post(server, "/v1/score", {"items": items[:1]}).headers["x-request-id"]
    assert len(made) == 32


def test_score_normalized_and_sigmoid(server, bundle_dir):
    norm = load_bundle(bundle_dir).manifest.normalization
    items = [{"prompt": "hi", "response": "hello"}]
    raw = post(server, "/v1/score", {"items": items, "normalize": True}).json()
    assert math.isclose(raw["normalized_scores"][0], (raw["scores"][0] - norm.mean) / norm.std, rel_tol=1e-9)
    squashed = post(server, "/v1/score", {"items": items, "sigmoid": True}).json()
    assert math.isclose(squashed["scores"][0], 1 / (1 + math.exp(-raw["scores"][0])), rel_tol=1e-9)


def test_compare_single_and_batch(server, reference):
    single = post(server, "/v1/compare", {"prompt": "2+2?", "response_a": "4", "response_b": "5"}).json()
    (c,) = single["comparisons"]
    a, b = reference(["2+2?", "2+2?"], ["4", "5"])
    assert math.isclose(c["score_a"], a, abs_tol=1e-5) and math.isclose(c["score_b"], b, abs_tol=1e-5)
    assert math.isclose(c["prob_a"], 1 / (1 + math.exp(-(c["score_a"] - c["score_b"]))), rel_tol=1e-9)
    pairs = [
        {"prompt": "q", "response_a": "x", "response_b": "y"},
        {"prompt": "r", "response_a": "z", "response_b": "w"},
    ]
    assert len(post(server, "/v1/compare", {"pairs": pairs}).json()["comparisons"]) == 2


def test_rank_orders_by_score(server):
    body = post(
        server, "/v1/rank", {"prompt": "Name a color.", "responses": ["Blue.", "No.", "Red is a color."]}
    ).json()
    scores = body["scores"]
    assert body["order"] == sorted(range(3), key=lambda i: -scores[i]) and sorted(body["order"]) == [0, 1, 2]


def test_models(server, bundle_dir):
    listing = httpx.get(server.url + "/v1/models").json()["models"]
    manifest = load_bundle(bundle_dir).manifest
    assert listing == [httpx.get(server.url + "/v1/models/rm").json()]
    (m,) = listing
    assert m["name"] == "rm" and m["default"] and m["base_model"] == manifest.model.base_model
    assert m["max_length"] == manifest.model.max_length and m["eval_accuracy"] == manifest.eval_accuracy
    assert m["normalization"] == {"mean": manifest.normalization.mean, "std": manifest.normalization.std}
    evaluation = m["evaluation"]  # the model card's held-out table, per source with intervals and length shares
    assert evaluation == manifest.evaluation.model_dump() and evaluation["overall"]["accuracy"] == m["eval_accuracy"]
    hh = evaluation["by_source"]["hh_rlhf_harmless"]
    assert hh["pairs"] == evaluation["overall"]["pairs"] and hh["accuracy_low"] < hh["accuracy"] < hh["accuracy_high"]
    assert 0 < hh["labels_prefer_longer"] < 1 and 0 <= hh["model_prefers_longer"] <= 1


def test_health_ready_openapi_and_metrics(server):
    assert httpx.get(server.url + "/healthz").json() == {"status": "alive"}
    assert httpx.get(server.url + "/readyz").json()["status"] == "ready"
    spec = httpx.get(server.url + "/openapi.json").json()
    assert {"/v1/score", "/v1/compare", "/v1/rank", "/v1/models", "/get_reward"} <= set(spec["paths"])
    post(server, "/v1/score", {"items": [{"prompt": "a", "response": "b"}]})
    text = httpx.get(server.url + "/metrics").text
    for name in ("arbiter_requests_total", "arbiter_request_seconds_bucket", "arbiter_queue_depth",
                 "arbiter_batch_size_bucket", "arbiter_batch_tokens_bucket", "arbiter_tokens_scored_total",
                 "arbiter_score_bucket", "arbiter_model_load_seconds"):  # fmt: skip
        assert name in text, name
    assert 'arbiter_requests_total{route="/v1/score",status="200"}' in text


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/v1/score", {"items": []}, 422, "invalid_request"),
        ("/v1/score", {"items": [{"prompt": "a"}]}, 422, "invalid_request"),
        ("/v1/score", {"items": [{"prompt": 3, "response": "b"}]}, 422, "invalid_request"),
        (
            "/v1/score",
            {"items": [{"prompt": [{"role": "robot", "content": "x"}], "response": "b"}]},
            422,
            "invalid_request",
        ),
        ("/v1/score", {"model": "missing", "items": [{"prompt": "a", "response": "b"}]}, 404, "model_not_found"),
        ("/v1/score", {"items": [{"prompt": "a", "response": "b"}] * 65}, 413, "too_large"),
        ("/v1/compare", {"prompt": "a", "response_a": "b"}, 422, "invalid_request"),
        ("/v1/rank", {"prompt": "a", "responses": ["only one"]}, 422, "invalid_request"),
        ("/get_reward", {"query": ["a", "b"], "prompts": ["a"]}, 400, "invalid_input"),
    ],
)
def test_client_mistakes_are_4xx_with_a_json_error(server, path, body, status, code):
    r = post(server, path, body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"]


def test_malformed_json_and_oversized_body(server):
    r = httpx.post(server.url + "/v1/score", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    huge = json.dumps({"items": [{"prompt": "x" * 9_000_000, "response": "y"}]})
    r = httpx.post(server.url + "/v1/score", content=huge, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    assert httpx.get(server.url + "/healthz").status_code == 200  # still serving


def test_many_concurrent_clients_each_get_their_own_scores(server, reference):
    rng = np.random.default_rng(0)
    words = ["the", "a", "reward", "model", "scores", "helpful", "honest", "harmless"]
    words += ["answers", "with", "care", "and", "some", "length"]
    requests = [
        [
            {"prompt": f"question {c}-{i}", "response": " ".join(rng.choice(words, rng.integers(1, 30)))}
            for i in range(8)
        ]
        for c in range(32)
    ]

    async def run() -> list[list[float]]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            responses = await asyncio.gather(*(client.post("/v1/score", json={"items": items}) for items in requests))
        assert all(r.status_code == 200 for r in responses)
        return [r.json()["scores"] for r in responses]

    got = asyncio.run(run())
    for items, scores in zip(requests, got, strict=True):
        expected = reference([i["prompt"] for i in items], [i["response"] for i in items])
        assert np.allclose(scores, expected, atol=1e-5)  # a score does not depend on its batch


def test_openrlhf_remote_reward_with_openrlhf_client(server, reference):
    agent = pytest.importorskip("openrlhf.utils.agent")
    executor = agent.SingleTurnAgentExecutor(remote_rm_url=server.url + "/get_reward")
    prompts = ["What is the capital of France?", "Tell me a joke."]
    queries = [prompts[0] + " Paris.", prompts[1] + " Why did the chicken cross the road?"]
    (result,) = asyncio.run(executor._fetch_rewards_via_http(queries, prompts, [None, None]))
    expected = reference(prompts, [" Paris.", " Why did the chicken cross the road?"])
    assert np.allclose(result["rewards"], expected, atol=1e-5) and result["scores"] == result["rewards"]
    assert len(result["extra_logs"]["normalized_reward"]) == 2


def test_queue_full_is_429_with_retry_after(bundle_dir, tmp_path):
    flags = ("--bundles", str(bundle_dir), "--max-queue", "8", "--max-wait-ms", "300", "--max-batch-size", "1000")
    with running_server(tmp_path, *flags) as small:

        async def flood() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=small.url, timeout=60) as client:
                body = {"items": [{"prompt": "p", "response": "r"}] * 4}
                return await asyncio.gather(*(client.post("/v1/score", json=body) for _ in range(12)))

        responses = asyncio.run(flood())
        codes = [r.status_code for r in responses]
        assert 429 in codes and 200 in codes and set(codes) <= {200, 429}
        refused = next(r for r in responses if r.status_code == 429)
        assert int(refused.headers["retry-after"]) >= 1 and refused.json()["error"]["code"] == "queue_full"
        after = httpx.post(small.url + "/v1/score", json={"items": [{"prompt": "p", "response": "r"}]}, timeout=30)
        assert after.status_code == 200  # the server keeps serving


def settled_readiness(server: RunningServer) -> httpx.Response:
    """/readyz once loading has failed (a component named 'failed'), or its last answer after 10 s."""
    for _ in range(100):
        ready = httpx.get(server.url + "/readyz")
        if "failed" in ready.text:
            break
        time.sleep(0.1)
    return ready


def test_bad_bundle_keeps_the_server_alive_but_not_ready(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{}")
    with running_server(tmp_path, "--bundles", str(broken), wait_ready=False) as bad:
        ready = settled_readiness(bad)
        assert ready.status_code == 503 and ready.json()["error"]["code"] == "not_ready"
        r = httpx.post(bad.url + "/v1/score", json={"items": [{"prompt": "a", "response": "b"}]})
        assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready"
        assert httpx.get(bad.url + "/healthz").status_code == 200
        assert "bundle not loaded" in bad.logs() and "format_version" in bad.logs()


def test_logs_are_json_with_the_request_id(server):
    post(server, "/v1/score", {"items": [{"prompt": "a", "response": "b"}]}, headers={"X-Request-ID": "log-me-7"})
    lines = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
    assert lines and all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)
    (entry,) = [line for line in lines if line.get("request_id") == "log-me-7"]
    assert entry["route"] == "/v1/score" and entry["status"] == 200
    settings = next(line for line in lines if line["msg"] == "starting")["settings"]
    assert settings["max_items"] == 64 and settings["port"] == int(server.url.rsplit(":", 1)[1])


def test_torch_backend_serves_a_checkpoint_with_the_same_scores(trained_run, reference, tmp_path):
    import torch

    flags = ("--backend", "torch", "--bundles", f"rm-torch={trained_run / 'checkpoint'}")
    with running_server(tmp_path, *flags) as torch_server:
        items = [{"prompt": p, "response": r} for p, r in zip(PROMPTS, ["No.", "Kind words.", "4"], strict=True)]
        body = post(torch_server, "/v1/score", {"items": items}).json()
        assert body["model"] == "rm-torch" and body["model_version"].startswith("checkpoint-")
        assert np.allclose(body["scores"], reference(PROMPTS, ["No.", "Kind words.", "4"]), atol=1e-4)
        info = httpx.get(torch_server.url + "/v1/models/rm-torch").json()
        assert info["precision"] == "fp32-torch" and info["normalization"] is None
        assert '"max_batch_tokens": 1024' in torch_server.logs()  # fp32 keeps the CPU's small batches
        assert info["device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")  # auto
    if torch.cuda.is_available():
        return  # the CPU build of torch (make setup's) never gets here
    # Asking for a GPU that is not there keeps the model from loading, and the server says why.
    with running_server(tmp_path, *flags, "--device", "cuda", wait_ready=False) as no_gpu:
        assert settled_readiness(no_gpu).status_code == 503 and "torch sees no CUDA device" in no_gpu.logs()


def test_bf16_runs_on_torch_from_a_checkpoint_or_a_bundles_bf16_weights(trained_run, bundle_dir, reference, tmp_path):
    responses = ["No.", "Kind words.", "4", "I will not help with that.", "Sure, here is how.", "Paris is in France."]
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(len(responses))]
    flags = ("--backend", "torch", "--precision", "bf16", "--bundles", f"rm-bf16={trained_run / 'checkpoint'}")
    with running_server(tmp_path, *flags) as bf16:
        items = [{"prompt": p, "response": r} for p, r in zip(prompts, responses, strict=True)]
        scores = np.array(post(bf16, "/v1/score", {"items": items}).json()["scores"])
        info = httpx.get(bf16.url + "/v1/models/rm-bf16").json()
        # a checkpoint cast to bf16 at load was never judged: no accuracy is claimed for it
        assert info["precision"] == "bf16-torch" and info["eval_accuracy"] is None
        # whether bf16 pays is measured on the device, and said at load
        assert re.search(r"bf16 matrix products run \d+\.\d\dx fp32's here", bf16.logs())
        # bf16 on a CPU takes larger batches when max_batch_tokens is unset (see models.default_batch_tokens)
        assert '"max_batch_tokens": 2048' in bf16.logs()
    fp32 = np.array(reference(prompts, responses))
    # bf16 keeps 8 bits of mantissa: close to fp32, and further from it than fp32 torch is from ONNX Runtime (1e-6),
    # so the cast did happen
    assert 1e-4 < np.abs(scores - fp32).max() < 0.05 * max(1.0, float(np.abs(fp32).max()))
    # A bundle serves bf16 from its own bf16 weights (ONNX Runtime has no bf16 kernels: torch runs them), which its
    # export kept; its head stays exact fp32 where the checkpoint's is cast and back, so the two differ a little
    # the accuracy shown is the one the export's gate measured for the bf16 weights, not fp32's: on a short run the
    # two are often equal, so a copy of the bundle records a figure that can only come from its bf16 report
    judged = tmp_path / "judged"
    shutil.copytree(bundle_dir, judged)
    manifest = json.loads((judged / "manifest.json").read_text())
    fp32_accuracy = manifest["bf16"]["fp32_accuracy"]
    (judged / "manifest.json").write_text(json.dumps({**manifest, "bf16": {**manifest["bf16"], "accuracy": 0.321}}))
    with running_server(tmp_path, "--precision", "bf16", "--bundles", f"rm={judged}") as from_bundle:
        served = np.array(post(from_bundle, "/v1/score", {"items": items}).json()["scores"])
        info = httpx.get(from_bundle.url + "/v1/models/rm").json()
        assert info["precision"] == "bf16-torch" and info["eval_accuracy"] == 0.321
        assert info["evaluation"]["overall"]["accuracy"] == fp32_accuracy  # the table stays fp32's
    assert 1e-4 < np.abs(served - fp32).max() < 0.05 * max(1.0, float(np.abs(fp32).max()))
    assert np.abs(served - scores).max() < 0.05 * max(1.0, float(np.abs(fp32).max()))
    # A bundle without them (format 1.4, or exported with --no-bf16) does not load, and the server says why
    older = tmp_path / "older"
    shutil.copytree(bundle_dir, older, ignore=shutil.ignore_patterns("model.bf16.safetensors"))
    manifest = json.loads((older / "manifest.json").read_text())
    del manifest["files"]["model.bf16.safetensors"]
    (older / "manifest.json").write_text(json.dumps({**manifest, "format_version": "1.4", "bf16": None}))
    with running_server(tmp_path, "--precision", "bf16", "--bundles", str(older), wait_ready=False) as onnx:
        ready = settled_readiness(onnx)
        assert ready.status_code == 503 and "no model.bf16.safetensors (precision bf16)" in onnx.logs()


def test_int8_serves_with_the_accuracy_its_gate_measured(trained_run, bundle_dir, tmp_path):
    from arbiter.training.export import FidelityGate, export_bundle

    # a gate that keeps any int8 file, so that this test does not depend on whether the short run's passes
    lenient = FidelityGate(max_accuracy_change=1.0, min_spearman=-1.0)
    int8 = export_bundle(trained_run / "checkpoint", tmp_path / "int8", int8_gate=lenient, bf16=False).manifest.int8
    assert int8 is not None and int8.file == "model.int8.onnx"
    assert int8.fp32_accuracy == load_bundle(bundle_dir).manifest.eval_accuracy  # judged on fp32's pairs
    # int8's accuracy may equal fp32's on a short run: the manifest records one that only its int8 report has
    manifest = json.loads((tmp_path / "int8" / "manifest.json").read_text())
    manifest["int8"]["accuracy"] = 0.123
    (tmp_path / "int8" / "manifest.json").write_text(json.dumps(manifest))
    with running_server(tmp_path, "--precision", "int8", "--bundles", f"rm={tmp_path / 'int8'}") as server:
        info = httpx.get(server.url + "/v1/models/rm").json()
    assert info["precision"] == "int8" and info["eval_accuracy"] == 0.123


def test_several_models_chosen_by_name_with_one_default(bundle_dir, tmp_path):
    flags = ("--bundles", f"first={bundle_dir}", "--bundles", f"second={bundle_dir}", "--default-model", "second")
    with running_server(tmp_path, *flags) as two:
        listing = {m["name"]: m["default"] for m in httpx.get(two.url + "/v1/models").json()["models"]}
        assert listing == {"first": False, "second": True}
        item = {"items": [{"prompt": "a", "response": "b"}]}
        assert post(two, "/v1/score", item).json()["model"] == "second"
        named = post(two, "/v1/score", {**item, "model": "first"}).json()
        assert named["model"] == "first" and named["scores"] == post(two, "/v1/score", item).json()["scores"]
