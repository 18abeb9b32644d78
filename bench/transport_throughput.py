"""The ways into one `arbiter serve`: HTTP vs gRPC vs ScoreStream, raw and through Arbiter's client.

One server, the same 1,024 real texts from ../shared/data/preferences, 16 concurrent callers each sending
requests of 8 items and waiting for each answer before the next (so every row has the same concurrency):
  raw httpx         POST /v1/score with httpx.AsyncClient
  client http       AsyncRewardClient("http://...").score
  raw grpc          the generated grpc.aio stub, Score
  client grpc       AsyncRewardClient("grpc://...").score
  grpc stream       16 ScoreStream calls, one request in flight on each
It prints sequences/s and p50/p99 request latency per row, and the client's overhead against the raw call of
the same transport. Inference dominates with real texts on a small CPU, so a second round sends 2,048
one-item requests of a few tokens each: there the per-call cost of each path shows.

    python bench/transport_throughput.py --bundle bundles/default
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.serve_throughput import Texts, arbiter_body, real_texts  # noqa: E402
from tests.server import running_server  # noqa: E402

if TYPE_CHECKING:
    import grpc

    from arbiter.clients.v1 import reward_pb2 as pb

Items = Texts
CLIENTS = 16


def summary(latencies: list[float], texts: int, seconds: float) -> dict[str, float]:
    return {
        "seq_per_s": texts / seconds,
        "p50_ms": 1e3 * statistics.median(latencies),
        "p99_ms": 1e3 * float(np.percentile(latencies, 99)),
    }


async def closed_loop(texts: Items, send: Callable[[Items], Awaitable[None]], per_request: int) -> dict[str, float]:
    """CLIENTS callers share one queue of requests; each sends, waits for the answer, takes the next."""
    queue: asyncio.Queue[Items] = asyncio.Queue()
    for i in range(0, len(texts), per_request):
        queue.put_nowait(texts[i : i + per_request])
    latencies: list[float] = []

    async def caller() -> None:
        while not queue.empty():
            items = queue.get_nowait()
            t0 = time.perf_counter()
            await send(items)
            latencies.append(time.perf_counter() - t0)

    await send(texts[:2])  # connect and warm up outside the clock
    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(CLIENTS)))
    return summary(latencies, len(texts), time.perf_counter() - start)


async def raw_httpx(url: str, texts: Items, per_request: int) -> dict[str, float]:
    import httpx

    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:

        async def send(items: Items) -> None:
            path, body = arbiter_body(items)
            (await http.post(path, json=body)).raise_for_status()

        return await closed_loop(texts, send, per_request)


async def with_client(url: str, texts: Items, per_request: int) -> dict[str, float]:
    from arbiter.clients import AsyncRewardClient

    async with AsyncRewardClient(url, timeout=120, max_concurrency=CLIENTS) as client:

        async def send(items: Items) -> None:
            await client.score([p for p, _ in items], [r for _, r in items])

        return await closed_loop(texts, send, per_request)


def _request(items: Items) -> pb.ScoreRequest:
    from arbiter.clients import grpc_codec
    from arbiter.clients import protocol as wire

    _, body = arbiter_body(items)
    from arbiter.clients.v1 import reward_pb2 as pb

    return grpc_codec.to_proto(wire.ScoreRequest.model_validate(body), pb.ScoreRequest)


async def raw_grpc(target: str, texts: Items, per_request: int) -> dict[str, float]:
    import grpc

    from arbiter.clients.v1 import reward_pb2_grpc

    async with grpc.aio.insecure_channel(target) as channel:
        stub = reward_pb2_grpc.RewardServiceStub(channel)

        async def send(items: Items) -> None:
            await stub.Score(_request(items), timeout=120)

        return await closed_loop(texts, send, per_request)


async def grpc_stream(target: str, texts: Items, per_request: int) -> dict[str, float]:
    """One ScoreStream per caller; each keeps one request in flight, as the other rows do."""
    import grpc

    from arbiter.clients.v1 import reward_pb2 as pb
    from arbiter.clients.v1 import reward_pb2_grpc

    async with grpc.aio.insecure_channel(target) as channel:
        stub = reward_pb2_grpc.RewardServiceStub(channel)
        streams = [stub.ScoreStream() for _ in range(CLIENTS)]
        free: asyncio.Queue[grpc.aio.StreamStreamCall[pb.ScoreStreamRequest, pb.ScoreStreamResponse]]
        free = asyncio.Queue()
        for stream in streams:
            free.put_nowait(stream)

        async def send(items: Items) -> None:
            stream = await free.get()
            await stream.write(pb.ScoreStreamRequest(id="r", request=_request(items)))
            answer = await stream.read()
            free.put_nowait(stream)
            if not isinstance(answer, pb.ScoreStreamResponse):  # grpc.aio.EOF: the server closed the stream
                raise RuntimeError("ScoreStream ended before its answer")
            if answer.HasField("error"):
                raise RuntimeError(answer.error.message)

        result = await closed_loop(texts, send, per_request)
        for stream in streams:
            await stream.done_writing()
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=ROOT / "bundles" / "default")
    parser.add_argument("--texts", type=int, default=1024)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "transport_throughput.json")
    args = parser.parse_args()
    rounds = {
        "real texts, 8 per request": (real_texts(args.texts), 8),
        "short texts, 1 per request": ([("2+2?", f"{i}") for i in range(2 * args.texts)], 1),
    }
    logs = args.out.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, dict[str, float]]] = {}
    with running_server(logs, "--bundles", str(args.bundle)) as server:
        target = server.grpc_target
        for label, (texts, per) in rounds.items():
            runs = {
                "raw httpx": lambda t=texts, n=per: raw_httpx(server.url, t, n),
                "client http": lambda t=texts, n=per: with_client(server.url, t, n),
                "raw grpc": lambda t=texts, n=per: raw_grpc(target, t, n),
                "client grpc": lambda t=texts, n=per: with_client(server.grpc_url, t, n),
                "grpc stream": lambda t=texts, n=per: grpc_stream(target, t, n),
            }
            results[label] = {}
            for name, run in runs.items():
                results[label][name] = asyncio.run(run())
                print(f"{label} / {name}: {results[label][name]['seq_per_s']:.1f} seq/s", flush=True)
    for label, result in results.items():
        report(label, result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))


def report(label: str, results: dict[str, dict[str, float]]) -> None:
    from arbiter.text_table import text_table

    raw_of = {"client http": "raw httpx", "client grpc": "raw grpc", "grpc stream": "raw grpc"}
    rows = [("path", "seq/s", "p50 ms", "p99 ms", "vs raw same transport")]
    for name, r in results.items():
        base = raw_of.get(name)
        ratio = f"{r['seq_per_s'] / results[base]['seq_per_s']:.3f}x" if base else ""
        rows.append((name, f"{r['seq_per_s']:.1f}", f"{r['p50_ms']:.0f}", f"{r['p99_ms']:.0f}", ratio))
    print(f"{label}, {CLIENTS} concurrent callers")
    print(text_table(rows))


if __name__ == "__main__":
    main()
