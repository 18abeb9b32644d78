"""Verifiers against what users have without Arbiter, in one run on this machine.

  (a) math: the 4,000 shared GSM8K solutions (../shared/data/verifiable) through `/v1/reward` with the built-in
      `math` spec, in requests of 8 items (a GRPO group), at 1, 4 and 16 concurrent callers, each against a fresh
      server (Math-Verify caches what it parsed); against the baseline users have, Math-Verify's parse + verify in a
      plain loop in one process. Verifications/s, p50/p99 per request.
  (b) sandbox overhead: a trivial program run in the bubblewrap sandbox, one run at a time, against the same
      program run bare with `python3 -c`: p50 and p99 of each, and the difference.
  (c) HumanEval: the 164 canonical solutions checked through the code verifier at the sandbox's concurrency.

    python bench/verifiers.py --bundle bundles/default --out bench/results/verifiers.json

The server starts as root (the sandbox runs each program as a user of its own) with `--verifier-workers` as given.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from arbiter.text_table import text_table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.server import free_port, server_process  # noqa: E402  (the same launcher the tests use)

DATA = ROOT.parent / "shared" / "data" / "verifiable"
PER_REQUEST = 8
CALLERS = (1, 4, 16)


def gsm8k() -> list[tuple[str, str, str]]:
    rows = [json.loads(line) for line in (DATA / "gsm8k_model_solutions.jsonl").read_text().splitlines()]
    return [(r["question"], s["solution"], r["answer"]) for r in rows for s in r["solutions"]]


def in_process(items: list[tuple[str, str, str]]) -> dict[str, float]:
    import logging

    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    parse("1"), verify(parse("1"), parse("1"))  # imports and grammar loaded outside the timing
    start = time.perf_counter()
    for _, solution, answer in items:
        verify(parse(f"${answer}$"), parse(solution))
    seconds = time.perf_counter() - start
    return {"per_s": len(items) / seconds, "seconds": seconds}


async def through_server(url: str, items: list[tuple[str, str, str]], callers: int) -> dict[str, float]:
    batches = [items[i : i + PER_REQUEST] for i in range(0, len(items), PER_REQUEST)]
    queue: asyncio.Queue[list[tuple[str, str, str]]] = asyncio.Queue()
    for b in batches:
        queue.put_nowait(b)
    latencies: list[float] = []

    async def caller(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            batch = queue.get_nowait()
            body = {"spec": "math", "items": [{"prompt": q, "response": s, "label": a} for q, s, a in batch]}
            started = time.perf_counter()
            answer = await http.post("/v1/reward", json=body, timeout=60)
            latencies.append(time.perf_counter() - started)
            assert answer.status_code == 200, answer.text

    async with httpx.AsyncClient(base_url=url) as http:
        start = time.perf_counter()
        await asyncio.gather(*(caller(http) for _ in range(callers)))
        seconds = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {
        "per_s": len(items) / seconds,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def sandbox_overhead(runs: int) -> dict[str, float]:
    from arbiter.sandbox.bwrap import BubblewrapSandbox, find_python

    python = find_python()
    bare = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([python, "-c", "print(1)"], check=True, capture_output=True)
        bare.append(time.perf_counter() - started)
    sandbox = BubblewrapSandbox(slots=1)

    async def sandboxed() -> list[float]:
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            assert (await sandbox.run("print(1)")).passed
            times.append(time.perf_counter() - started)
        return times

    boxed = asyncio.run(sandboxed())
    p = {f"bare_p{q}_ms": float(np.percentile(bare, q) * 1000) for q in (50, 99)}
    p |= {f"sandbox_p{q}_ms": float(np.percentile(boxed, q) * 1000) for q in (50, 99)}
    p["overhead_p50_ms"] = p["sandbox_p50_ms"] - p["bare_p50_ms"]
    return p


def humaneval(slots: int) -> dict[str, float]:
    from arbiter.sandbox.bwrap import BubblewrapSandbox
    from arbiter.verifiers import code

    tasks = [json.loads(line) for line in (DATA / "humaneval.jsonl").read_text().splitlines()]
    sandbox, rules = BubblewrapSandbox(slots=slots), code.CodeRules(wall_s=30, cpu_s=20)

    async def all_tasks() -> list:
        return await asyncio.gather(
            *(
                code.check(
                    t["canonical_solution"], {k: t[k] for k in ("test", "entry_point", "prompt")}, rules, sandbox
                )
                for t in tasks
            )
        )

    start = time.perf_counter()
    verdicts = asyncio.run(all_tasks())
    seconds = time.perf_counter() - start
    return {"per_s": len(tasks) / seconds, "passed": sum(v.status == "ok" for v in verdicts), "tasks": len(tasks)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default="bundles/default")
    parser.add_argument("--verifier-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--sandbox-runs", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    items = gsm8k()
    lengths = [len(s) for _, s, _ in items]
    spread = f"{min(lengths)}/{int(statistics.median(lengths))}/{int(np.percentile(lengths, 90))}/{max(lengths)}"
    print(
        f"workload: {len(items)} GSM8K solutions in requests of {PER_REQUEST}; characters min/median/p90/max {spread}"
    )
    results: dict[str, object] = {"workload": {"items": len(items), "per_request": PER_REQUEST}}
    results["math_in_process"] = in_process(items)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "arbiter.cli", "serve", "--port", str(port), "--grpc-port", "0",
               "--bundles", args.bundle, "--judge-backend", "off", "--reward-state-path", "",
               "--verifier-workers", str(args.verifier_workers), "--annotation-db", ""]  # fmt: skip
    log = ROOT / "bench" / "results" / "logs" / "verifiers-server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    # Math-Verify caches what it parsed, per process: each caller count gets a fresh server that has seen none of
    # the workload (the warm-up starts its workers on answers of its own), as the in-process loop sees each once.
    warm_up = [("What is 2 + 2?", f"So the answer is {i}.", str(i)) for i in range(400)]
    for callers in CALLERS:
        with server_process(command, log, url + "/readyz"):
            asyncio.run(through_server(url, warm_up, 4))
            results[f"math_server_{callers}"] = asyncio.run(through_server(url, items, callers))
    results["sandbox"] = sandbox_overhead(args.sandbox_runs)
    results["humaneval"] = humaneval(slots=4)

    base = results["math_in_process"]["per_s"]  # type: ignore[index]
    rows = [["math", "verifications/s", "p50 ms", "p99 ms", "x in-process loop"]]
    rows.append(["in-process loop", f"{base:.0f}", "", "", "1.00"])
    for callers in CALLERS:
        r = results[f"math_server_{callers}"]
        assert isinstance(r, dict)
        rows.append([f"/v1/reward, {callers} callers", f"{r['per_s']:.0f}", f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}",
                     f"{r['per_s'] / base:.2f}"])  # fmt: skip
    print(text_table(rows))
    s = results["sandbox"]
    assert isinstance(s, dict)
    print(text_table([["trivial program", "p50 ms", "p99 ms"],
                      ["python3 -c (bare)", f"{s['bare_p50_ms']:.1f}", f"{s['bare_p99_ms']:.1f}"],
                      ["sandbox", f"{s['sandbox_p50_ms']:.1f}", f"{s['sandbox_p99_ms']:.1f}"],
                      ["overhead", f"{s['overhead_p50_ms']:.1f}", ""]]))  # fmt: skip
    h = results["humaneval"]
    assert isinstance(h, dict)
    print(f"HumanEval: {h['passed']}/{h['tasks']} canonical solutions pass, {h['per_s']:.1f} checks/s (4 slots)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
