"""Recognising the row shapes users have, and naming what is wrong with the rows that fit none.

Shapes:
- pairwise: {prompt, chosen, rejected}; prompt a string or chat messages (TRL's conversational form, where
  chosen/rejected may also be message lists); without a prompt, the shared message prefix is the prompt.
- HH-RLHF transcripts: chosen and rejected are "\\n\\nHuman: ...\\n\\nAssistant: ..." strings sharing the prompt.
- K-wise: {prompt, responses: [...], ranking: [...]}, ranking[i] the rank of responses[i], 1 the best.
- RewardBench 2: {prompt, chosen: [str, ...], rejected: [str, ...]}, every chosen response preferred to every
  rejected one (one group; best-of-N when one is chosen).
Optional on pairs: margin (>= 0) and preference_strength (in [0.5, 1]; 0.5 is a tie).
Optional on all: subset (reported separately in evaluation) and dataset (overrides the source's name).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from itertools import combinations
from typing import TypeGuard

from arbiter.bundle.render import Message, Prompt
from arbiter.data.schema import Comparison, PreferenceGroup


class BadRow(Exception):
    """A row that cannot become a preference group; `reason` is the summary table's key."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


HH_TURN = re.compile(r"\n\n(Human|Assistant): ")
HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def parse_row(row: Mapping[str, object], source: str) -> PreferenceGroup:
    row = {k: _maybe_json(v) for k, v in row.items()}
    subset = row.get("subset")
    subset = str(subset) if subset is not None else None
    if isinstance(dataset := row.get("dataset"), str):  # rows written by Arbiter keep the name of their first source
        source = dataset
    if row.get("responses") is not None or row.get("ranking") is not None:
        return _ranking(row, source, subset)
    chosen, rejected = row.get("chosen"), row.get("rejected")
    if _texts(chosen) and _texts(rejected):
        ranking = [1] * len(chosen) + [2] * len(rejected)
        return _ranking({**row, "responses": [*chosen, *rejected], "ranking": ranking}, source, subset)
    if row.get("chosen") is None or row.get("rejected") is None:
        missing = [k for k in ("chosen", "rejected") if row.get(k) is None]
        raise BadRow("missing_field", ", ".join(missing))
    prompt, chosen, rejected = _pair(row)
    _check_responses([chosen, rejected])
    margin, strength = _margin(row.get("margin")), _strength(row.get("preference_strength"))
    if strength == 0.5 or row.get("tie") is True:
        raise BadRow("tie")
    return PreferenceGroup(prompt, (chosen, rejected), (Comparison(0, 1, margin, strength),), source, subset)


def _texts(value: object) -> TypeGuard[list[str]]:
    """A list of response strings (RewardBench 2), as opposed to a message list (TRL) or one string."""
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


def _pair(row: Mapping[str, object]) -> tuple[Prompt, str, str]:
    chosen, rejected, prompt = row["chosen"], row["rejected"], row.get("prompt")
    if isinstance(chosen, list) and isinstance(rejected, list):
        chosen_msgs, rejected_msgs = _messages(chosen), _messages(rejected)
        if prompt in (None, "", []):  # TRL implicit prompt: the shared message prefix
            shared = 0
            while (
                shared < min(len(chosen_msgs), len(rejected_msgs)) - 1 and chosen_msgs[shared] == rejected_msgs[shared]
            ):
                shared += 1
            prompt, chosen_msgs, rejected_msgs = (
                chosen_msgs[:shared],
                chosen_msgs[shared:],
                rejected_msgs[shared:],
            )
        return parse_prompt(prompt), _final_assistant(chosen_msgs), _final_assistant(rejected_msgs)
    if not isinstance(chosen, str) or not isinstance(rejected, str):
        raise BadRow("bad_type", "chosen and rejected must both be strings or both be message lists")
    if prompt in (None, "") and ("\n\nHuman:" in chosen or chosen.startswith("Human:")):
        return _hh(chosen, rejected)
    if prompt is None:
        raise BadRow("missing_field", "prompt")
    return parse_prompt(prompt), chosen, rejected


def _hh(chosen: str, rejected: str) -> tuple[Prompt, str, str]:
    """Split two HH-RLHF transcripts at their last shared 'Assistant:' turn."""
    chosen_turns, rejected_turns = _hh_turns(chosen), _hh_turns(rejected)
    shared = 0
    while shared < min(len(chosen_turns), len(rejected_turns)) - 1 and chosen_turns[shared] == rejected_turns[shared]:
        shared += 1
    prompt = chosen_turns[:shared]
    tail_c, tail_r = chosen_turns[shared:], rejected_turns[shared:]
    if not prompt or prompt[-1]["role"] != "user" or len(tail_c) != 1 or len(tail_r) != 1:
        raise BadRow("unparsable_transcript", "no single final assistant turn after a shared prompt")
    if tail_c[0]["role"] != "assistant" or tail_r[0]["role"] != "assistant":
        raise BadRow("unparsable_transcript", "transcripts do not end with an assistant turn")
    return prompt, tail_c[0]["content"], tail_r[0]["content"]


def _hh_turns(text: str) -> list[Message]:
    text = text if text.startswith("\n\n") else "\n\n" + text
    parts = HH_TURN.split(text)
    if parts[0].strip():
        raise BadRow("unparsable_transcript", "text before the first Human: turn")
    if len(parts) < 5:
        raise BadRow("unparsable_transcript", "fewer than one Human and one Assistant turn")
    return [{"role": HH_ROLES[parts[i]], "content": parts[i + 1].strip()} for i in range(1, len(parts), 2)]


def _ranking(row: Mapping[str, object], source: str, subset: str | None) -> PreferenceGroup:
    responses, ranking = row.get("responses"), row.get("ranking")
    if row.get("prompt") is None:
        raise BadRow("missing_field", "prompt")
    if not isinstance(responses, list) or not isinstance(ranking, list):
        raise BadRow("bad_ranking", "responses and ranking must both be lists")
    if len(responses) != len(ranking) or len(responses) < 2:
        raise BadRow("bad_ranking", "need at least 2 responses and one rank per response")
    if not all(isinstance(r, int | float) and not isinstance(r, bool) for r in ranking):
        raise BadRow("bad_ranking", "ranks must be numbers")
    texts = [_response_text(r) for r in responses]
    _check_responses(texts)
    comparisons = tuple(
        Comparison(i, j) if ranking[i] < ranking[j] else Comparison(j, i)
        for i, j in combinations(range(len(texts)), 2)
        if ranking[i] != ranking[j]
    )
    if not comparisons:
        raise BadRow("tie", "all responses share one rank")
    return PreferenceGroup(parse_prompt(row["prompt"]), tuple(texts), comparisons, source, subset)


def _check_responses(texts: list[str]) -> None:
    if any(not t.strip() for t in texts):
        raise BadRow("empty_response")
    if len({t.strip() for t in texts}) != len(texts):
        raise BadRow("identical_responses")


def parse_prompt(value: object) -> Prompt:
    """A prompt as a string or chat messages; `BadRow` when it is neither, or empty."""
    if isinstance(value, str):
        if not value.strip():
            raise BadRow("empty_prompt")
        return value
    if isinstance(value, list):
        messages = _messages(value)
        if not messages:
            raise BadRow("empty_prompt")
        return messages
    raise BadRow("bad_type", f"prompt is a {type(value).__name__}")


def _messages(value: list[object]) -> list[Message]:
    out = []
    for m in value:
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise BadRow("bad_type", "chat messages must be {role, content} objects")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _final_assistant(messages: list[Message]) -> str:
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        raise BadRow("bad_type", "completion must be one assistant message")
    return messages[0]["content"]


def _response_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return _final_assistant(_messages(value))
    raise BadRow("bad_type", f"response is a {type(value).__name__}")


def _margin(value: object) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise BadRow("bad_margin", f"margin {value!r} is not a number >= 0")
    return float(value)


def _strength(value: object) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0.5 <= value <= 1:
        raise BadRow("bad_margin", f"preference_strength {value!r} is not in [0.5, 1]")
    return float(value)


def _maybe_json(value: object) -> object:
    """CSV cells carry message lists and rankings as JSON text."""
    if isinstance(value, str) and value[:1] in "[{" and value[-1:] in "]}":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    if hasattr(value, "tolist"):  # numpy arrays from parquet
        return value.tolist()
    return value
