"""`format`: does the response keep the structure it was asked for? 1 (`ok`) or 0 (`wrong`); never `no_answer`.

- `think_answer`: a reasoning block `<think>...</think>` first (once, not empty), then the answer: inside
  `<answer>...</answer>` when `answer_tag` is set (the default), else any text that is not empty. Nothing may
  follow the answer tag but whitespace.
- `tag`: the response holds `<tag>...</tag>` with something inside.
- `regex`: the response matches `pattern` (whole response, or anywhere with `search: true`).
- `json_schema`: the response, or its fenced ```json block, is JSON valid under `schema`.
Patterns given by a spec could backtrack for minutes: like every verifier, this runs in the pool, under its limit.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from arbiter.verifiers.verdict import Verdict

_FENCED_JSON = re.compile(r"```(?:json)?\s*\n(.*?)```", re.DOTALL)


class FormatRules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    format: Literal["think_answer", "tag", "regex", "json_schema"]
    answer_tag: str | None = Field("answer", pattern=r"^[A-Za-z][\w-]*$")
    tag: str | None = Field(None, pattern=r"^[A-Za-z][\w-]*$")
    pattern: str | None = None
    search: bool = False
    json_schema: dict[str, Any] | None = Field(None, alias="schema")
    timeout_s: float = Field(2.0, gt=0, le=60)

    @model_validator(mode="after")
    def complete(self) -> FormatRules:
        needs = {"tag": self.tag, "regex": self.pattern, "json_schema": self.json_schema}
        if self.format in needs and needs[self.format] is None:
            field = {"tag": "tag", "regex": "pattern", "json_schema": "schema"}[self.format]
            raise ValueError(f"format {self.format} needs `{field}`")
        # A bad pattern or schema is the spec's error, found when it loads rather than on every item.
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern {self.pattern!r}: {exc}") from exc
        if self.json_schema is not None:
            from jsonschema import Draft202012Validator, SchemaError

            try:
                Draft202012Validator.check_schema(self.json_schema)
            except SchemaError as exc:
                raise ValueError(f"schema: {exc.message}") from exc
        return self


def last_tag(text: str, tag: str) -> str | None:
    """What the last <tag>...</tag> holds, stripped; None when there is none or it holds only whitespace."""
    inside = re.findall(rf"<{tag}>(.*?)</{tag}>", text, re.DOTALL)
    return inside[-1].strip() or None if inside else None


def _think_answer(response: str, answer_tag: str | None) -> tuple[bool, str | None]:
    found = re.fullmatch(r"\s*<think>(.*?)</think>(.*)", response, re.DOTALL)
    if not found or not found.group(1).strip() or "<think>" in found.group(1) + found.group(2):
        return False, None
    rest = found.group(2)
    if answer_tag is None:
        return bool(rest.strip()), rest.strip() or None
    answer = re.fullmatch(rf"\s*<{answer_tag}>(.*?)</{answer_tag}>\s*", rest, re.DOTALL)
    return bool(answer and answer.group(1).strip()), answer.group(1).strip() if answer else None


def check(response: str, label: object, rules: FormatRules) -> Verdict:
    if rules.format == "think_answer":
        right, extracted = _think_answer(response, rules.answer_tag)
        return Verdict.judged(right, extracted)
    if rules.format == "tag":
        assert rules.tag is not None  # the rules' validator requires it for this format
        content = last_tag(response, rules.tag)
        return Verdict.judged(content is not None, content)
    if rules.format == "regex":
        assert rules.pattern is not None
        match = (re.search if rules.search else re.fullmatch)(rules.pattern, response, re.DOTALL)
        return Verdict.judged(match is not None, match.group(0) if match else None)
    from jsonschema import Draft202012Validator

    fenced = _FENCED_JSON.search(response)
    text = fenced.group(1) if fenced else response
    try:
        value = json.loads(text)
    except ValueError:
        return Verdict.judged(False, None)
    valid = Draft202012Validator(rules.json_schema or {}).is_valid(value)
    return Verdict.judged(valid, text.strip())
