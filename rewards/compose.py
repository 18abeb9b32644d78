"""compose(): a spec plus the leaf scores the server fetched, to one reward per item.

Order of work: every component in topological order (leaf values, or the derived rule on the inputs' transformed
values, then the component's own transforms); the weighted sum of the `reward` terms; the spec's transforms on that
total. running_norm state is keyed by running_key(): spec name and version, the target, and the transform's
position, so a new spec version, or a reordered transform list, starts fresh statistics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from arbiter.rewards.running import RunningStats
from arbiter.rewards.spec import (
    EnsembleComponent,
    GroupJudgeComponent,
    JudgeComponent,
    Llama2Component,
    ModelComponent,
    RewardSpec,
    RuleComponent,
    VerifierComponent,
    topological_order,
)
from arbiter.rewards.transforms import TransformContext, apply_transforms

# The leaves whose values the server fetches (models, judges, verifiers) rather than compose computing them.
FETCHED = (ModelComponent, JudgeComponent, GroupJudgeComponent, VerifierComponent)


@dataclass
class ItemContext:
    prompt: str | list[dict]  # as given; not read by compose, kept for callers and rules that may need it
    response: str
    group: str | None = None  # items sharing a group id are normalized together by group_norm
    unsafe: bool | None = None  # the prompt is flagged unsafe: llama2 components take the safety value
    label: object = None  # the reference verifier components check the response against
    data_source: str | None = None  # verifier components may be routed by it


@dataclass
class RewardResult:
    rewards: np.ndarray  # (n,) the final reward per item
    components: dict[str, np.ndarray]  # every component's value after its own transforms (leaves and derived)
    raw: dict[str, np.ndarray]  # leaf values before transforms: as fetched (model, judge) or computed (rule)
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # "<ensemble>.std", "<llama2>.used_safety" (0/1)
    total_before_transforms: np.ndarray = field(default_factory=lambda: np.zeros(0))


def running_key(spec: RewardSpec, component: str | None = None) -> str:
    """The running-statistics key prefix for a component's transforms (None: the total's). Each running_norm
    appends "/<its position in the transform list>". Names cannot hold "/" or "@", so keys never collide;
    RunningStats.reset(f"{spec.name}@{spec.version}/") forgets a spec version's state."""
    base = f"{spec.name}@{spec.version}"
    return f"{base}/total" if component is None else f"{base}/component/{component}"


def _check_raw(spec: RewardSpec, raw: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    fetched = [c.name for c in spec.components if isinstance(c, FETCHED)]
    problems: list[str] = []
    missing = [name for name in fetched if name not in raw]
    if missing:
        problems.append(f"no scores for {missing}")
    unknown = sorted(set(raw) - set(fetched))
    if unknown:
        problems.append(f"scores for {unknown}, which are not model, judge or verifier components of the spec")
    out: dict[str, np.ndarray] = {}
    for name in fetched:
        if name not in raw:
            continue
        values = np.array(raw[name], dtype=np.float64)  # a copy: the result must not alias the caller's arrays
        if values.shape != (n,):
            problems.append(f"{name!r}: {values.shape} values for {n} items")
        elif not np.isfinite(values).all():
            problems.append(
                f"{name!r}: non-finite scores at items {np.flatnonzero(~np.isfinite(values))[:10].tolist()}"
            )
        else:
            out[name] = values
    if problems:
        raise ValueError(f"reward spec {spec.name!r}: " + "; ".join(problems))
    return out


def compose(
    spec: RewardSpec,
    raw: Mapping[str, np.ndarray],
    items: list[ItemContext],
    *,
    normalization: Mapping[str, tuple[float, float] | None],
    running: RunningStats,
    update: bool = True,
) -> RewardResult:
    """One reward per item. `raw`: the model, judge and verifier leaves' scores keyed by component name, (n,) each,
    finite.
    `normalization`: stored (mean, std) keyed by served model name, for `normalize`. `update=False` leaves the
    running statistics as they are (see transforms.running_norm). Raises ValueError on missing, misshapen or
    non-finite scores, and where group_norm meets an item without a group id."""
    n = len(items)
    fetched = _check_raw(spec, raw, n)
    words = np.fromiter((len(i.response.split()) for i in items), dtype=np.float64, count=n)
    groups = [i.group for i in items]
    unsafe = np.fromiter((bool(i.unsafe) for i in items), dtype=bool, count=n)

    def context(component: str | None, stats: tuple[float, float] | None = None) -> TransformContext:
        target = "the total" if component is None else f"component {component!r}"
        return TransformContext(target, running_key(spec, component), words, groups, running, stats, update)

    components: dict[str, np.ndarray] = {}
    leaves: dict[str, np.ndarray] = {}
    extras: dict[str, np.ndarray] = {}
    for c in topological_order(spec):
        stats = None
        if isinstance(c, FETCHED):
            values = fetched[c.name]
            leaves[c.name] = values
            stats = normalization.get(c.model) if isinstance(c, ModelComponent) and c.model is not None else None
        elif isinstance(c, RuleComponent):
            texts = [c.read(i.response) for i in items]
            values = np.fromiter((len(t.split()) if c.unit == "words" else len(t) for t in texts), np.float64, n)
            leaves[c.name] = values
        elif isinstance(c, EnsembleComponent):
            stacked = np.stack([components[m] for m in c.members])
            std = stacked.std(axis=0)  # population std over the members, per item
            values = stacked.mean(axis=0) - c.k * std
            extras[f"{c.name}.std"] = std
        elif isinstance(c, Llama2Component):
            safety, helpfulness = components[c.safety], components[c.helpfulness]
            use_safety = unsafe | (safety < c.threshold)
            values = np.where(use_safety, safety, helpfulness)
            extras[f"{c.name}.used_safety"] = use_safety.astype(np.float64)
        else:  # pragma: no cover - the discriminated union has no other kinds
            raise TypeError(f"unknown component {c!r}")
        components[c.name] = apply_transforms(c.transforms, values, context(c.name, stats))

    total = np.zeros(n, dtype=np.float64)
    for term in spec.reward:
        total = total + term.weight * components[term.component]
    rewards = apply_transforms(spec.transforms, total, context(None))
    return RewardResult(
        rewards=rewards, components=components, raw=leaves, extras=extras, total_before_transforms=total
    )
