"""Serving throughput: Arbiter over HTTP against a plain transformers loop, on the same model and texts.

One run, the same bundle (and its training checkpoint for the torch baseline), the same 1,024 real texts
from ../shared/data/preferences:
  (a) plain loop   - transformers + torch in process, batch 32, padding to the longest in the batch
  (c) arbiter      - `arbiter serve` over HTTP on 127.0.0.1, at 1 client and at 16 concurrent clients
                     sending batches of 8 (fp32, and int8 when the bundle has it)
It prints sequences/s, p50/p99 request latency, the server's peak memory and start-to-ready time, the ratio
to the baseline, and the share of the machine's fp32 roofline (GEMM peak measured here, FLOPs per text from
the model's shape and each text's token count).

    python bench/serve_throughput.py --bundle bundles/default --checkpoint runs/default/checkpoint
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from arbiter.training.text_table import text_table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.server import running_server  # noqa: E402  (the same launcher the tests use)

PREFERENCES = ROOT.parent / "shared" / "data" / "preferences"


def real_texts(count: int) -> list[tuple[object, str]]:
    """(prompt, response) pairs taken in turn from each shared file: chosen and rejected responses."""
    from arbiter.training.data import SourceSpec
    from arbiter.training.data.load import load_source

    per_file = [load_source(SourceSpec(path=str(f)))[0] for f in sorted(PREFERENCES.glob("*.jsonl"))]
    texts: list[tuple[object, str]] = []
    for row in range(max(len(g) for g in per_file)):
        for groups in per_file:
            if row < len(groups):
                texts.extend((groups[row].prompt, r) for r in groups[row].responses)
        if len(texts) >= count:
            return texts[:count]
    return texts


def gemm_peak_gflops() -> float:
    a = np.random.default_rng(0).standard_normal((2048, 2048), dtype=np.float32)
    a @ a
    best = 0.0
    for _ in range(5):
        start = time.perf_counter()
        a @ a
        best = max(best, 2 * 2048**3 / (time.perf_counter() - start) / 1e9)
    return best


def model_flops(model: object, lengths: list[int]) -> float:
    """Forward FLOPs: 2 x non-embedding weights per token, plus attention's two n^2 x d products per layer."""
    weights = sum(p.numel() for n, p in model.named_parameters() if "embed" not in n)  # type: ignore[attr-defined]
    config = model.backbone.config  # type: ignore[attr-defined]
    layers, hidden = config.num_hidden_layers, config.hidden_size
    return sum(2 * weights * n + 4 * layers * hidden * n * n for n in lengths)


def plain_loop(model: object, tokenizer: object, texts: list[tuple[object, str]], batch: int = 32) -> dict[str, float]:
    import torch

    from arbiter.bundle.render import pad_batch

    torch.set_grad_enabled(False)
    spec = model.spec  # type: ignore[attr-defined]
    builder = model.input_builder(tokenizer)  # type: ignore[attr-defined]
    latencies = []
    start = time.perf_counter()
    for b in range(0, len(texts), batch):
        t0 = time.perf_counter()
        chunk = texts[b : b + batch]
        ids = [builder.encode(p, r).ids for p, r in chunk]
        input_ids, mask = pad_batch(ids, spec.pad_token_id, spec.padding_side)
        model(torch.from_numpy(input_ids), torch.from_numpy(mask))
        latencies.append(time.perf_counter() - t0)
    seconds = time.perf_counter() - start
    return {
        "seq_per_s": len(texts) / seconds,
        "p50_ms": 1e3 * statistics.median(latencies),
        "p99_ms": 1e3 * float(np.percentile(latencies, 99)),
        "batch": batch,
    }


def arbiter_body(items: list[tuple[object, str]]) -> tuple[str, dict[str, object]]:
    return "/v1/score", {"items": [{"prompt": p, "response": r} for p, r in items]}


def openrlhf_body(items: list[tuple[object, str]]) -> tuple[str, dict[str, object]]:
    """serve_rm takes whole texts: the prompt rendered as Arbiter's plain template, then the response."""
    from arbiter.bundle.render import render_plain

    return "/get_reward", {"query": [render_plain(p) + " " + r for p, r in items]}


async def drive(
    url: str, texts: list[tuple[object, str]], clients: int, body: object = arbiter_body, per_request: int = 8
) -> dict[str, float]:
    requests = [texts[i : i + per_request] for i in range(0, len(texts), per_request)]
    queue: asyncio.Queue[list[tuple[object, str]]] = asyncio.Queue()
    for r in requests:
        queue.put_nowait(r)
    latencies: list[float] = []

    async def client(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            path, payload = body(queue.get_nowait())  # type: ignore[operator]
            t0 = time.perf_counter()
            response = await http.post(path, json=payload)
            latencies.append(time.perf_counter() - t0)
            response.raise_for_status()

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        path, payload = body(texts[:2])  # type: ignore[operator]
        await http.post(path, json=payload)
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        seconds = time.perf_counter() - start
    return {
        "seq_per_s": len(texts) / seconds,
        "p50_ms": 1e3 * statistics.median(latencies),
        "p99_ms": 1e3 * float(np.percentile(latencies, 99)),
    }


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def serve_arbiter(bundle: Path, texts: list[tuple[object, str]], precision: str, logs: Path) -> dict[str, object]:
    flags = ("--bundles", str(bundle), "--precision", precision)
    started = time.perf_counter()
    with running_server(logs, *flags) as server:
        ready_s = time.perf_counter() - started
        result: dict[str, object] = {"ready_s": ready_s}
        for clients in (1, 16):
            result[f"{clients}_clients"] = asyncio.run(drive(server.url, texts, clients))
        result["peak_rss_mb"] = peak_rss_mb(server.process.pid)
    return result


def openrlhf_model_dir(checkpoint: Path, out: Path) -> Path:
    """The same weights in OpenRLHF's reward-model layout: the backbone under its prefix plus `score.weight`.
    OpenRLHF's head has no bias and pools the last real token, so its numbers differ from Arbiter's; the work
    per text (the whole backbone) is the same, which is what a throughput comparison needs."""
    import shutil

    from safetensors.torch import load_file, save_file
    from transformers import AutoConfig, AutoModel

    backbone = checkpoint / "backbone"
    config = AutoConfig.from_pretrained(backbone)
    prefix = AutoModel._model_mapping[type(config)].base_model_prefix
    tensors = {f"{prefix}.{k}": v for k, v in load_file(str(backbone / "model.safetensors")).items()}
    tensors["score.weight"] = load_file(str(checkpoint / "head.safetensors"))["weight"]
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(backbone, out, ignore=shutil.ignore_patterns("model.safetensors"))
    save_file(tensors, str(out / "model.safetensors"))
    return out


def serve_openrlhf(checkpoint: Path, texts: list[tuple[object, str]], max_len: int, logs: Path) -> dict[str, object]:
    import subprocess

    from tests.server import free_port

    model_dir = openrlhf_model_dir(checkpoint, logs / "openrlhf-model")
    port = free_port()
    command = [sys.executable, str(ROOT / "bench" / "peers" / "serve_rm_cpu.py"),
               "--reward.model_name_or_path", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
               "--ds.attn_implementation", "sdpa", "--data.max_len", str(max_len)]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    with (logs / "serve_rm.log").open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError("serve_rm exited: " + (logs / "serve_rm.log").read_text()[-3000:])
            try:
                if httpx.post(url + "/get_reward", json={"query": ["ready?"]}, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        result: dict[str, object] = {"ready_s": time.perf_counter() - started}
        for clients in (1, 16):
            result[f"{clients}_clients"] = asyncio.run(drive(url, texts, clients, openrlhf_body))
        result["peak_rss_mb"] = peak_rss_mb(process.pid)
        return result
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=ROOT / "bundles" / "default")
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "runs" / "default" / "checkpoint")
    parser.add_argument("--texts", type=int, default=1024)
    parser.add_argument("--skip-serve-rm", action="store_true", help="leave OpenRLHF's serve_rm out")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serve_throughput.json")
    args = parser.parse_args()
    texts = real_texts(args.texts)
    from arbiter.bundle import load_bundle

    bundle = load_bundle(args.bundle)
    lengths = [len(bundle.input_builder().encode(p, r).ids) for p, r in texts]
    peak = gemm_peak_gflops()
    from arbiter.training.checkpoint import load_checkpoint

    model, tokenizer = load_checkpoint(args.checkpoint)
    flops_per_text = model_flops(model, lengths) / len(texts)
    results: dict[str, object] = {
        "texts": len(texts),
        "mean_tokens": float(np.mean(lengths)),
        "gemm_peak_gflops": peak,
        "gflop_per_text": flops_per_text / 1e9,
    }
    results["plain_loop"] = plain_loop(model, tokenizer, texts)
    logs = args.out.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    if not args.skip_serve_rm:
        results["openrlhf_serve_rm"] = serve_openrlhf(args.checkpoint, texts, bundle.manifest.model.max_length, logs)
    results["arbiter_fp32"] = serve_arbiter(args.bundle, texts, "fp32", logs)
    if bundle.has("model.int8.onnx"):
        results["arbiter_int8"] = serve_arbiter(args.bundle, texts, "int8", logs)
    report(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))


def report(results: dict[str, object]) -> None:
    loop = results["plain_loop"]
    peak, per_text = results["gemm_peak_gflops"], results["gflop_per_text"]
    print(
        f"{results['texts']} texts, {results['mean_tokens']:.0f} tokens on average, "
        f"{per_text:.2f} GFLOP per text, fp32 GEMM peak {peak:.0f} GFLOP/s"
    )
    header = (
        "system",
        "clients",
        "seq/s",
        "p50 ms",
        "p99 ms",
        "x loop",
        "x serve_rm",
        "roofline",
        "peak MB",
        "ready s",
    )
    rows = [
        header,
        (
            "plain transformers loop, batch 32",
            "-",
            f"{loop['seq_per_s']:.1f}",
            f"{loop['p50_ms']:.0f}",
            f"{loop['p99_ms']:.0f}",
            "1.00",
            "",
            f"{loop['seq_per_s'] * per_text / peak:.0%}",
            "",
            "",
        ),
    ]
    rm = results.get("openrlhf_serve_rm")
    for key in ("openrlhf_serve_rm", "arbiter_fp32", "arbiter_int8"):
        if key not in results:
            continue
        run = results[key]
        for clients in (1, 16):
            r = run[f"{clients}_clients"]
            vs_rm = f"{r['seq_per_s'] / rm[f'{clients}_clients']['seq_per_s']:.2f}" if rm else "n/a"
            rows.append(
                (
                    key,
                    str(clients),
                    f"{r['seq_per_s']:.1f}",
                    f"{r['p50_ms']:.0f}",
                    f"{r['p99_ms']:.0f}",
                    f"{r['seq_per_s'] / loop['seq_per_s']:.2f}",
                    vs_rm,
                    f"{r['seq_per_s'] * per_text / peak:.0%}",
                    f"{run['peak_rss_mb']:.0f}",
                    f"{run['ready_s']:.1f}",
                )
            )
    print(text_table(rows))


if __name__ == "__main__":
    main()
