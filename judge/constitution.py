"""Constitutions: versioned YAML files of named principles. Each principle has the text the judge reads, a
rubric anchoring every absolute score, and the question asked when two responses are compared."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from arbiter.errors import NotFound

BUILTIN = Path(__file__).resolve().parent / "constitutions"
NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


class ConstitutionError(ValueError):
    """A constitution that cannot be used: the file, and every problem found in it."""


class Principle(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    text: str = Field(min_length=1)
    rubric: dict[int, str] = Field(description="score -> what a response at that level looks like")
    pairwise: str = Field(min_length=1, description="the question asked when two responses are compared")

    @field_validator("name")
    @classmethod
    def slug(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError(f"{value!r} is not a principle name (lower case letters, digits, _ and -)")
        return value

    @field_validator("rubric")
    @classmethod
    def consecutive_levels(cls, value: dict[int, str]) -> dict[int, str]:
        levels = sorted(value)
        if len(levels) < 2 or levels != list(range(levels[0], levels[0] + len(levels))):
            raise ValueError(f"rubric levels must be at least two consecutive integers, got {levels}")
        if levels[0] < 0 or levels[-1] > 9:
            raise ValueError("rubric levels must be single digits (0-9): the judge answers with one token")
        if any(not text.strip() for text in value.values()):
            raise ValueError("every rubric level needs a description")
        return dict(sorted(value.items()))

    @property
    def levels(self) -> list[int]:
        return list(self.rubric)


class Constitution(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    version: str = Field(min_length=1)
    description: str = ""
    principles: list[Principle] = Field(min_length=1)

    @model_validator(mode="after")
    def unique_principles(self) -> Constitution:
        names = [p.name for p in self.principles]
        if len(set(names)) != len(names):
            raise ValueError(f"principle names repeat: {sorted({n for n in names if names.count(n) > 1})}")
        return self

    def principle(self, name: str) -> Principle:
        for p in self.principles:
            if p.name == name:
                return p
        raise NotFound(
            f"constitution {self.name!r} has no principle {name!r}; it has {[p.name for p in self.principles]}"
        )


def load_constitution(path: Path) -> Constitution:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConstitutionError(f"{path}: cannot read: {exc}") from exc
    if not isinstance(data, dict):
        raise ConstitutionError(f"{path}: a constitution is a YAML mapping (name, version, principles)")
    try:
        return Constitution.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConstitutionError(f"{path}: {problems}") from exc


class ConstitutionLibrary:
    """The built-in constitutions plus every *.yaml in the folders given; later folders win on a name."""

    def __init__(self, folders: list[Path] | None = None) -> None:
        self.constitutions: dict[str, Constitution] = {}
        for folder in [BUILTIN, *(folders or [])]:
            files = [folder] if folder.is_file() else sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml"))
            if not files:
                raise ConstitutionError(f"{folder}: no constitution files (*.yaml) there")
            for file in files:
                constitution = load_constitution(file)
                self.constitutions[constitution.name] = constitution

    def get(self, name: str | None) -> Constitution:
        key = name or "default"
        if key not in self.constitutions:
            raise NotFound(f"no constitution named {key!r}; known: {sorted(self.constitutions)}")
        return self.constitutions[key]
