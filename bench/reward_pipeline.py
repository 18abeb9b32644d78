"""What a reward spec costs over a plain model call, and what a second model on the same server costs, in one run.

Two servers, up at once, on the same bundle (the benchmark's max-length-512 MiniLM unless --bundle names another):
`alone` serves it as rm1; `pair` serves it twice, as rm1 and rm2, so a second model means twice the inference and
nothing else. The same real texts from ../shared/data/preferences, 16 concurrent callers sending 8 items a request:
  alone  score              POST /v1/score on rm1
  alone  spec one           POST /v1/reward, spec `one`: rm1 normalized, minus a length penalty (the pipeline's cost)
  pair   score, mixed       POST /v1/score, requests alternating between rm1 and rm2 (two trainers, one server)
  pair   spec two           POST /v1/reward, spec `two`: an ensemble of rm1 and rm2 (mean - std), minus the penalty
Every call runs once per round, for --rounds rounds, each round starting one call later in the list (so no call
always follows the same one), after a pause; each ratio is the median of its rounds'.
"Model passes/s" counts a sequence once per model that scored it, so two models that share the cores at no loss
give the same model passes/s as one model alone (the serving issue's target: at least 0.9x).

    python bench/reward_pipeline.py [--bundle bundles/default] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.serve_throughput import (  # noqa: E402
    SETTLE_S,
    WARMUP_TEXTS,
    Body,
    drive,
    long_bundle,
    real_texts,
    score_items,
)
from tests.server import running_server  # noqa: E402

CLIENTS = 16
SPECS = {
    "one": """name: one
version: "1"
components:
  - {name: rm, kind: model, model: rm1, transforms: [{kind: normalize}]}
  - {name: words, kind: rule, rule: length, unit: words}
reward: [{component: rm, weight: 1.0}, {component: words, weight: -0.01}]
""",
    "two": """name: two
version: "1"
components:
  - {name: a, kind: model, model: rm1, transforms: [{kind: normalize}]}
  - {name: b, kind: model, model: rm2, transforms: [{kind: normalize}]}
  - {name: both, kind: ensemble, members: [a, b], k: 1.0}
  - {name: words, kind: rule, rule: length, unit: words}
reward: [{component: both, weight: 1.0}, {component: words, weight: -0.01}]
""",
}


def fixed(path: str, extra: dict[str, object]) -> Body:
    return lambda texts: (path, {**extra, "items": score_items(texts)})


def alternating(models: tuple[str, ...]) -> Body:
    """/v1/score requests that take turns between `models`, as several trainers sharing one server would send."""
    turns: Iterator[str] = itertools.cycle(models)
    return lambda texts: ("/v1/score", {"model": next(turns), "items": score_items(texts)})


# (server, call) -> (body, models that score each sequence)
CALLS: dict[tuple[str, str], tuple[Callable[[], Body], int]] = {
    ("alone", "score"): (lambda: fixed("/v1/score", {"model": "rm1"}), 1),
    ("alone", "spec one"): (lambda: fixed("/v1/reward", {"spec": "one"}), 1),
    ("pair", "score, mixed"): (lambda: alternating(("rm1", "rm2")), 1),
    ("pair", "spec two"): (lambda: fixed("/v1/reward", {"spec": "two"}), 2),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, help="default: the serving benchmark's max-length-512 bundle")
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "reward_pipeline.json")
    args = parser.parse_args()
    bundle = args.bundle or long_bundle()[0]
    texts = real_texts(args.texts)
    logs = args.out.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    served = {"alone": (("rm1", bundle),), "pair": (("rm1", bundle), ("rm2", bundle))}
    with tempfile.TemporaryDirectory() as folder, ExitStack() as stack:
        urls = {}
        for server, models in served.items():
            specs = Path(folder) / server
            specs.mkdir()
            for name in ("one",) if server == "alone" else ("one", "two"):
                (specs / f"{name}.yaml").write_text(SPECS[name])
            flags = [f for name, path in models for f in ("--bundles", f"{name}={path}")]
            flags += ["--reward-specs", str(specs), "--judge-backend", "off", "--reward-state-path", ""]
            urls[server] = stack.enter_context(running_server(logs, *flags)).url
        for (server, _), (make, _) in CALLS.items():  # untimed: sessions, caches and spec statistics warm up
            asyncio.run(drive(urls[server], texts[:WARMUP_TEXTS], CLIENTS, make()))
        rounds: list[dict[str, dict[str, float]]] = []
        for r in range(args.rounds):
            measured = {}
            calls = list(CALLS.items())
            for (server, call), (make, models) in calls[r % len(calls) :] + calls[: r % len(calls)]:
                time.sleep(SETTLE_S)
                run = asyncio.run(drive(urls[server], texts, CLIENTS, make()))
                measured[f"{server}: {call}"] = {**run, "model_passes_per_s": models * run["seq_per_s"]}
            rounds.append({f"{server}: {call}": measured[f"{server}: {call}"] for server, call in CALLS})
            line = ", ".join(f"{call} {run['seq_per_s']:.1f}" for call, run in measured.items())
            print(f"round {r + 1}/{args.rounds} (seq/s): {line}", flush=True)
    results = {"texts": len(texts), "clients": CLIENTS, "bundle": str(bundle), "rounds": rounds}
    report(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))


def report(results: dict[str, object]) -> None:
    from arbiter.text_table import text_table

    rounds = results["rounds"]
    assert isinstance(rounds, list)
    base = "alone: score"

    def median(call: str, key: str, over: str | None = None) -> float:
        values = [r[call][key] / (r[over][key] if over else 1.0) for r in rounds]
        return statistics.median(values)

    rows = [("server: call", "seq/s", "model passes/s", "p50 ms", "p99 ms", "passes vs one model alone")]
    for call in rounds[0]:
        rows.append((call, f"{median(call, 'seq_per_s'):.1f}", f"{median(call, 'model_passes_per_s'):.1f}",
                     f"{median(call, 'p50_ms'):.0f}", f"{median(call, 'p99_ms'):.0f}",
                     f"{median(call, 'model_passes_per_s', base):.3f}x"))  # fmt: skip
    print(f"{results['texts']} real texts, {results['clients']} concurrent callers, 8 items a request, "
          f"median of {len(rounds)} rounds (ratios: median of each round's ratio)")  # fmt: skip
    print(text_table(rows))


if __name__ == "__main__":
    main()
