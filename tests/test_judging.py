"""Constitutions, and the judging logic: parsing, soft labels, the position swap, chain-of-thought clamping and the
verdict cache (also with its SQLite file locked by another process), on cases whose answers are known; then the real
local judge (SmolLM2) end to end, and on its own thread."""

from __future__ import annotations

import asyncio
import math
import re
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from arbiter.clients.protocol import JudgeRequest, JudgeResponse
from arbiter.errors import NotFound
from arbiter.judge.backends.base import Completion, OptionLogprobs
from arbiter.judge.cache import VerdictCache
from arbiter.judge.constitution import ConstitutionError, ConstitutionLibrary, load_constitution
from arbiter.judge.judging import Judge, JudgeParseError, expected_level, parse_letter, parse_level, prob_first
from arbiter.judge.prompts import COT_ANSWER_PREFIX

GOOD, BAD = "The capital of France is Paris.", "I like turtles."


def prompt_tag(text: str) -> str:
    """The tag of a judge prompt, as its notice to the judge names it."""
    (tag,) = set(re.findall(r"tags whose names end in -([0-9a-f]{8})\.", text))
    return tag


def inside(text: str, name: str) -> str | None:
    """What a judge prompt encloses in its `name` tags (None without them), each tag appearing exactly once."""
    tag = prompt_tag(text)
    opening, closing = f"<{name}-{tag}>\n", f"\n</{name}-{tag}>"
    if opening not in text:
        return None
    assert text.count(opening) == 1 and text.count(closing) == 1
    return text[text.index(opening) + len(opening) : text.index(closing)]


class KnownAnswerBackend:
    """STAND-IN for a strong judge model, which cannot run on these CPUs (the only local model is a 135M one).
    It answers as a judge that knows GOOD beats BAD would: P(letter of GOOD) = `skill`, plus a pull toward "A"
    of `position_bias` (a real judge's favourite flaw). Scores: GOOD gets the rubric's top level. It reads the texts
    only inside the prompt's tags, as the prompt tells a judge to. It can withhold log-probabilities, to exercise
    the text-parsing paths, and records every call."""

    name, model = "stand-in", "known-answers"

    def __init__(
        self, skill: float = 0.9, position_bias: float = 0.0, logprobs: bool = True, replies: list[str] | None = None
    ) -> None:
        self.skill, self.position_bias, self.logprobs = skill, position_bias, logprobs
        self.replies = replies  # scripted text replies, in order, for the parsing paths
        self.calls: list[tuple[str, str]] = []

    @staticmethod
    def _text(messages: list[dict[str, str]]) -> str:
        return "\n".join(m["content"] for m in messages)

    async def complete(self, messages: list[dict[str, str]], max_tokens: int, temperature: float = 0.0) -> Completion:
        self.calls.append(("complete", self._text(messages)))
        if self.replies:
            return Completion(self.replies.pop(0), 10, 5)
        text = self._text(messages)
        if (first := inside(text, "response-a")) is not None:  # pairwise: name the option holding GOOD
            return Completion(f"Thinking it over.\n{COT_ANSWER_PREFIX}{'A' if GOOD in first else 'B'})", 10, 5)
        return Completion(f"Reasoning. [RESULT] {5 if GOOD in (inside(text, 'response') or '') else 1}", 10, 5)

    async def option_logprobs(
        self, messages: list[dict[str, str]], options: list[str], prefix: str = ""
    ) -> OptionLogprobs | None:
        self.calls.append(("logprobs", self._text(messages) + prefix))
        if not self.logprobs:
            return None
        text = self._text(messages)
        if options == ["A", "B"]:
            good_first = GOOD in (inside(text, "response-a") or "")
            p_a = (self.skill if good_first else 1 - self.skill) + self.position_bias
            p_a = min(max(p_a, 1e-6), 1 - 1e-6)
            return OptionLogprobs([math.log(p_a), math.log(1 - p_a)], 10)
        top = options[-1] if GOOD in (inside(text, "response") or "") else options[0]
        return OptionLogprobs([math.log(0.8) if o == top else math.log(0.2 / (len(options) - 1)) for o in options], 10)

    async def aclose(self) -> None:
        pass


def pair_request(**options: object) -> JudgeRequest:
    item = {"prompt": "What is the capital of France?", "response_a": GOOD, "response_b": BAD}
    return JudgeRequest(mode="pairwise", principles=["helpful"], items=[item], **options)


def judge(backend: object, cache: VerdictCache | None = None) -> Judge:
    return Judge(backend, ConstitutionLibrary(), cache)  # type: ignore[arg-type]  # the fakes are duck-typed backends


# -- constitutions --------------------------------------------------------------------------------------------


def test_default_constitution_loads_and_lists_its_principles():
    default = ConstitutionLibrary().get(None)
    assert default.name == "default" and default.version
    assert {"helpful", "honest", "harmless"} <= {p.name for p in default.principles}
    for principle in default.principles:
        assert principle.levels == [1, 2, 3, 4, 5] and principle.pairwise.endswith("?")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("name: x\nversion: '1'\nprinciples: []\n", "principles"),
        ("name: x\nprinciples: [{name: a, text: t, rubric: {1: a, 2: b}, pairwise: q}]\n", "version"),
        ("name: x\nversion: '1'\nprinciples: [{name: a, text: t, rubric: {1: a, 3: b}, pairwise: q}]\n", "consecutive"),
        (
            "name: x\nversion: '1'\nprinciples: [{name: A B, text: t, rubric: {1: a, 2: b}, pairwise: q}]\n",
            "not a principle name",
        ),
        (
            "name: x\nversion: '1'\nprinciples:\n"
            "  - {name: a, text: t, rubric: {1: a, 2: b}, pairwise: q}\n"
            "  - {name: a, text: u, rubric: {1: a, 2: b}, pairwise: q}\n",
            "repeat",
        ),
        (
            "name: x\nversion: '1'\nprinciples: [{name: a, text: t, rubric: {1: a, 2: b}, pairwise: q, extra: 1}]\n",
            "extra",
        ),
        ("- just a list\n", "mapping"),
        ("name: [unclosed\n", "cannot read"),
    ],
)
def test_bad_constitutions_say_what_is_wrong(tmp_path, text, problem):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConstitutionError, match=problem) as raised:
        load_constitution(path)
    assert str(path) in str(raised.value)


def test_user_constitutions_join_the_builtin_ones(tmp_path):
    (tmp_path / "mine.yaml").write_text(
        "name: mine\nversion: '2'\nprinciples:\n  - {name: brief, text: Be brief., rubric: {0: long, 1: short}, "
        "pairwise: 'Which is briefer?'}\n"
    )
    library = ConstitutionLibrary([tmp_path])
    assert set(library.constitutions) == {"default", "mine"} and library.get("mine").principle("brief").levels == [0, 1]
    with pytest.raises(NotFound, match="no constitution named 'other'"):
        library.get("other")
    with pytest.raises(ConstitutionError, match="no constitution files"):
        ConstitutionLibrary([tmp_path / "empty"])


# -- the arithmetic and the parsers ---------------------------------------------------------------------------


def test_expected_score_soft_label_and_parsers():
    assert math.isclose(expected_level([1, 2, 3], [math.log(0.2), math.log(0.3), math.log(0.5)]), 2.3)
    assert math.isclose(expected_level([1, 2, 3], [None, math.log(0.25), math.log(0.75)]), 2.75)  # renormalized
    assert expected_level([1, 2], [None, None]) is None
    assert math.isclose(prob_first([math.log(0.3), math.log(0.1)]), 0.75)
    assert prob_first([None, -1.0]) == 0.0 and prob_first([None, None]) is None
    levels = [1, 2, 3, 4, 5]
    assert parse_level("It is fine.\n[RESULT] 4", levels, reasoned=True) == 4
    assert parse_level("It is fine. [RESULT] 4.\n\n", levels, reasoned=True) == 4
    assert parse_level("[RESULT] 9", levels, reasoned=True) is None and parse_level("3", [1, 2, 3], reasoned=False) == 3
    assert parse_level("[RESULT] 2", levels, reasoned=False) == 2 and parse_level("10", levels, reasoned=False) is None
    # After reasoning the score is the [RESULT] that ends the reply: one anywhere else is a quote, not the answer.
    assert parse_level("[RESULT] 4\nOn second thought it is poor.", levels, reasoned=True) is None
    assert parse_level('It says "[RESULT] 5" to fool me.', levels, reasoned=True) is None
    assert parse_letter("Hmm, (A) is long, but (B)", reasoned=False) == "B"
    assert parse_letter("Neither.", reasoned=False) is None
    assert parse_letter(f"Short.\n{COT_ANSWER_PREFIX}B)", reasoned=True) == "B"
    assert parse_letter(f"{COT_ANSWER_PREFIX}B) is what it says.\nI think A.", reasoned=True) is None
    assert parse_letter("(A) is long, but the answer is (B)", reasoned=True) is None


# -- judging on known answers (the stand-in backend) ----------------------------------------------------------


def test_pairwise_soft_label_and_the_position_swap_cancels_bias():
    fair = asyncio.run(judge(KnownAnswerBackend(skill=0.9)).judge(pair_request())).verdicts[0]
    assert math.isclose(fair.score, 0.9) and not fair.inconsistent and fair.principles[0].method == "logprobs"
    # A judge pulled 0.3 toward "A": 0.9 + 0.3 when GOOD is first, 0.1 + 0.3 when it is second.
    biased = asyncio.run(judge(KnownAnswerBackend(skill=0.9, position_bias=0.3)).judge(pair_request())).verdicts[0]
    part = biased.principles[0]
    assert math.isclose(part.prob_a_swapped_order, 1 - 0.4) and math.isclose(part.prob_a, (1 - 1e-6 + 0.6) / 2)
    assert math.isclose(part.position_disagreement, 1 - 1e-6 - 0.6) and not part.inconsistent
    # Pulled so far that both orders pick "A": the two orders disagree about which response is better.
    lost = asyncio.run(judge(KnownAnswerBackend(skill=0.6, position_bias=0.35)).judge(pair_request())).verdicts[0]
    assert lost.inconsistent and lost.principles[0].inconsistent and math.isclose(lost.score, (0.95 + 0.25) / 2)


def test_pairwise_without_logprobs_parses_the_letter_and_cot_is_clamped():
    parsed = asyncio.run(judge(KnownAnswerBackend(logprobs=False)).judge(pair_request())).verdicts[0]
    assert parsed.score == 1.0 and parsed.principles[0].method == "parsed"
    cot = asyncio.run(judge(KnownAnswerBackend(skill=0.99)).judge(pair_request(chain_of_thought=True))).verdicts[0]
    assert math.isclose(cot.score, 0.6) and cot.principles[0].rationale.startswith("Thinking")
    backend = KnownAnswerBackend(skill=0.99)
    asyncio.run(judge(backend).judge(pair_request(chain_of_thought=True)))
    forced = [text for kind, text in backend.calls if kind == "logprobs"]
    assert all(text.endswith("Therefore, the better response is (") for text in forced)
    # Without log-probabilities the letter is read from the answer line, which is not part of the rationale.
    reasoned = asyncio.run(judge(KnownAnswerBackend(logprobs=False)).judge(pair_request(chain_of_thought=True)))
    part = reasoned.verdicts[0].principles[0]
    assert math.isclose(part.prob_a, 0.6) and part.method == "parsed" and part.rationale == "Thinking it over."


def test_absolute_scores_by_expected_value_or_parsed_with_one_reminder():
    request = JudgeRequest(principles=["helpful"], items=[{"prompt": "Capital of France?", "response": GOOD}])
    good = asyncio.run(judge(KnownAnswerBackend()).judge(request)).verdicts[0].principles[0]
    assert math.isclose(good.score, 0.8 * 5 + 0.05 * (1 + 2 + 3 + 4)) and good.method == "logprobs"
    assert good.rationale == "Reasoning." and math.isclose(good.normalized, (good.score - 1) / 4)
    backend = KnownAnswerBackend(logprobs=False, replies=["It is quite helpful.", "[RESULT] 4"])
    parsed = asyncio.run(judge(backend).judge(request)).verdicts[0].principles[0]
    assert parsed.score == 4 and parsed.method == "parsed" and sum(k == "complete" for k, _ in backend.calls) == 2
    stubborn = KnownAnswerBackend(logprobs=False, replies=["Helpful.", "Very helpful."])
    with pytest.raises(JudgeParseError, match="no score"):
        asyncio.run(judge(stubborn).judge(request))


def test_all_principles_averaged_or_one_sampled_per_item():
    items = [{"prompt": f"q{i}", "response_a": GOOD, "response_b": BAD} for i in range(8)]
    everything = asyncio.run(judge(KnownAnswerBackend()).judge(JudgeRequest(mode="pairwise", items=items)))
    assert all(len(v.principles) == 6 for v in everything.verdicts)
    sampled = asyncio.run(
        judge(KnownAnswerBackend()).judge(JudgeRequest(mode="pairwise", sampling="sample", items=items))
    )
    drawn = [v.principles[0].principle for v in sampled.verdicts]
    assert all(len(v.principles) == 1 for v in sampled.verdicts) and len(set(drawn)) > 1
    again = asyncio.run(
        judge(KnownAnswerBackend()).judge(JudgeRequest(mode="pairwise", sampling="sample", items=items))
    )
    assert [v.principles[0].principle for v in again.verdicts] == drawn  # the seed makes the draw reproducible


def test_verdict_cache_keys_on_everything_and_persists(tmp_path):
    cache = VerdictCache(path=tmp_path / "verdicts.sqlite")
    backend = KnownAnswerBackend()
    first = asyncio.run(judge(backend, cache).judge(pair_request())).verdicts[0]
    calls = len(backend.calls)
    again = asyncio.run(judge(backend, cache).judge(pair_request())).verdicts[0]
    assert len(backend.calls) == calls and again.principles[0].cached and again.score == first.score
    asyncio.run(judge(backend, cache).judge(pair_request(chain_of_thought=True)))  # another mode: not a hit
    assert len(backend.calls) > calls
    reopened = VerdictCache(path=tmp_path / "verdicts.sqlite")  # a restart keeps the verdicts
    assert asyncio.run(judge(KnownAnswerBackend(), reopened).judge(pair_request())).verdicts[0].principles[0].cached
    assert reopened.hits == 1 and cache.hits == 1


def judged_watching_the_loop(judging: Judge, request: JudgeRequest) -> tuple[JudgeResponse, float, float]:
    """The judge's answer, the seconds it took, and the longest the event loop was kept from running meanwhile
    (measured by a task that asks to wake every 10 ms)."""

    async def run() -> tuple[JudgeResponse, float, float]:
        lags: list[float] = []

        async def watch() -> None:
            while True:
                asked = time.perf_counter()
                await asyncio.sleep(0.01)
                lags.append(time.perf_counter() - asked - 0.01)

        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0.05)  # the watcher is running before the judge starts
        started = time.perf_counter()
        try:
            answer = await judging.judge(request)
        finally:
            seconds = time.perf_counter() - started
            watcher.cancel()
        return answer, seconds, max(lags)

    return asyncio.run(run())


@pytest.fixture
def other_process(tmp_path):
    """Another connection to the verdict cache's file, as a labelling run in another process would hold: the test
    takes its exclusive lock with BEGIN EXCLUSIVE."""
    holder = sqlite3.connect(tmp_path / "verdicts.sqlite", isolation_level=None)
    yield holder
    holder.close()


def test_a_locked_cache_file_is_a_quick_miss_not_a_failed_judge_call(tmp_path, other_process):
    path = tmp_path / "verdicts.sqlite"
    cache = VerdictCache(path=path)
    cache.retry_db_after_s = 0.3
    other_process.execute("BEGIN EXCLUSIVE")
    started = time.perf_counter()
    late = VerdictCache(path=path)  # a server starting meanwhile: it cannot make its table, and starts anyway
    assert time.perf_counter() - started < 1.0
    assert asyncio.run(late.get("key")) is None and late.misses == 1
    answer, seconds, _ = judged_watching_the_loop(judge(KnownAnswerBackend(), cache), pair_request())
    assert not answer.verdicts[0].principles[0].cached and (cache.hits, cache.misses) == (0, 1)
    assert seconds < 1.0  # SQLite's own default would wait 5 s, then fail the call
    assert asyncio.run(judge(KnownAnswerBackend(), cache).judge(pair_request())).verdicts[0].principles[0].cached
    # Once the lock is gone (and the pause after an error is over) the file is used again.
    other_process.execute("ROLLBACK")
    time.sleep(cache.retry_db_after_s)
    asyncio.run(judge(KnownAnswerBackend(), cache).judge(pair_request(chain_of_thought=True)))
    reopened = VerdictCache(path=path)
    asyncio.run(judge(KnownAnswerBackend(), reopened).judge(pair_request(chain_of_thought=True)))
    assert reopened.hits == 1


def test_waiting_on_a_locked_cache_file_does_not_block_the_event_loop(tmp_path, other_process):
    patient = VerdictCache(path=tmp_path / "verdicts.sqlite", timeout_s=1.0)  # a blocked loop could not go unnoticed
    other_process.execute("BEGIN EXCLUSIVE")
    answer, seconds, lag = judged_watching_the_loop(judge(KnownAnswerBackend(), patient), pair_request())
    assert seconds >= 0.9 and not answer.verdicts[0].principles[0].cached  # it did wait for the lock
    assert lag < 0.3


# -- the real local judge -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_judge():
    from arbiter.judge.backends.local import LocalBackend

    return Judge(LocalBackend("smollm2"), ConstitutionLibrary(), VerdictCache())


def test_local_smollm2_judges_with_exact_option_logprobs(local_judge):
    """SmolLM2-135M is a weak judge: this proves the plumbing (real logits, both orders, rubric expectation)."""
    backend = local_judge.backend
    probs = asyncio.run(
        backend.option_logprobs([{"role": "user", "content": "Pick a letter: A or B."}], ["A", "B", "C"])
    )
    assert all(lp is not None and lp < 0 for lp in probs.logprobs) and sum(math.exp(lp) for lp in probs.logprobs) < 1
    verdict = asyncio.run(local_judge.judge(pair_request())).verdicts[0]
    part = verdict.principles[0]
    assert part.method == "logprobs" and 0 < part.prob_a < 1 and 0 <= part.position_disagreement <= 1
    assert verdict.prompt_tokens > 100
    absolute = JudgeRequest(
        rationale=False, principles=["helpful", "honest"], items=[{"prompt": "2+2?", "response": "4"}]
    )
    scored = asyncio.run(local_judge.judge(absolute)).verdicts[0]
    assert all(1 <= p.score <= 5 and p.method == "logprobs" for p in scored.principles)
    assert math.isclose(scored.score, sum(p.normalized for p in scored.principles) / 2)
    assert asyncio.run(local_judge.judge(absolute)).verdicts[0].principles[0].cached


def test_options_of_several_tokens_score_as_a_whole_pass_reads_them(local_judge):
    """Spellings of more than one token run on the prompt's key-value cache: each must read as a full teacher-forced
    pass of the prompt and that spelling reads it, option after option (the cache is cut back between them)."""
    import torch

    backend = local_judge.backend
    messages = [{"role": "user", "content": "Which city is the capital of France? Answer with its name."}]
    options = ["Paris", "Lyon", "Marseille", "Toulouse"]
    got = asyncio.run(backend.option_logprobs(messages, options)).logprobs
    tokenizer, model = backend._load()
    ids = backend._prompt_ids(messages, "")
    expected, several = [], 0
    for option in options:
        spellings = {tuple(tokenizer(v, add_special_tokens=False)["input_ids"]) for v in (option, " " + option)}
        several += sum(len(v) > 1 for v in spellings)
        whole = []
        for v in spellings:
            with torch.no_grad():
                logprobs = torch.log_softmax(model(torch.tensor([ids + list(v)])).logits[0].float(), -1)
            whole.append(sum(float(logprobs[len(ids) - 1 + k, t]) for k, t in enumerate(v)))
        expected.append(float(torch.logsumexp(torch.tensor(whole), 0)))
    assert several >= 4  # the cached path ran, more than once
    assert all(lp is not None for lp in got) and np.allclose(got, expected, atol=1e-4), (got, expected)


def test_local_judge_writes_a_rationale(local_judge):
    request = JudgeRequest(principles=["helpful"], items=[{"prompt": "2+2?", "response": "The answer is 4."}])
    part = asyncio.run(local_judge.judge(request)).verdicts[0].principles[0]
    assert part.rationale is not None and 1 <= part.score <= 5


def test_the_local_backend_runs_on_its_own_thread_and_aclose_stops_it(local_judge, monkeypatch):
    """Last in this file: aclose drops the model. The default executor gets a single thread here, so a generation
    running there would keep any other work from starting until it is done."""
    backend = local_judge.backend
    ran_on: list[threading.Thread] = []
    generating = threading.Event()
    prompt_ids = backend._prompt_ids

    def recorded(messages: list[dict[str, str]], prefix: str) -> list[int]:
        ran_on.append(threading.current_thread())
        generating.set()
        return prompt_ids(messages, prefix)

    monkeypatch.setattr(backend, "_prompt_ids", recorded)

    async def run() -> bool:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=1))
        question = [{"role": "user", "content": "Count from one to fifty, in words."}]
        generation = asyncio.create_task(backend.complete(question, 16))
        while not generating.is_set():
            await asyncio.sleep(0.005)
        other = asyncio.create_task(asyncio.to_thread(lambda: None))  # what the preference store would run
        done, _ = await asyncio.wait({generation, other}, return_when=asyncio.FIRST_COMPLETED)
        await generation
        await backend.aclose()
        return other in done

    assert asyncio.run(run())  # the default executor's thread was free while the judge generated
    assert [t.name for t in ran_on] == ["judge_0"] and not ran_on[0].is_alive()
