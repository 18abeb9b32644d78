"""Verifier components served: the built-in `math` spec on real GSM8K solutions over HTTP and gRPC (each reward
the verifier's own verdict, called directly), the built-in `grpo-math` that composes math on the answer, format
and the reward model on the reasoning (the GRPO recipe), routing by data_source in one mixed batch, every failure
status with its mask, and the refusals: a missing label, a spec that fails on a failure, a full verifier pool (429
before anything runs)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import numpy as np
import pytest

from arbiter.bundle import load_bundle
from arbiter.clients import RewardClient
from arbiter.rewards.spec import BUILTIN
from arbiter.verifiers import format as fmt
from arbiter.verifiers import math
from tests.server import running_server

GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "verifiable" / "gsm8k_model_solutions.jsonl"
RUNS_FOR_MINUTES = r"So the answer is $\boxed{9^{9^{9^{9}}}}$"
SPECS = {
    "routed": """name: routed
version: "1"
components:
  - {name: math, kind: verifier, verifier: math, data_sources: [gsm8k]}
  - {name: qa, kind: verifier, verifier: exact, data_sources: [trivia]}
  - {name: rm, kind: model}
reward:
  - {component: math, weight: 1.0}
  - {component: qa, weight: 1.0}
  - {component: rm, weight: 0.01}
""",
    "impatient": """name: impatient
version: "1"
components:
  - {name: correct, kind: verifier, verifier: math, options: {timeout_s: 1}, fallback: -1}
reward:
  - {component: correct, weight: 1.0}
""",
    "strict": """name: strict
version: "1"
components:
  - {name: correct, kind: verifier, verifier: math, on_no_answer: fail}
reward:
  - {component: correct, weight: 1.0}
""",
}


@pytest.fixture(scope="module")
def server(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("verifiers")
    for name, text in SPECS.items():
        (tmp / f"{name}.yaml").write_text(text)
    flags = ["--bundles", f"rm={bundle_dir}", "--reward-specs", str(tmp), "--judge-backend", "off"]
    flags += ["--verifier-workers", "2", "--reward-state-path", ""]
    with running_server(tmp, *flags) as s:
        yield s


def gsm8k_items(questions: int) -> list[tuple[str, str, str, bool]]:
    rows = [json.loads(line) for line in GSM8K.read_text().splitlines()[:questions]]
    return [(r["question"], s["solution"], r["answer"], s["is_correct"]) for r in rows for s in r["solutions"]]


def reward(server, body: dict) -> httpx.Response:
    return httpx.post(server.url + "/v1/reward", json=body, timeout=60)


@pytest.mark.parametrize("face", ["http", "grpc"])
def test_the_builtin_math_spec_rewards_gsm8k_solutions_as_the_verifier_does(server, face):
    items = gsm8k_items(12)
    with RewardClient(server.url if face == "http" else server.grpc_url) as client:
        answer = client.reward(
            [q for q, *_ in items], [s for _, s, _, _ in items], spec="math", labels=[a for _, _, a, _ in items]
        )
    direct = [math.check(s, a, math.MathRules()) for _, s, a, _ in items]
    assert answer.rewards == [v.score for v in direct]
    assert answer.rewards == [float(correct) for *_, correct in items]  # the authors' grades
    assert [v.extracted for v in answer.verifications["correct"]] == [v.extracted for v in direct]
    assert answer.mask == [False] * len(items) and answer.failure_kind == [None] * len(items)


def test_the_builtin_grpo_math_spec_composes_math_format_and_the_reward_model_on_the_reasoning(
    server, bundle_dir, reference
):
    reasoning = ["16 - 3 - 4 = 9 eggs, 9 * 2 = 18", "16 - 3 = 13, 13 * 2 = 26", "", "I do not know"]
    responses = [
        f"<think>{reasoning[0]}</think><answer>18</answer>",  # right, well formed
        f"<think>{reasoning[1]}</think>\n<answer>26</answer>",  # wrong, well formed
        "16 - 3 - 4 = 9 and 9 * 2 = 18, so the final answer is 18",  # right, no format and no reasoning
        f"<think>{reasoning[3]}</think><answer></answer>",  # no answer (and an empty answer tag is no format)
    ]
    body = {
        "spec": "grpo-math",
        "items": [{"prompt": "Janet's ducks?", "response": r, "label": "18", "group": "q"} for r in responses],
    }
    answer = reward(server, body)
    assert answer.status_code == 200, answer.text
    got = answer.json()
    assert got["components"]["correct"] == [1.0, 0.0, 1.0, 0.0]
    assert got["components"]["format"] == [1.0, 1.0, 0.0, 0.0]
    assert [v["status"] for v in got["verifications"]["correct"]] == ["ok", "wrong", "ok", "no_answer"]
    assert [v["extracted"] for v in got["verifications"]["correct"]][:2] == ["18", "26"]  # read after </think>
    # The reward model read the reasoning alone: its stored normalization, then the spec's clip.
    norm = load_bundle(bundle_dir).manifest.normalization
    on_reasoning = np.clip((reference(["Janet's ducks?"] * 4, reasoning) - norm.mean) / norm.std, -2, 2)
    on_responses = np.clip((reference(["Janet's ducks?"] * 4, responses) - norm.mean) / norm.std, -2, 2)
    helpful = np.array(got["components"]["helpful"])
    assert np.allclose(helpful, on_reasoning, atol=1e-4) and not np.allclose(helpful, on_responses, atol=1e-4)
    expected = np.array([1.0, 0.0, 1.0, 0.0]) + 0.1 * np.array([1.0, 1.0, 0.0, 0.0]) + 0.05 * helpful
    assert np.allclose(got["rewards"], expected)
    assert got["mask"] == [False] * 4  # no answer falls back to 0 (on_no_answer: fallback), unmasked
    assert got["failure_kind"] == [None, None, None, "correct: no_answer"]


def test_one_batch_mixing_math_qa_and_chat_is_routed_by_data_source(server):
    items = [
        {"prompt": "2 + 2?", "response": "The answer is 4.", "label": "4", "data_source": "gsm8k"},
        {
            "prompt": "Capital of France?",
            "response": "Paris",
            "label": ["Paris", "paris, france"],
            "data_source": "trivia",
        },
        {"prompt": "Say something kind.", "response": "You are doing great."},
    ]
    got = reward(server, {"spec": "routed", "items": items}).json()
    assert [v["status"] for v in got["verifications"]["math"]] == ["ok", "skipped", "skipped"]
    assert [v["status"] for v in got["verifications"]["qa"]] == ["skipped", "ok", "skipped"]
    assert got["components"]["math"] == [1.0, 0.0, 0.0] and got["components"]["qa"] == [0.0, 1.0, 0.0]
    assert got["mask"] == [False, False, False]


@pytest.mark.parametrize("face", ["http", "grpc"])
def test_failures_are_masked_and_never_fail_the_other_items(server, face):
    responses = [RUNS_FOR_MINUTES, "A: 18", "no number here", "A: 7"]
    labels: list = ["1", "18", "18", {"not": "an answer"}]
    with RewardClient(server.url if face == "http" else server.grpc_url) as client:
        got = client.reward(["q"] * 4, responses, spec="impatient", labels=labels)
    assert [v.status for v in got.verifications["correct"]] == ["timeout", "ok", "no_answer", "error"]
    assert got.rewards == [-1.0, 1.0, -1.0, -1.0]  # failures get the spec's fallback
    assert got.mask == [True, False, False, True]  # no_answer falls back unmasked by default; errors are masked
    assert got.failure_kind == ["correct: timeout", None, "correct: no_answer", "correct: error"]
    assert httpx.get(server.url + "/healthz").status_code == 200


def test_a_missing_label_and_a_failing_spec_are_400s(server):
    no_label = reward(
        server,
        {
            "spec": "math",
            "items": [{"prompt": "q", "response": "A: 1"}, {"prompt": "q", "response": "A: 2", "label": "2"}],
        },
    )
    assert no_label.status_code == 400 and no_label.json()["error"]["details"]["items"] == [0]
    strict = reward(server, {"spec": "strict", "items": [{"prompt": "q", "response": "no answer", "label": "2"}]})
    error = strict.json()["error"]
    assert strict.status_code == 400 and error["details"]["items"][0]["status"] == "no_answer", error


def test_verifications_are_counted_by_verifier_and_status(server):
    text = httpx.get(server.url + "/metrics").text
    counted = {m[0]: float(m[1]) for m in re.findall(r"^arbiter_verifications_total\{(.*?)\} (\S+)$", text, re.M)}
    assert counted['status="ok",verifier="math"'] > 0 and counted['status="timeout",verifier="math"'] >= 2
    assert 'arbiter_verification_seconds_count{verifier="format"}' in text


def test_a_full_verifier_pool_refuses_the_whole_request_before_running_any(bundle_dir: Path, tmp_path: Path):
    flags = ["--bundles", f"rm={bundle_dir}", "--judge-backend", "off", "--reward-state-path", ""]
    flags += ["--verifier-workers", "1", "--verifier-max-queue", "2"]
    with running_server(tmp_path, *flags) as small:
        items = [{"prompt": "q", "response": f"A: {i}", "label": str(i)} for i in range(4)]
        refused = reward(small, {"spec": "math", "items": items})
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "queue_full"
        assert "arbiter_verifications_total{" not in httpx.get(small.url + "/metrics").text  # nothing ran
        assert reward(small, {"spec": "math", "items": items[:3]}).json()["rewards"] == [1.0, 1.0, 1.0]


def test_format_verifier_rules_are_checked_when_the_spec_loads(bundle_dir: Path, tmp_path: Path):
    bad = (BUILTIN / "grpo-math.yaml").read_text().replace("{format: think_answer}", "{format: regex}")
    (tmp_path / "bad.yaml").write_text(bad.replace("name: grpo-math", "name: bad"))
    flags = ["--bundles", f"rm={bundle_dir}", "--reward-specs", str(tmp_path / "bad.yaml"), "--judge-backend", "off"]
    with running_server(tmp_path, *flags, wait_ready=False) as broken:
        for _ in range(100):
            ready = httpx.get(broken.url + "/readyz")
            if "reward_specs" in ready.text:
                break
        assert ready.status_code == 503 and "needs `pattern`" in ready.text
    assert fmt.FormatRules.model_validate({"format": "regex", "pattern": "x"}).pattern == "x"


def humaneval(count: int) -> list[dict]:
    path = GSM8K.with_name("humaneval.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()[:count]]


@pytest.mark.parametrize("face", ["http", "grpc"])
def test_the_builtin_code_spec_runs_humaneval_in_the_sandbox(server, face):
    tasks = humaneval(4)
    labels = [{"test": t["test"], "entry_point": t["entry_point"], "prompt": t["prompt"]} for t in tasks]
    right = [f"```python\n{t['prompt']}{t['canonical_solution']}\n```" for t in tasks]
    wrong = [f"```python\n{t['prompt']}    return None\n```" for t in tasks]
    hostile = "```python\nimport os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n```"
    responses = [*right, *wrong, hostile]
    with RewardClient(server.url if face == "http" else server.grpc_url) as client:
        got = client.reward(["p"] * len(responses), responses, spec="code", labels=[*labels, *labels, labels[0]])
    assert got.rewards == [1.0] * 4 + [0.0] * 5
    assert [v.status for v in got.verifications["passed"]] == ["ok"] * 4 + ["wrong"] * 5
    assert got.mask == [False] * 9
    assert httpx.get(server.url + "/healthz").status_code == 200
    assert "arbiter_sandbox_runs_in_flight 0.0" in httpx.get(server.url + "/metrics").text


def test_get_reward_with_a_spec_refuses_bad_input(server):
    def ask(spec: str, body: dict) -> tuple[int, str]:
        answer = httpx.post(server.url + "/get_reward", params={"spec": spec}, json=body, timeout=30)
        return answer.status_code, answer.json()["error"]["code"]

    assert ask("math", {"query": ["q A: 1", "q A: 2"], "prompts": ["q", "q"], "labels": ["1"]}) == (
        400,
        "invalid_input",
    )
    assert ask("math", {"query": ["q A: 1"], "prompts": ["q"]}) == (400, "invalid_input")  # math needs labels
    assert ask("nope", {"query": ["q A: 1"], "prompts": ["q"], "labels": ["1"]})[0] == 404
    assert ask("x" * 201, {"query": ["q A: 1"], "labels": ["1"]}) == (422, "invalid_request")
    good = httpx.post(
        server.url + "/get_reward",
        params={"spec": "math"},
        json={"query": ["q A: 1"], "prompts": ["q"], "labels": ["1"]},
    )
    assert good.json()["rewards"] == [1.0]


def test_one_sample_as_slimes_remote_rm_posts_it(server):
    # slime cannot be installed here (it needs Megatron-LM and SGLang): this is the payload its
    # rollout/rm_hub remote_rm posts to --rm-url, {prompt, response, label} and nothing else, and its
    # --reward-key reward reads the answer.
    url = server.url + "/v1/reward/sample"
    question = "Janet's ducks lay 16 eggs. How much does she make?"
    right = {"prompt": question, "response": "<think>9 * 2 = 18</think><answer>18</answer>", "label": "18"}
    answer = httpx.post(url, params={"spec": "grpo-math"}, json=right, timeout=30).json()
    assert answer["spec"] == "grpo-math" and answer["components"]["correct"] == 1.0
    assert answer["reward"] == pytest.approx(1.0 + 0.1 + 0.05 * answer["components"]["helpful"])
    assert answer["mask"] is False and answer["failure_kind"] is None
    batch = reward(server, {"spec": "grpo-math", "items": [{**right, "group": "q"}]}).json()
    assert answer["reward"] == pytest.approx(batch["rewards"][0])  # the same reward as /v1/reward gives it

    chat = {"prompt": [{"role": "user", "content": question}], "response": "The answer is 17.", "label": "18"}
    assert httpx.post(url, params={"spec": "math"}, json=chat).json()["reward"] == 0.0
    runaway = httpx.post(url, params={"spec": "impatient"}, json={**right, "response": RUNS_FOR_MINUTES}).json()
    assert runaway["mask"] is True and runaway["failure_kind"] == "correct: timeout" and runaway["reward"] == -1.0

    refused = httpx.post(url, params={"spec": "math"}, json={"prompt": question, "response": "18"})
    assert refused.status_code == 400 and refused.json()["error"]["request_id"]  # math needs the label
    assert httpx.post(url, params={"spec": "math"}, json={"prompt": question}).status_code == 422
    assert httpx.post(url, params={"spec": "nope"}, json=right).status_code == 404
