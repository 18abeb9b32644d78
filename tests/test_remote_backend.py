"""The remote backend: models an engine serves, named in Arbiter, through vLLM's, SGLang's and TEI's protocols.

No vLLM, SGLang or TEI server can run on these machines. The engine here is a stand-in, named as one: a second
Arbiter process answering through its engine-compatible routes (/classify, /v1/embeddings, /predict, /health),
which tests/test_engine_routes.py holds to the engines' shapes. Replies canned from the engines' documented examples
check that the backend reads the real engines' answers too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.reward_checkpoints import ARCHITECTURES, TOLERANCE, build, scored
from tests.server import RunningServer, running_server


def remote_bundle(
    checkpoint: Path, out: Path, url: str, protocol: str, engine_model: str | None, objective: str | None = None
) -> Path:
    from arbiter.bundle.manifest import Engine
    from arbiter.training.importing.importer import import_remote

    engine = Engine(url=url, protocol=protocol, model=engine_model)  # type: ignore[arg-type]
    return import_remote(str(checkpoint), out, engine, name=out.name, objective=objective).path


@pytest.fixture(scope="module")
def engine_stand_in(cases, tmp_path_factory) -> Iterator[RunningServer]:
    """The stand-in for a GPU engine: a second Arbiter serving bert (its default: TEI's /predict), llama and multi."""
    logs = tmp_path_factory.mktemp("engine")
    flags = [f for name in ("bert", "llama", "multi") for f in ("--bundles", f"{name}={cases[name].bundle}")]
    with running_server(logs, *flags) as server:
        yield server


@pytest.fixture(scope="module")
def front(cases, engine_stand_in, tmp_path_factory) -> Iterator[tuple[RunningServer, list[str]]]:
    root = tmp_path_factory.mktemp("remote-bundles")
    url = engine_stand_in.url
    bundles = [
        remote_bundle(cases["llama"].bundle.parent / "llama", root / "via-vllm", url, "vllm", "llama"),
        remote_bundle(
            cases["multi"].bundle.parent / "multi", root / "via-sglang", url, "sglang", "multi", "harmlessness"
        ),
        remote_bundle(cases["bert"].bundle.parent / "bert", root / "via-tei", url, "tei", None),
    ]
    flags = ["--bundles", f"local={cases['qwen3'].bundle}", *(f for b in bundles for f in ("--bundles", str(b)))]
    env_flags = ["--remote-health-interval-s", "0.5", "--remote-attempts", "2", "--remote-timeout-s", "5"]
    with running_server(tmp_path_factory.mktemp("front"), *flags, *env_flags) as server:
        yield server, [b.name for b in bundles]


@pytest.mark.parametrize(
    ("remote", "engine_model"), [("via-vllm", "llama"), ("via-sglang", "multi"), ("via-tei", "bert")]
)
def test_a_remote_model_scores_what_the_engine_scores(remote, engine_model, front, engine_stand_in, conversations):
    server, _ = front
    got = scored(server, remote, conversations)
    direct = scored(engine_stand_in, engine_model, conversations)
    assert np.abs(np.array(got["scores"]) - direct["scores"]).max() <= TOLERANCE
    assert got["tokens"] == direct["tokens"]
    if engine_model == "multi":  # every objective comes through the engine's protocol
        for mine, theirs in zip(got["objectives"], direct["objectives"], strict=True):
            assert all(abs(mine[k] - theirs[k]) <= TOLERANCE for k in theirs)
    info = httpx.get(f"{server.url}/v1/models/{remote}").json()
    assert (info["precision"], info["engine"], info["engine_up"]) == ("remote", engine_stand_in.url, True)


def test_compare_and_grpc_work_over_a_remote_model(front, conversations) -> None:
    from arbiter.clients.client import RewardClient

    server, _ = front
    (messages, chosen), (_, rejected) = conversations[0], conversations[1]
    body = httpx.post(
        f"{server.url}/v1/compare",
        json={"model": "via-vllm", "prompt": messages, "response_a": chosen, "response_b": rejected},
    ).json()
    with RewardClient(server.grpc_url) as client:
        grpc_scores = client.score([messages, messages], [chosen, rejected], model="via-vllm").scores
    assert np.allclose([body["comparisons"][0]["score_a"], body["comparisons"][0]["score_b"]], grpc_scores, atol=1e-6)


def test_an_engine_that_goes_down_is_a_502_for_its_models_only_and_comes_back(
    cases, front, engine_stand_in, conversations, tmp_path
) -> None:
    server, _remotes = front
    engine_stand_in.process.terminate()
    engine_stand_in.process.wait(timeout=15)
    down = httpx.post(f"{server.url}/v1/score", json={"model": "via-vllm", "items": [{"prompt": "p", "response": "r"}]})
    assert down.status_code == 502 and down.json()["error"]["code"] == "engine_error"
    assert down.json()["error"]["request_id"] and down.json()["error"]["details"]["engine"] == engine_stand_in.url
    assert scored(server, "local", conversations)["scores"]  # the other models keep serving
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    deadline = time.monotonic() + 10
    while httpx.get(f"{server.url}/v1/models/via-vllm").json()["engine_up"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert httpx.get(f"{server.url}/v1/models/via-vllm").json()["engine_up"] is False
    # While its health check fails, a request fails at once (no retries), saying so.
    at_once = httpx.post(
        f"{server.url}/v1/score", json={"model": "via-vllm", "items": [{"prompt": "p", "response": "r"}]}
    )
    assert at_once.status_code == 502 and "is down" in at_once.json()["error"]["message"]
    port = int(engine_stand_in.url.rsplit(":", 1)[1])
    flags = [f for name in ("bert", "llama", "multi") for f in ("--bundles", f"{name}={cases[name].bundle}")]
    with running_server(tmp_path, *flags, port=port):
        # Each remote model's health check runs on its own clock, so each comes back in its own time.
        for model in ("via-vllm", "via-sglang"):
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                answer = httpx.post(
                    f"{server.url}/v1/score", json={"model": model, "items": [{"prompt": "p", "response": "r"}]}
                )
                if answer.status_code == 200:
                    break
                time.sleep(0.3)
            assert answer.status_code == 200, answer.text
        assert scored(server, "via-sglang", conversations)["objectives"]


# The engines' documented answers: vLLM's /classify example (docs: "Classification API"), TEI's /predict example
# (its README), and an OpenAI-style /v1/embeddings answer as SGLang gives it for a reward model.
VLLM_CLASSIFY = {
    "id": "classify-7c87cac407b749a6935d8c7ce2a8fba2",
    "object": "list",
    "created": 1745383065,
    "model": "jason9693/Qwen2.5-1.5B-apeach",
    "data": [{"index": 0, "label": "Default", "probs": [0.565970778465271, 0.4340292513370514], "num_classes": 2}],
    "usage": {"prompt_tokens": 10, "total_tokens": 10, "completion_tokens": 0, "prompt_tokens_details": None},
}
TEI_PREDICT = [[{"score": 0.9996, "label": "POSITIVE"}, {"score": 0.0004, "label": "NEGATIVE"}]]
SGLANG_EMBEDDINGS = {
    "object": "list",
    "data": [{"object": "embedding", "embedding": [3.42, -1.25], "index": 0}],
    "model": "Skywork/Skywork-Reward-Llama-3.1-8B",
    "usage": {"prompt_tokens": 12, "total_tokens": 12},
}


def test_the_engines_documented_answers_are_read(tmp_path: Path) -> None:
    from arbiter.bundle import load_bundle
    from arbiter.service.runtime.remote import RemotePolicy, RemoteRunner

    bert = next(a for a in ARCHITECTURES if a.model_type == "bert")
    checkpoint = build(bert, tmp_path / "two", num_labels=2)
    import json

    config = json.loads((checkpoint / "config.json").read_text())
    config["id2label"], config["label2id"] = {"0": "POSITIVE", "1": "NEGATIVE"}, {"POSITIVE": 0, "NEGATIVE": 1}
    (checkpoint / "config.json").write_text(json.dumps(config))
    expected = {"vllm": [0.565970778465271, 0.4340292513370514], "tei": [0.9996, 0.0004], "sglang": [3.42, -1.25]}
    canned = {"vllm": VLLM_CLASSIFY, "tei": TEI_PREDICT, "sglang": SGLANG_EMBEDDINGS}
    one = build(bert, tmp_path / "one")  # one output, which TEI names by the model's id2label ("LABEL_0" or other)
    single = load_bundle(remote_bundle(one, tmp_path / "tei-one", "http://127.0.0.1:9", "tei", None))
    runner = RemoteRunner(single, RemotePolicy())
    try:
        assert runner._rows([[{"score": 2.5, "label": "reward"}]], 1).tolist() == [[2.5]]
    finally:
        runner.close()
    for protocol, answer in canned.items():
        bundle = load_bundle(remote_bundle(checkpoint, tmp_path / protocol, "http://127.0.0.1:9", protocol, "m"))
        runner = RemoteRunner(bundle, RemotePolicy())
        try:
            assert runner._rows(answer, 1).tolist() == [expected[protocol]], protocol
            with pytest.raises(ValueError):
                runner._rows(answer, 2)  # an answer for fewer inputs than were sent is refused
        finally:
            runner.close()
