"""Judge verdicts per second: the local backend (SmolLM2-135M in process) and the same model behind a real
OpenAI-compatible server (`transformers serve`), each with a cold and a warm verdict cache, in one run.

The workload is RLAIF labelling: real pairs from ../shared/data/preferences/pandalm.jsonl, judged pairwise with one
sampled principle per pair (both orders, so two judge calls per verdict), then the same pairs again (all cache
hits). `transformers serve` returns no log-probabilities, so through it the judge reads the letter from a short
reply; a reply naming neither letter counts as a failed verdict.

    python bench/judge_throughput.py --pairs 24
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from arbiter.judge.backends.base import JudgeBackend
    from arbiter.judge.judging import Judge

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.judge_server import transformers_serve  # noqa: E402  (the launcher the tests use)

PANDALM = ROOT.parent / "shared" / "data" / "preferences" / "pandalm.jsonl"


def pairs(count: int) -> list[dict[str, object]]:
    from arbiter.data.load import load_source
    from arbiter.data.sources import SourceSpec

    groups, _ = load_source(SourceSpec(path=str(PANDALM)))
    return [{"prompt": g.prompt, "response_a": g.responses[0], "response_b": g.responses[1]} for g in groups[:count]]


async def one_pass(judge: Judge, items: list[dict[str, object]]) -> dict[str, float]:
    from arbiter.clients.protocol import JudgeRequest
    from arbiter.judge.judging import JudgeParseError

    async def one(item: dict[str, object]) -> bool:
        request = JudgeRequest(mode="pairwise", sampling="sample", items=[item])
        try:
            await judge.judge(request)
        except JudgeParseError:
            return False
        return True

    started = time.perf_counter()
    done = await asyncio.gather(*(one(item) for item in items))
    seconds = time.perf_counter() - started
    return {"verdicts_per_s": len(items) / seconds, "seconds": seconds, "failed": float(done.count(False))}


def measure(backend: JudgeBackend, items: list[dict[str, object]]) -> dict[str, dict[str, float]]:
    from arbiter.judge.cache import VerdictCache
    from arbiter.judge.constitution import ConstitutionLibrary
    from arbiter.judge.judging import Judge

    judge = Judge(backend, ConstitutionLibrary(), VerdictCache())

    async def both() -> dict[str, dict[str, float]]:
        await one_pass(judge, items[:1])  # load the model / open the connection outside the clock
        judge.cache = VerdictCache()
        cold = await one_pass(judge, items)
        warm = await one_pass(judge, items)
        await backend.aclose()
        return {"cold cache": cold, "warm cache": warm}

    return asyncio.run(both())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=24)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "judge_throughput.json")
    args = parser.parse_args()
    from arbiter.judge.backends.local import LocalBackend
    from arbiter.judge.backends.openai_compat import OpenAIBackend

    items = pairs(args.pairs)
    results = {"local (in process)": measure(LocalBackend("smollm2"), items)}
    logs = args.out.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with transformers_serve(logs) as server:
        results["openai-compatible (transformers serve)"] = measure(OpenAIBackend(server.base_url, server.model), items)
    report(results, len(items))
    args.out.write_text(json.dumps(results, indent=2))


def report(results: dict[str, dict[str, dict[str, float]]], count: int) -> None:
    from arbiter.text_table import text_table

    rows = [("backend", "cache", "verdicts/s", "seconds", "failed")]
    for backend, passes in results.items():
        for cache, r in passes.items():
            rows.append((backend, cache, f"{r['verdicts_per_s']:.2f}", f"{r['seconds']:.1f}", f"{r['failed']:.0f}"))
    print(f"{count} pandalm pairs, pairwise, one sampled principle, both orders")
    print(text_table(rows))


if __name__ == "__main__":
    main()
