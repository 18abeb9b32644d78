"""A bounded load test: 64 concurrent clients for 60 s on 127.0.0.1 against one `arbiter serve`, on a mix of routes
with real texts from ../shared/data/preferences:
  40% score (1-8 items)  20% compare (1-4 pairs)  10% rank (3 responses)  10% reward (the default spec)
  10% models  10% annotation (next task, then submit)
Each client sends, waits for the answer, sends the next (a closed loop). Reported per route and in all: requests,
requests/s, p50/p99 latency and the status codes; the run fails (exit 1) on any 5xx or connection error.

    python bench/load_test.py --bundle bundles/default --clients 64 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from tempfile import TemporaryDirectory

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from arbiter.annotation.store import AnnotationStore  # noqa: E402
from tests.server import running_server  # noqa: E402

PREFERENCES = ROOT.parent / "shared" / "data" / "preferences" / "hh_rlhf_harmless.jsonl"
MIX = [("score", 40), ("compare", 20), ("rank", 10), ("reward", 10), ("models", 10), ("annotate", 10)]


def summary(latencies: list[float], statuses: Counter[str], seconds: float) -> dict[str, object]:
    return {
        "requests": len(latencies),
        "per_s": len(latencies) / seconds,
        "p50_ms": 1e3 * statistics.median(latencies) if latencies else None,
        "p99_ms": 1e3 * float(np.percentile(latencies, 99)) if latencies else None,
        "statuses": dict(statuses),
    }


async def run(url: str, keys: list[str], pairs: list[dict], clients: int, seconds: float) -> dict[str, dict]:
    latencies: dict[str, list[float]] = defaultdict(list)
    statuses: dict[str, Counter[str]] = defaultdict(Counter)
    routes, weights = zip(*MIX, strict=True)
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(number: int, http: httpx.AsyncClient) -> None:
        rng = random.Random(number)
        annotator = {"Authorization": f"Bearer {keys[number % len(keys)]}"}
        while time.monotonic() < deadline:
            route = rng.choices(routes, weights)[0]
            picked = [rng.choice(pairs) for _ in range(8)]
            started = time.perf_counter()
            try:
                if route == "score":
                    items = [{"prompt": p["prompt"], "response": p["chosen"]} for p in picked[: rng.randint(1, 8)]]
                    r = await http.post("/v1/score", json={"items": items})
                elif route == "compare":
                    batch = [
                        {"prompt": p["prompt"], "response_a": p["chosen"], "response_b": p["rejected"]}
                        for p in picked[: rng.randint(1, 4)]
                    ]
                    r = await http.post("/v1/compare", json={"pairs": batch})
                elif route == "rank":
                    p = picked[0]
                    body = {"prompt": p["prompt"], "responses": [p["chosen"], p["rejected"], picked[1]["chosen"]]}
                    r = await http.post("/v1/rank", json=body)
                elif route == "reward":
                    items = [{"prompt": p["prompt"], "response": p["chosen"]} for p in picked[:4]]
                    r = await http.post("/v1/reward", json={"items": items})
                elif route == "models":
                    r = await http.get("/v1/models")
                else:
                    r = await http.post("/v1/annotation/next", headers=annotator)
                    if r.status_code == 200:
                        view = r.json()
                        answer = {"choice": "A", "strength": "better"}
                        r = await http.post(
                            f"/v1/annotation/tasks/{view['task_id']}/annotations", headers=annotator, json=answer
                        )
                status = str(r.status_code)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            latencies[route].append(time.perf_counter() - started)
            statuses[route][status] += 1

    started = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        await asyncio.gather(*(client(i, http) for i in range(clients)))
    elapsed = time.monotonic() - started
    report = {route: summary(latencies[route], statuses[route], elapsed) for route in routes}
    every = [x for route in routes for x in latencies[route]]
    report["all"] = summary(every, sum(statuses.values(), Counter()), elapsed)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=ROOT / "bundles" / "default")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "load_test.json")
    args = parser.parse_args()
    pairs = [json.loads(line) for line in PREFERENCES.open()][:512]
    with TemporaryDirectory() as folder:
        db = f"sqlite:///{Path(folder) / 'annotations.sqlite'}"
        store = AnnotationStore.open(db)
        lead = store.authenticate(store.add_annotator("lead", "lead").key)
        keys = [store.add_annotator(f"a{i}").key for i in range(16)]
        tasks = [{"prompt": p["prompt"], "responses": [p["chosen"], p["rejected"]], "annotators": 3} for p in pairs]
        from arbiter.clients.annotation import TaskBatch

        store.create_tasks(TaskBatch(tasks=tasks), lead)
        store.close()
        flags = ["--bundles", str(args.bundle), "--annotation-db", db, "--judge-backend", "off", "--grpc-port", "0"]
        with running_server(Path(folder), *flags) as server:
            report = asyncio.run(run(server.url, keys, pairs, args.clients, args.seconds))
    print(f"{args.clients} clients, {args.seconds:g} s, one server on 127.0.0.1")
    print(f"{'route':10}{'requests':>10}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}  statuses")
    for route, row in report.items():
        p50, p99 = row["p50_ms"] or 0.0, row["p99_ms"] or 0.0
        print(f"{route:10}{row['requests']:>10}{row['per_s']:>9.1f}{p50:>9.1f}{p99:>9.1f}  {row['statuses']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"clients": args.clients, "seconds": args.seconds, **report}, indent=2))
    failed = {s: n for s, n in report["all"]["statuses"].items() if not s.isdigit() or s.startswith("5")}
    if failed:
        print(f"FAILED: {failed}")
        sys.exit(1)


if __name__ == "__main__":
    main()
