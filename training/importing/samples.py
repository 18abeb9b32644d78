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

# Solutions step by step for a process reward model's parity: right and wrong steps, one step and many, a chat
# prompt, and one long enough to be cut (a cut solution keeps the steps whose token fits).
STEP_SAMPLES: list[tuple[Prompt, list[str]]] = [
    ("Tom has 3 apples and buys 4 more. How many apples does he have?", ["3 + 4 = 7.", "The answer is 7."]),
    ("Tom has 3 apples and buys 4 more. How many apples does he have?", ["3 + 4 = 8.", "The answer is 8."]),
    ("What is 12 times 11?", ["12 * 11 = 132."]),
    (
        [
            {"role": "system", "content": "Solve step by step."},
            {"role": "user", "content": "A pen costs $2. Cost of 5?"},
        ],
        ["Each pen costs $2.", "5 pens cost 5 * 2 = $10.", "The answer is $10."],
    ),
    (
        "A train travels 60 km per hour for 2.5 hours. How far does it go?",
        ["Distance is speed times time.", "60 * 2.5 = 150.", "It travels 150 km."],
    ),
    (
        "Sum the numbers from 1 to 40, adding one at a time.",
        [f"{i * (i - 1) // 2} + {i} = {i * (i + 1) // 2}." for i in range(1, 41)],
    ),
    ("Écris 7 + 5 en toutes lettres.", ["7 + 5 = 12.", "Douze."]),
    ("", ["An answer to an empty prompt, in one step."]),
]
