"""Reward specs: named, versioned YAML files that turn several scores per item (reward models, an LLM judge,
rules) into one reward per item. This module is the schema, its validation, and the library of specs on disk.

A spec has components (leaf sources: `model`, `judge`, `rule`, `verifier`; derived ones: `ensemble`, `llama2`), a
`reward` that is a weighted sum of some of them, and transforms on every component and on the total."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from arbiter.bundle.steps import StepAggregate
from arbiter.errors import NotFound
from arbiter.rewards.group_compare import GroupReward, PairStrategy
from arbiter.rewards.parts import Part, read
from arbiter.verifiers.registry import VERIFIERS, Rules, VerifierName

BUILTIN = Path(__file__).resolve().parent / "specs"
NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
EPS = 1e-6


class SpecError(ValueError):
    """A spec that cannot be used: where it came from, and every problem found in it."""

    def __init__(self, source: str, problems: Sequence[str] | None = None) -> None:
        # SpecError(message) also works, for callers that gather several specs' errors into one.
        self.source = source if problems is not None else ""
        self.problems = list(problems) if problems is not None else [source]
        super().__init__(f"{source}: " + "; ".join(self.problems) if problems is not None else source)


class _Problems(ValueError):
    """Raised inside the spec's own validator so that load_spec can list each problem, not one joined string."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class _Strict(BaseModel):
    # Transform parameters and thresholds must be real numbers: a NaN would silently turn every reward into NaN.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _check_name(value: str) -> str:
    if not NAME.match(value):
        raise ValueError(f"{value!r} is not a name (a lower case letter, then lower case letters, digits, _ and -)")
    return value


# -- transforms ---------------------------------------------------------------------------------------------------


class Normalize(_Strict):
    """(x - mean) / std with the served model's stored statistics; only on `model` components."""

    kind: Literal["normalize"] = "normalize"


class RunningNorm(_Strict):
    """(x - mean) / (std + eps) with an exponential moving mean/variance, updated with each batch first."""

    kind: Literal["running_norm"] = "running_norm"
    momentum: float = Field(0.99, gt=0, lt=1)
    eps: float = Field(EPS, gt=0)


class GroupNorm(_Strict):
    """GRPO: (x - group mean) / (group std + eps) over the items sharing a group id (population std)."""

    kind: Literal["group_norm"] = "group_norm"
    eps: float = Field(EPS, gt=0)


class Whiten(_Strict):
    """(x - batch mean) / (batch std + eps) (population std)."""

    kind: Literal["whiten"] = "whiten"
    eps: float = Field(EPS, gt=0)


class Logit(_Strict):
    """log(x / (1 - x)) with x clamped to [eps, 1 - eps]: sigmoid-scale outputs back onto the real line."""

    kind: Literal["logit"] = "logit"
    eps: float = Field(EPS, gt=0, lt=0.5)


class Clip(_Strict):
    kind: Literal["clip"] = "clip"
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def bounds(self) -> Clip:
        if self.min is None and self.max is None:
            raise ValueError("clip needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"clip min {self.min} is above max {self.max}")
        return self


class LengthPenalty(_Strict):
    """x - coef * max(0, words - target), words = len(response.split())."""

    kind: Literal["length_penalty"] = "length_penalty"
    coef: float = Field(ge=0)
    target: float = Field(0, ge=0)


class Scale(_Strict):
    """x * mul + add."""

    kind: Literal["scale"] = "scale"
    mul: float = 1.0
    add: float = 0.0


Transform = Annotated[
    Normalize | RunningNorm | GroupNorm | Whiten | Logit | Clip | LengthPenalty | Scale, Field(discriminator="kind")
]


# -- components ---------------------------------------------------------------------------------------------------


class _Component(_Strict):
    name: str
    transforms: list[Transform] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def slug(cls, value: str) -> str:
        return _check_name(value)

    @property
    def inputs(self) -> list[str]:
        """The components this one is computed from (none for a leaf)."""
        return []


class LeafComponent(_Component):
    """A component computed from the item's response, or from the `part` of it the spec names (rewards/parts.py):
    a reward model on the reasoning, a verifier on the answer."""

    part: Part = "response"

    def read(self, response: str) -> str:
        return read(response, self.part)


class ModelComponent(LeafComponent):
    """A served reward model's raw score, fetched by the server under the component's name. Without `model`, the
    server's default model: the server resolves it (a copy with `model` set) before check_spec and compose."""

    kind: Literal["model"]
    model: str | None = Field(None, min_length=1)
    # A process reward model's score is the logit of one reduction of its step scores (bundle/steps.py).
    step_aggregate: StepAggregate | None = Field(None, description="a PRM: min (when omitted), last, product, mean")
    step_separator: str | None = Field(
        None, min_length=1, description="a PRM: what ends each step of the response; its step token when omitted"
    )


class JudgeComponent(LeafComponent):
    """The LLM judge's absolute score on [0, 1], fetched by the server under the component's name."""

    kind: Literal["judge"]
    constitution: str | None = None
    principles: list[str] | None = Field(None, min_length=1)


class GroupJudgeComponent(LeafComponent):
    """The LLM judge comparing the responses of each group (the items sharing a `group` id: GRPO's responses to one
    prompt), each pair in both orders, and one reward per response from those comparisons (rewards/group_compare.py):
    `bradley_terry` strengths (logit scale, mean 0 per group) or the `win_rate` (on [0, 1]). `pairs`: every pair, or
    `circular` (each response against the next: n judge calls for n responses). The share of each response's
    comparisons whose two orders picked different responses comes back as the extra `<name>.inconsistent`."""

    kind: Literal["group_judge"]
    constitution: str | None = None
    principles: list[str] | None = Field(None, min_length=1)
    pairs: PairStrategy = "all_pairs"
    reward: GroupReward = "bradley_terry"


class RuleComponent(LeafComponent):
    """Computed from the item itself: the length of the response (or of its `part`) in words (str.split) or
    characters."""

    kind: Literal["rule"]
    rule: Literal["length"]
    unit: Literal["words", "chars"] = "words"


class VerifierComponent(LeafComponent):
    """A verifier's score per item (verifiers/): 1 right, 0 wrong, or a share (f1), from the item's response and its
    `label`, computed by the server in its verifier pool. `options` are the verifier's own rules (for `format`,
    which format). Items whose `data_source` is not in `data_sources` (when given) are not verified: they get
    `otherwise` and the status `skipped`. A failure (no answer found; a timeout or an error) gets `fallback` and, as
    `on_no_answer` and `on_error` say, only that (`fallback`), that and the item's mask (`mask`), or fails the
    request (`fail`)."""

    kind: Literal["verifier"]
    verifier: VerifierName
    options: dict[str, Any] = Field(default_factory=dict)
    data_sources: list[str] | None = Field(None, min_length=1)
    otherwise: float = 0.0
    on_no_answer: Literal["fallback", "mask", "fail"] = "fallback"
    on_error: Literal["fallback", "mask", "fail"] = "mask"
    fallback: float = 0.0

    _rules: Rules | None = PrivateAttr(None)

    @model_validator(mode="after")
    def known_rules(self) -> VerifierComponent:
        try:
            self._rules = VERIFIERS[self.verifier].rules(self.options)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(options)'}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"options of the {self.verifier} verifier: {problems}") from None
        return self

    @property
    def rules(self) -> Rules:
        assert self._rules is not None  # set by the validator
        return self._rules

    def routed(self, data_source: str | None) -> bool:
        return self.data_sources is None or data_source in self.data_sources


class EnsembleComponent(_Component):
    """mean - k * std over the members per item (population std, reported as the extra `<name>.std`)."""

    kind: Literal["ensemble"]
    members: list[str] = Field(min_length=2)
    k: float = Field(1.0, ge=0)

    @property
    def inputs(self) -> list[str]:
        return list(self.members)


class Llama2Component(_Component):
    """Llama 2's gate: the safety value where the prompt is flagged unsafe or safety < threshold, else helpfulness.

    Both inputs are used after their own transforms, so `threshold` is on the safety component's transformed scale.
    """

    kind: Literal["llama2"]
    safety: str
    helpfulness: str
    threshold: float

    @property
    def inputs(self) -> list[str]:
        return [self.safety, self.helpfulness]


ComponentSpec = Annotated[
    ModelComponent
    | JudgeComponent
    | GroupJudgeComponent
    | RuleComponent
    | VerifierComponent
    | EnsembleComponent
    | Llama2Component,
    Field(discriminator="kind"),
]


class RewardTerm(BaseModel):
    # Not _Strict: a non-finite weight is reported by the spec's validator, with every other problem at once.
    model_config = ConfigDict(extra="forbid")

    component: str
    weight: float


# -- the spec -----------------------------------------------------------------------------------------------------


class RewardSpec(_Strict):
    name: str
    version: str = Field(min_length=1)
    description: str = ""
    components: list[ComponentSpec] = Field(min_length=1)
    reward: list[RewardTerm]
    transforms: list[Transform] = Field(default_factory=list)

    _source: str | None = PrivateAttr(None)

    @field_validator("name")
    @classmethod
    def slug(cls, value: str) -> str:
        return _check_name(value)

    @field_validator("version", mode="before")
    @classmethod
    def version_text(cls, value: Any) -> Any:
        # `version: 1` in YAML is an int; a version is a label, so take it as written.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def consistent(self) -> RewardSpec:
        problems = _problems(self)
        if problems:
            raise _Problems(problems)
        return self

    @property
    def source(self) -> str:
        """The file the spec was loaded from, or a description of where it came from."""
        return self._source or f"spec {self.name!r}"

    def component(self, name: str) -> ComponentSpec:
        for c in self.components:
            if c.name == name:
                return c
        raise NotFound(f"spec {self.name!r} has no component {name!r}; it has {[c.name for c in self.components]}")


def _unknown(name: str, known: Collection[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown component {name!r}{hint}"


def _problems(spec: RewardSpec) -> list[str]:
    """Every semantic problem in a structurally valid spec, in a stable order."""
    problems: list[str] = []
    names = [c.name for c in spec.components]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        problems.append(f"duplicate component names: {repeated}")
    known = set(names)

    for c in spec.components:
        if isinstance(c, EnsembleComponent):
            for m in c.members:
                if m not in known:
                    problems.append(f"component {c.name!r}: members: {_unknown(m, known)}")
            twice = sorted({m for m in c.members if c.members.count(m) > 1})
            if twice:
                problems.append(f"component {c.name!r}: members repeat: {twice}")
        elif isinstance(c, Llama2Component):
            for field in ("safety", "helpfulness"):
                ref = getattr(c, field)
                if ref not in known:
                    problems.append(f"component {c.name!r}: {field}: {_unknown(ref, known)}")
        if c.kind != "model" and any(isinstance(t, Normalize) for t in c.transforms):
            problems.append(
                f"component {c.name!r}: normalize is only valid on model components (this one is {c.kind}); "
                "use running_norm or whiten"
            )

    if not spec.reward:
        problems.append("reward: empty; it needs at least one {component, weight}")
    listed: list[str] = []
    for i, term in enumerate(spec.reward):
        if term.component not in known:
            problems.append(f"reward[{i}]: {_unknown(term.component, known)}")
        if not math.isfinite(term.weight):
            problems.append(f"reward[{i}] ({term.component!r}): weight must be a finite number, got {term.weight}")
        if term.component in listed:
            problems.append(f"reward[{i}]: component {term.component!r} is listed twice; add the weights instead")
        listed.append(term.component)
    if any(isinstance(t, Normalize) for t in spec.transforms):
        problems.append("transforms (on the total): normalize is only valid on model components")

    problems += [f"cycle among components: {' -> '.join(cycle)}" for cycle in _cycles(spec)]
    return problems


def _cycles(spec: RewardSpec) -> list[list[str]]:
    """Each cycle the depth-first search meets (once per set of components), written from its first-declared
    member back to itself."""
    edges = {c.name: list(c.inputs) for c in spec.components}
    order = {c.name: i for i, c in enumerate(spec.components)}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in edges.get(node, []):
            if nxt not in edges:
                continue  # an unknown reference, reported on its own
            if state.get(nxt) == 1:
                loop = path[path.index(nxt) :]
                key = frozenset(loop)
                if key not in seen:
                    seen.add(key)
                    start = min(range(len(loop)), key=lambda i: order[loop[i]])
                    loop = loop[start:] + loop[:start]
                    found.append([*loop, loop[0]])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for c in spec.components:
        if c.name not in state:
            visit(c.name)
    return found


# -- order ----------------------------------------------------------------------------------------------------------


def topological_order(spec: RewardSpec) -> list[ComponentSpec]:
    """Every component, each after the components it is computed from; declaration order breaks ties."""
    by_name = {c.name: c for c in spec.components}
    done: set[str] = set()
    out: list[ComponentSpec] = []

    def visit(c: ComponentSpec) -> None:
        if c.name in done:
            return
        done.add(c.name)  # a validated spec has no cycles, so marking on entry is enough
        for name in c.inputs:
            visit(by_name[name])
        out.append(c)

    for c in spec.components:
        visit(c)
    return out


def leaves(spec: RewardSpec) -> list[LeafComponent]:
    """The model, judge, rule and verifier components, in dependency order. The server fetches `model`, `judge` and
    `verifier` ones and passes them to compose() keyed by component name; compose computes `rule` ones itself."""
    return [c for c in topological_order(spec) if isinstance(c, LeafComponent)]


# -- loading --------------------------------------------------------------------------------------------------------


def _where(loc: tuple[Any, ...], data: Any) -> str:
    """A pydantic location as a reader would name it: `components[2] 'safety'.principles`; pydantic's own path
    also holds the discriminator's tag (components.2.judge.principles), which the file does not."""
    text = ""
    node = data
    tag = None  # after a list index, pydantic names the union member (the item's kind) before its fields
    for step in loc:
        if isinstance(step, int):
            node = node[step] if isinstance(node, list) and 0 <= step < len(node) else None
            text += f"[{step}]"
            if isinstance(node, dict) and isinstance(node.get("name"), str):
                text += f" {node['name']!r}"
            tag = node.get("kind") if isinstance(node, dict) else None
            continue
        if tag is not None and step == tag:
            tag = None
            continue
        tag = None
        node = node.get(step) if isinstance(node, dict) else None
        text += f".{step}" if text else str(step)
    return text


def parse_spec(data: Any, source: str = "<spec>") -> RewardSpec:
    """Validate a mapping as a spec, raising SpecError with every problem found."""
    if not isinstance(data, dict):
        raise SpecError(source, ["a reward spec is a YAML mapping (name, version, components, reward, transforms)"])
    try:
        spec = RewardSpec.model_validate(data)
    except ValidationError as exc:
        problems: list[str] = []
        for e in exc.errors():
            error = (e.get("ctx") or {}).get("error")
            if isinstance(error, _Problems):
                problems += error.problems
                continue
            where = _where(tuple(e["loc"]), data)
            msg = e["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {msg}" if where else msg)
        raise SpecError(source, problems) from exc
    spec._source = source
    return spec


def load_spec(path: Path) -> RewardSpec:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(str(path), [f"cannot read: {exc}"]) from exc
    return parse_spec(data, str(path))


def check_spec(
    spec: RewardSpec,
    served_models: Collection[str],
    judge_available: bool,
    normalization: Mapping[str, tuple[float, float] | None],
    *,
    constitutions: Mapping[str, Collection[str]] | None = None,
    sandbox_missing: str | None = None,
    process_models: Collection[str] = (),
) -> None:
    """Raise SpecError unless this server can compute the spec: every model served, a judge where one is needed,
    stored statistics (keyed by served model name) wherever `normalize` is used, step options only on the served
    `process_models`. With `constitutions` (name -> principle names), judge components' constitutions and principles
    are checked too."""
    problems: list[str] = []
    for c in spec.components:
        if isinstance(c, ModelComponent):
            if c.model is None:
                problems.append(f"component {c.name!r}: no model named; resolve it to the server's default first")
            elif c.model not in served_models:
                problems.append(
                    f"component {c.name!r}: model {c.model!r} is not served; served: {sorted(served_models)}"
                )
            elif (c.step_aggregate or c.step_separator) and c.model not in process_models:
                problems.append(
                    f"component {c.name!r}: step_aggregate and step_separator are for process reward models, and "
                    f"{c.model!r} scores whole responses"
                )
            elif any(isinstance(t, Normalize) for t in c.transforms):
                stats = normalization.get(c.model)
                if stats is None:
                    problems.append(
                        f"component {c.name!r}: normalize needs model {c.model!r}'s stored mean/std, and its bundle "
                        "has none; use running_norm or whiten"
                    )
                elif not (math.isfinite(stats[0]) and math.isfinite(stats[1]) and stats[1] > 0):
                    problems.append(f"component {c.name!r}: model {c.model!r}'s stored mean/std {stats} are unusable")
        elif isinstance(c, VerifierComponent) and c.verifier == "code" and sandbox_missing is not None:
            problems.append(f"component {c.name!r}: the code verifier needs the sandbox, and {sandbox_missing}")
        elif isinstance(c, JudgeComponent | GroupJudgeComponent):
            if not judge_available:
                problems.append(f"component {c.name!r}: a judge component, and this server has no judge")
            elif constitutions is not None:
                if c.constitution is not None and c.constitution not in constitutions:
                    problems.append(
                        f"component {c.name!r}: unknown constitution {c.constitution!r}; known: {sorted(constitutions)}"
                    )
                elif c.principles:
                    have = constitutions.get(c.constitution or "default")
                    if have is not None:
                        missing = [p for p in c.principles if p not in have]
                        if missing:
                            problems.append(
                                f"component {c.name!r}: constitution {c.constitution or 'default'!r} has no "
                                f"principles {missing}; it has {sorted(have)}"
                            )
    if problems:
        raise SpecError(spec.source, problems)


class SpecLibrary:
    """The built-in specs plus every *.yaml in the folders (or files) given; a later one wins on a name."""

    def __init__(self, folders: Sequence[Path] | None = None) -> None:
        self.specs: dict[str, RewardSpec] = {}
        self.sources: dict[str, Path] = {}
        for folder in [BUILTIN, *(Path(f) for f in folders or [])]:
            if folder.is_file():
                files = [folder]
            elif folder.is_dir():
                files = sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml"))
            else:
                raise SpecError(str(folder), ["no such file or folder"])
            if not files:
                raise SpecError(str(folder), ["no reward spec files (*.yaml) there"])
            for file in files:
                spec = load_spec(file)
                self.specs[spec.name] = spec
                self.sources[spec.name] = file

    @property
    def names(self) -> list[str]:
        return sorted(self.specs)

    def get(self, name: str | None = None) -> RewardSpec:
        key = name or "default"
        if key not in self.specs:
            raise NotFound(f"no reward spec named {key!r}; known: {self.names}")
        return self.specs[key]

    check = staticmethod(check_spec)
