"""What a reward spec costs over a plain model call, in one run on one server.

The same 1,024 real texts from ../shared/data/preferences, 16 concurrent callers sending 8 items per request:
  score, one model     POST /v1/score on model rm1
  spec, one model      POST /v1/reward, spec `one`: rm1 normalized, minus a length penalty (the pipeline's own cost)
  spec, two models     POST /v1/reward, spec `two`: an ensemble of rm1 and rm2 (mean - std), minus the penalty
rm1 and rm2 are the same bundle served twice, so `two` does twice the inference; its ratio shows what running the
two models side by side costs beyond that.

    python bench/reward_pipeline.py --bundle bundles/default
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.serve_throughput import drive, real_texts  # noqa: E402
from tests.server import running_server  # noqa: E402

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


def body(path: str, extra: dict[str, object]) -> Callable[[list[tuple[object, str]]], tuple[str, dict[str, object]]]:
    def make(items: list[tuple[object, str]]) -> tuple[str, dict[str, object]]:
        return path, {**extra, "items": [{"prompt": p, "response": r} for p, r in items]}

    return make


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=ROOT / "bundles" / "default")
    parser.add_argument("--texts", type=int, default=1024)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "reward_pipeline.json")
    args = parser.parse_args()
    texts = real_texts(args.texts)
    logs = args.out.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        for name, text in SPECS.items():
            (Path(folder) / f"{name}.yaml").write_text(text)
        flags = ("--bundles", f"rm1={args.bundle}", "--bundles", f"rm2={args.bundle}", "--reward-specs", folder,
                 "--judge-backend", "off", "--reward-state-path", "")  # fmt: skip
        with running_server(logs, *flags) as server:
            runs = {
                "score, one model": body("/v1/score", {"model": "rm1"}),
                "spec, one model": body("/v1/reward", {"spec": "one"}),
                "spec, two models": body("/v1/reward", {"spec": "two"}),
            }
            results = {name: asyncio.run(drive(server.url, texts, 16, make)) for name, make in runs.items()}
    report(results)
    args.out.write_text(json.dumps(results, indent=2))


def report(results: dict[str, dict[str, float]]) -> None:
    from arbiter.text_table import text_table

    base = results["score, one model"]["seq_per_s"]
    rows = [("call", "seq/s", "p50 ms", "p99 ms", "vs /v1/score")]
    for name, r in results.items():
        ratio = f"{r['seq_per_s'] / base:.3f}x"
        rows.append((name, f"{r['seq_per_s']:.1f}", f"{r['p50_ms']:.0f}", f"{r['p99_ms']:.0f}", ratio))
    print("1,024 real texts, 16 concurrent callers, 8 items per request")
    print(text_table(rows))


if __name__ == "__main__":
    main()
