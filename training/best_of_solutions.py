"""Best-of-N on real model outputs: how often the reward model's top choice among a question's solutions is a
correct one, against random choice and the oracle.

Rows as in GSM8K's example_model_solutions (../shared/data/verifiable/gsm8k_model_solutions.jsonl): `question`,
and `solutions`, each `{solution, is_correct}`. A tie for the top score counts as the share of correct solutions
among the tied ones (what a random tie-break would get on average).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import numpy as np

from arbiter.training.evaluate import Scorer, Share, share


@dataclass(frozen=True)
class Question:
    question: str
    solutions: tuple[str, ...]
    correct: tuple[bool, ...]


class BestOfSolutions(TypedDict):
    questions: int
    solutions_per_question: float
    reward_model: Share
    random: float
    oracle: float


def load_questions(path: Path) -> list[Question]:
    """Every row with at least two graded solutions (a question with one solution has no choice to make)."""
    questions = []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        solutions = [s for s in row["solutions"] if isinstance(s.get("is_correct"), bool)]
        if len(solutions) >= 2:
            questions.append(
                Question(
                    row["question"],
                    tuple(s["solution"] for s in solutions),
                    tuple(s["is_correct"] for s in solutions),
                )
            )
    return questions


def best_of_solutions(questions: list[Question], scorer: Scorer) -> BestOfSolutions:
    prompts = [q.question for q in questions for _ in q.solutions]
    scores = scorer(prompts, [s for q in questions for s in q.solutions])
    picked, offset = [], 0
    for q in questions:
        own = scores[offset : offset + len(q.solutions)]
        top = own == own.max()
        picked.append(float(np.asarray(q.correct)[top].mean()))
        offset += len(q.solutions)
    return {
        "questions": len(questions),
        "solutions_per_question": float(np.mean([len(q.solutions) for q in questions])),
        "reward_model": share(np.asarray(picked)),
        "random": float(np.mean([np.mean(q.correct) for q in questions])),
        "oracle": float(np.mean([any(q.correct) for q in questions])),
    }


def format_best_of_solutions(report: BestOfSolutions) -> str:
    rm = report["reward_model"]
    return (
        f"best of {report['solutions_per_question']:.1f} solutions over {report['questions']} questions: "
        f"reward model's pick correct {rm['accuracy']:.3f} [{rm['accuracy_low']:.3f}, {rm['accuracy_high']:.3f}], "
        f"random {report['random']:.3f}, oracle {report['oracle']:.3f}"
    )
