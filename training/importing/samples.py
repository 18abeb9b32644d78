"""Texts that an import checks parity on when it is given no preference data: conversations of several shapes
(one turn and several, a system message, code, arithmetic, non-Latin scripts, a long answer that may be cut), so that
rendering, special tokens, padding and truncation are all exercised. Give --eval-data for the model's own domain."""

from __future__ import annotations

from arbiter.bundle.render import Prompt

LONG_ANSWER = " ".join(
    f"Step {i}: the running total is {i * (i + 1) // 2}, since we add {i} to the previous total." for i in range(1, 60)
)

SAMPLES: list[tuple[Prompt, str]] = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("What is the capital of France?", "I think it might be Lyon, but I'm not sure."),
    ("How do I reverse a list in Python?", "Use `items[::-1]` for a reversed copy, or `items.reverse()` in place."),
    ("How do I reverse a list in Python?", "You can't."),
    ("Is it safe to mix bleach and ammonia for cleaning?", "No. Mixing them releases toxic chloramine vapours."),
    ("Is it safe to mix bleach and ammonia for cleaning?", "Yes, it makes a stronger cleaner."),
    (
        [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "Give me one tip for sleeping better."},
        ],
        "Keep a fixed wake-up time, even at weekends.",
    ),
    (
        [
            {"role": "user", "content": "I have 3 apples and buy 5 more."},
            {"role": "assistant", "content": "Then you have 8 apples."},
            {"role": "user", "content": "And if I eat two?"},
        ],
        "You would have 6 apples left.",
    ),
    ("Sum the numbers from 1 to 59 and show your work.", LONG_ANSWER),
    ("Traduis « bonjour » en japonais.", "« Bonjour » se dit こんにちは (konnichiwa)."),
    ("Write a haiku about autumn.", "Crisp leaves drift and fall\nthe maple lets go of red\nwind carries the year"),
    ("", "An answer to an empty prompt."),
]
