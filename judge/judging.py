"""Judging against a constitution: absolute scores with rationales, and Constitutional-AI pairwise comparisons.

Absolute: the judge writes its reasoning, then `[RESULT] n`. With log-probabilities the score is the expected
value over the rubric's levels at the point where n is written; without them n is parsed from the text, with
one reminder when it is missing.

Pairwise: a multiple-choice question per principle. P(A) is the normalized probability of the option letters;
each pair is judged in both orders and the two estimates of P(a preferred) are averaged, which cancels the
judge's position bias, and their gap is reported. With chain of thought the judge reasons first and P(A) is
clamped to [0.4, 0.6]: reasoning makes the letters' probabilities overconfident (Bai et al. 2022).

An answer counts only where it must be: after reasoning, at the end of the reply's final non-empty line, as
`[RESULT] n` or "Therefore, the better response is (X)"; a score-only or letter-only reply, in the reply itself.
The reasoning may quote the judged texts, and a response that says "[RESULT] 5" or "the better response is (A)"
must not be able to answer for the judge.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from arbiter.clients.protocol import (
    JudgeItem,
    JudgeRequest,
    JudgeResponse,
    PlainPrompt,
    PrincipleVerdict,
    Verdict,
    plain_prompt,
)
from arbiter.judge import prompts
from arbiter.judge.backends.base import JudgeBackend
from arbiter.judge.cache import VerdictCache, cache_key
from arbiter.judge.constitution import Constitution, ConstitutionLibrary, Principle

COT_CLAMP = (0.4, 0.6)
# A reasoned answer is the end of the reply, as the prompt asks: the final line ends with it.
RESULT_AT_END = re.compile(re.escape(prompts.RESULT_MARK) + r"[ \t]*(\d+)[ \t]*\.?\s*\Z")
# The prefix without its "(": a judge that writes "... is A" has still answered in the right place.
LETTER_AT_END = re.compile(re.escape(prompts.COT_ANSWER_PREFIX.removesuffix("(")) + r"\(?([AB])\)?[ \t]*\.?\s*\Z")
SCORE_ONLY = re.compile(r"\s*(?:" + re.escape(prompts.RESULT_MARK) + r"\s*)?(\d+)")
LETTER = re.compile(r"\(?\b([AB])\b\)?")


class JudgeParseError(RuntimeError):
    """The judge's model answered, but not with a usable score or letter (even after a reminder)."""


@dataclass
class Scored:
    verdict: PrincipleVerdict
    prompt_tokens: int = 0
    completion_tokens: int = 0


def expected_level(levels: list[int], logprobs: list[float | None]) -> float | None:
    known = [(level, lp) for level, lp in zip(levels, logprobs, strict=True) if lp is not None]
    if not known:
        return None
    top = max(lp for _, lp in known)
    weights = [(level, math.exp(lp - top)) for level, lp in known]
    return sum(level * w for level, w in weights) / sum(w for _, w in weights)


def prob_first(logprobs: list[float | None]) -> float | None:
    """P(A) from the log-probabilities of A and B; an option the backend did not see counts as far less likely."""
    a, b = logprobs
    if a is None and b is None:
        return None
    if a is None or b is None:
        return 0.0 if a is None else 1.0
    return 1 / (1 + math.exp(b - a))


def disagree(first: float, second: float) -> bool:
    """The two orders picked different responses (a 0.5 in either order picks none)."""
    return (first - 0.5) * (second - 0.5) < 0


def split_answer(text: str, answer: re.Pattern[str]) -> tuple[str, str | None]:
    """A reasoned reply split into its reasoning and its answer, which counts only where `answer` finds it: at the
    end of the final non-empty line. None when it is not there; a mark earlier on (quoted from a judged text, or
    the judge thinking aloud) is part of the reasoning."""
    found = answer.search(text)
    if found is None:
        return text.strip(), None
    return text[: found.start()].strip(), found[1]


def parse_level(text: str, levels: list[int], reasoned: bool) -> int | None:
    """The score: after reasoning, n of the `[RESULT] n` that ends the reply; in a reply that is only the score (or
    `[RESULT] n`), the number it starts with. None when it is not there or not one of `levels`."""
    if reasoned:
        answer = split_answer(text, RESULT_AT_END)[1]
    else:
        found = SCORE_ONLY.match(text)
        answer = found[1] if found else None
    level = int(answer) if answer is not None else None
    return level if level is not None and levels[0] <= level <= levels[-1] else None


def parse_letter(text: str, reasoned: bool) -> str | None:
    """The letter: after reasoning, the one in the "Therefore, the better response is (X)" that ends the reply; in a
    letter-only reply (a few tokens), its last A or B."""
    if reasoned:
        return split_answer(text, LETTER_AT_END)[1]
    letters = LETTER.findall(text)
    return letters[-1] if letters else None


class Judge:
    def __init__(
        self,
        backend: JudgeBackend,
        constitutions: ConstitutionLibrary,
        cache: VerdictCache | None = None,
        default_constitution: str = "default",
        max_reasoning_tokens: int = 160,
    ) -> None:
        self.backend, self.constitutions, self.cache = backend, constitutions, cache
        self.default_constitution = default_constitution
        self.max_reasoning_tokens = max_reasoning_tokens

    async def judge(self, request: JudgeRequest) -> JudgeResponse:
        constitution = self.constitutions.get(request.constitution or self.default_constitution)
        chosen = [constitution.principle(n) for n in request.principles] if request.principles else None
        principles = chosen or constitution.principles
        verdicts = await asyncio.gather(
            *(self._item(request, constitution, principles, item) for item in request.items)
        )
        return JudgeResponse(
            backend=self.backend.name,
            model=self.backend.model,
            constitution=constitution.name,
            constitution_version=constitution.version,
            mode=request.mode,
            verdicts=list(verdicts),
        )

    async def _item(
        self,
        request: JudgeRequest,
        constitution: Constitution,
        principles: list[Principle],
        item: JudgeItem,
    ) -> Verdict:
        if request.sampling == "sample":  # one principle per item, from the seed and the texts: not the batching
            draw = random.Random(f"{request.seed}:{item.model_dump_json()}")
            principles = [draw.choice(principles)]
        prompt = plain_prompt(item.prompt)
        if request.mode == "absolute":
            jobs = [self._absolute(constitution, p, prompt, item.response or "", request.rationale) for p in principles]
        else:
            jobs = [
                self._pairwise(
                    constitution, p, prompt, item.response_a or "", item.response_b or "", request.chain_of_thought
                )
                for p in principles
            ]
        scored = await asyncio.gather(*jobs)
        parts = [s.verdict for s in scored]
        tokens = sum(s.prompt_tokens for s in scored), sum(s.completion_tokens for s in scored)
        if request.mode == "absolute":
            score = sum(p.normalized or 0.0 for p in parts) / len(parts)
            inconsistent = None
        else:
            score = sum(p.prob_a or 0.0 for p in parts) / len(parts)
            first = sum(2 * (p.prob_a or 0) - (p.prob_a_swapped_order or 0) for p in parts) / len(parts)
            second = sum(p.prob_a_swapped_order or 0.0 for p in parts) / len(parts)
            inconsistent = disagree(first, second)
        return Verdict(
            score=score,
            inconsistent=inconsistent,
            principles=parts,
            prompt_tokens=tokens[0],
            completion_tokens=tokens[1],
        )

    async def _cached(self, key: str, compute: Callable[[], Awaitable[Scored]]) -> Scored:
        if self.cache is not None and (hit := await self.cache.get(key)) is not None:
            return Scored(PrincipleVerdict.model_validate({**hit, "cached": True}))
        scored = await compute()
        if self.cache is not None:
            await self.cache.put(key, scored.verdict.model_dump())
        return scored

    def _key(self, constitution: Constitution, principle: Principle, **parts: object) -> str:
        return cache_key(
            backend=self.backend.name,
            model=self.backend.model,
            constitution=constitution.name,
            version=constitution.version,
            principle=principle.model_dump(),
            reasoning_tokens=self.max_reasoning_tokens,
            **parts,
        )

    # -- absolute ----------------------------------------------------------------------------------------------

    async def _absolute(
        self, constitution: Constitution, principle: Principle, prompt: PlainPrompt, response: str, rationale: bool
    ) -> Scored:
        key = self._key(constitution, principle, mode="absolute", rationale=rationale, prompt=prompt, response=response)
        return await self._cached(key, lambda: self._absolute_uncached(principle, prompt, response, rationale))

    async def _absolute_uncached(
        self, principle: Principle, prompt: PlainPrompt, response: str, rationale: bool
    ) -> Scored:
        messages = prompts.absolute(principle, prompt, response, rationale)
        levels, options = principle.levels, [str(level) for level in principle.levels]
        used = [0, 0]
        text, reasoning, prefix = None, None, ""
        if rationale:
            reply = await self.backend.complete(messages, self.max_reasoning_tokens)
            used = [reply.prompt_tokens, reply.completion_tokens]
            text = reply.text
            reasoning = split_answer(text, RESULT_AT_END)[0]
            prefix = f"{reasoning}\n{prompts.RESULT_MARK} "
        logprobs = await self.backend.option_logprobs(messages, options, prefix)
        expected = expected_level(levels, logprobs.logprobs) if logprobs else None
        if logprobs:
            used[0] += logprobs.prompt_tokens
        if expected is not None:
            score, method = expected, "logprobs"
        else:
            score, extra = await self._parsed_level(messages, text, levels)
            used = [used[0] + extra[0], used[1] + extra[1]]
            method = "parsed"
        verdict = PrincipleVerdict(
            principle=principle.name,
            score=score,
            normalized=(score - levels[0]) / (levels[-1] - levels[0]),
            rationale=reasoning,
            method=method,
        )
        return Scored(verdict, *used)

    async def _parsed_level(
        self, messages: list[dict[str, str]], reasoned: str | None, levels: list[int]
    ) -> tuple[float, list[int]]:
        """The score parsed from the reasoned reply, or (no rationale asked) from a score-only reply."""
        used = [0, 0]
        if reasoned is None:
            reply = await self.backend.complete(messages, 8)
            text, used = reply.text, [reply.prompt_tokens, reply.completion_tokens]
        else:
            text = reasoned
        level = parse_level(text, levels, reasoned=reasoned is not None)
        if level is None:
            retry = [*messages, {"role": "assistant", "content": text}, prompts.retry_reminder(levels)]
            reply = await self.backend.complete(retry, 8)
            used = [used[0] + reply.prompt_tokens, used[1] + reply.completion_tokens]
            level = parse_level(reply.text, levels, reasoned=False)  # asked for the line only
        if level is None:
            raise JudgeParseError(f"the judge model gave no score from {levels[0]} to {levels[-1]}: {text[-200:]!r}")
        return float(level), used

    # -- pairwise ----------------------------------------------------------------------------------------------

    async def _pairwise(
        self, constitution: Constitution, principle: Principle, prompt: PlainPrompt, a: str, b: str, cot: bool
    ) -> Scored:
        key = self._key(constitution, principle, mode="pairwise", cot=cot, prompt=prompt, a=a, b=b)
        return await self._cached(key, lambda: self._pairwise_uncached(principle, prompt, a, b, cot))

    async def _pairwise_uncached(self, principle: Principle, prompt: PlainPrompt, a: str, b: str, cot: bool) -> Scored:
        (p_ab, used_ab, why), (p_ba, used_ba, _) = await asyncio.gather(
            self._prob_first(principle, prompt, a, b, cot), self._prob_first(principle, prompt, b, a, cot)
        )
        first, second = p_ab[0], 1 - p_ba[0]  # P(a preferred) with a shown first, then shown second
        verdict = PrincipleVerdict(
            principle=principle.name,
            prob_a=(first + second) / 2,
            prob_a_swapped_order=second,
            position_disagreement=abs(first - second),
            inconsistent=disagree(first, second),
            rationale=why,
            method="logprobs" if p_ab[1] and p_ba[1] else "parsed",
        )
        return Scored(verdict, used_ab[0] + used_ba[0], used_ab[1] + used_ba[1])

    async def _prob_first(
        self, principle: Principle, prompt: PlainPrompt, first: str, second: str, cot: bool
    ) -> tuple[tuple[float, bool], list[int], str | None]:
        """P(the response shown first is better), whether it came from log-probs, tokens used, reasoning."""
        messages = prompts.pairwise(principle, prompt, first, second, cot)
        used = [0, 0]
        reasoned, reasoning, prefix = None, None, ""
        if cot:
            reply = await self.backend.complete(messages, self.max_reasoning_tokens)
            used = [reply.prompt_tokens, reply.completion_tokens]
            reasoned = reply.text
            reasoning = split_answer(reasoned, LETTER_AT_END)[0]
            prefix = f"{reasoning}\n{prompts.COT_ANSWER_PREFIX}"
        logprobs = await self.backend.option_logprobs(messages, ["A", "B"], prefix)
        p = prob_first(logprobs.logprobs) if logprobs else None
        if logprobs:
            used[0] += logprobs.prompt_tokens
        from_logprobs = p is not None
        if p is None:
            text = reasoned
            if text is None:
                reply = await self.backend.complete(messages, 4)
                text = reply.text
                used = [used[0] + reply.prompt_tokens, used[1] + reply.completion_tokens]
            letter = parse_letter(text, reasoned=reasoned is not None)
            if letter is None:
                raise JudgeParseError(f"the judge model picked neither A nor B: {text[-200:]!r}")
            p = 1.0 if letter == "A" else 0.0
        if cot:
            p = min(max(p, COT_CLAMP[0]), COT_CLAMP[1])
        return (p, from_logprobs), used, reasoning
