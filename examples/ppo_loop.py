"""A minimal PPO loop whose reward comes from a running Arbiter server: one file, read top to bottom.

Start a server on the default bundle, then point the loop at it (HTTP or gRPC, the client picks by URL):

    make run                                                   # serves on http://127.0.0.1:8000
    python examples/ppo_loop.py --url http://127.0.0.1:8000    # SmolLM2-135M-Instruct as the policy
    python examples/ppo_loop.py --policy tiny --steps 3        # a 2-layer random policy: seconds, for CI

Per step: sample responses to chat prompts, score them with the reward model, shape per-token rewards with a KL
penalty against a frozen reference (InstructGPT), estimate advantages with GAE, and take a few epochs of the
clipped PPO objective with a jointly trained value head. Everything runs on CPU; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import copy
import random
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from arbiter.clients import RewardClient
from arbiter.clients.shaping import AdaptiveKLController, FixedKLController, kl_shaped_rewards, whiten
from arbiter.weights import SMOLLM2, resolve

PROMPTS = [
    "Give me one tip for sleeping better.",
    "Explain what a prime number is in one sentence.",
    "Write a haiku about autumn.",
    "How do I boil an egg?",
    "Suggest a name for a friendly robot.",
    "What is the capital of France?",
    "Say something kind to someone having a bad day.",
    "Why is the sky blue? Answer briefly.",
    "Recommend a book for a long train ride.",
    "How can I stay focused while studying?",
    "Describe a cat in five words.",
    "What should I pack for a day hike?",
]
GAMMA, LAM, CLIP, VF_COEF, MAX_GRAD_NORM = 1.0, 0.95, 0.2, 0.1, 1.0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8000", help="Arbiter server: http://... or grpc://...")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=4, help="prompts per step")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--policy", choices=["tiny", "smollm2"], default="smollm2")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--kl-coef", type=float, default=0.05, help="initial beta")
    p.add_argument("--kl-target", type=float, default=None, help="adapt beta toward this KL (default: fixed beta)")
    p.add_argument("--kl-estimator", choices=["k1", "k3"], default="k1")
    p.add_argument("--ppo-epochs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def load_policy(kind: str) -> tuple[LlamaForCausalLM, PreTrainedTokenizerBase]:
    folder = resolve(SMOLLM2)  # a local folder: the tokenizer (and the weights) without the hub
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.padding_side = "left"  # generation appends to the right, so prompts must end flush
    if kind == "smollm2":
        return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32), tokenizer
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config), tokenizer


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    # Left padding shifts every prompt; positions must count real tokens only, as generate() does.
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def response_mask(responses: torch.Tensor, eos_id: int) -> torch.Tensor:
    """1 on tokens up to and including the first EOS, 0 after it (generate pads finished rows with EOS too)."""
    is_eos = (responses == eos_id).long()
    eos_before = is_eos.cumsum(-1) - is_eos  # EOS tokens strictly before each position
    return (eos_before == 0).float()


def forward(
    model: LlamaForCausalLM,
    head: nn.Linear | None,
    sequences: torch.Tensor,
    attention_mask: torch.Tensor,
    n_response: int,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs of the response tokens and (with a head) the value of the state each was sampled from."""
    out = model(
        input_ids=sequences,
        attention_mask=attention_mask,
        position_ids=position_ids(attention_mask),
        output_hidden_states=head is not None,
    )
    # The logits at position i predict token i + 1: the response's predictors are the n positions before it.
    logits = out.logits[:, -n_response - 1 : -1].float()
    logprobs = torch.gather(F.log_softmax(logits, -1), 2, sequences[:, -n_response:, None]).squeeze(-1)
    if head is None:
        return logprobs, None
    values = head(out.hidden_states[-1][:, -n_response - 1 : -1]).squeeze(-1)
    return logprobs, values


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns by GAE; past a response's end the reward and value are zero, so nothing leaks back."""
    values = values * mask
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(last)
        delta = rewards[:, t] + GAMMA * next_value - values[:, t]
        last = delta + GAMMA * LAM * last
        advantages[:, t] = last
    advantages = advantages * mask
    return advantages, advantages + values


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(2)  # CI runners have two cores; more threads than cores only adds contention
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    policy, tokenizer = load_policy(args.policy)
    policy.eval()  # no dropout: the old and new log-probs must come from the same function
    reference = copy.deepcopy(policy).requires_grad_(False)  # the frozen initial policy the KL is measured from
    head = nn.Linear(policy.config.hidden_size, 1)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    optimizer = torch.optim.AdamW([*policy.parameters(), *head.parameters()], lr=args.lr)
    if args.kl_target is None:
        kl_ctl: FixedKLController | AdaptiveKLController = FixedKLController(args.kl_coef)
    else:
        kl_ctl = AdaptiveKLController(args.kl_coef, args.kl_target)
    eos = tokenizer.eos_token_id
    picker = random.Random(args.seed)
    history: list[float] = []
    started = time.perf_counter()

    with RewardClient(args.url) as client:
        for step in range(1, args.steps + 1):
            t0 = time.perf_counter()
            chats = [[{"role": "user", "content": text}] for text in picker.choices(PROMPTS, k=args.batch)]
            texts = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in chats]
            prompt = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)

            # Rollout: pure sampling (no top-k/top-p/temperature), so the sampler is exactly the policy we score.
            with torch.no_grad():
                sequences = policy.generate(
                    **prompt,
                    do_sample=True,
                    top_k=0,
                    top_p=1.0,
                    temperature=1.0,
                    max_new_tokens=args.max_new_tokens,
                    pad_token_id=tokenizer.pad_token_id,
                )
                responses = sequences[:, prompt.input_ids.shape[1] :]
                n = responses.shape[1]
                mask = response_mask(responses, eos)
                attention = torch.cat([prompt.attention_mask, mask.long()], dim=1)
                old_logprobs, old_values = forward(policy, head, sequences, attention, n)
                ref_logprobs, _ = forward(reference, None, sequences, attention, n)

            # The server renders the chat with the reward model's own template; we send the messages, not our text.
            lengths = mask.sum(1).long().tolist()
            decoded = [
                tokenizer.decode(r[:k], skip_special_tokens=True) for r, k in zip(responses, lengths, strict=True)
            ]
            scores = torch.tensor(client.score(chats, decoded).scores)

            rewards, kl = kl_shaped_rewards(
                scores, old_logprobs, ref_logprobs, mask, kl_ctl.beta, estimator=args.kl_estimator
            )
            advantages, returns = gae(rewards, old_values, mask)
            advantages = whiten(advantages, mask)

            for _ in range(args.ppo_epochs):
                logprobs, values = forward(policy, head, sequences, attention, n)
                ratio = torch.exp(logprobs - old_logprobs)
                policy_loss = masked_mean(
                    torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - CLIP, 1 + CLIP)), mask
                )
                # The value may move at most CLIP from its rollout estimate too (OpenAI's PPO2, TRL's cliprange_value).
                values_clipped = old_values + (values - old_values).clamp(-CLIP, CLIP)
                value_loss = 0.5 * masked_mean(
                    torch.max((values - returns) ** 2, (values_clipped - returns) ** 2), mask
                )
                optimizer.zero_grad()
                (policy_loss + VF_COEF * value_loss).backward()
                nn.utils.clip_grad_norm_([*policy.parameters(), *head.parameters()], MAX_GRAD_NORM)
                optimizer.step()

            mean_kl = float(kl.sum(1).mean())  # per sequence, which is what the KL target is stated in
            beta = kl_ctl.beta  # the beta these rewards were shaped with; update() sets the next one
            kl_ctl.update(mean_kl, args.batch)
            history.append(float(scores.mean()))
            print(
                f"step {step}/{args.steps}  reward {scores.mean():+.3f}  kl {mean_kl:.4f}  beta {beta:.4f}  "
                f"policy_loss {policy_loss.item():.4f}  value_loss {value_loss.item():.4f}  "
                f"s/step {time.perf_counter() - t0:.1f}",
                flush=True,
            )

    quarter = max(1, len(history) // 4)
    first, last = np.mean(history[:quarter]), np.mean(history[-quarter:])
    print(
        f"done: {args.steps} steps in {time.perf_counter() - started:.1f} s, "
        f"mean reward {first:+.3f} (first quarter) -> {last:+.3f} (last quarter), final beta {kl_ctl.beta:.4f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
