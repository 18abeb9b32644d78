"""Serving throughput: Arbiter over HTTP against a plain transformers loop, on the same model and texts.

One run, the same bundle (and its training checkpoint for the torch baseline), the same 1,024 real texts
from ../shared/data/preferences, untruncated up to the bundle's max length:
  (a) plain loop   - transformers + torch in process, batch 32, padding to the longest in the batch
  (c) arbiter      - `arbiter serve` over HTTP on 127.0.0.1, at 1 client and at 16 concurrent clients
                     sending batches of 8 (fp32, and int8 when the bundle has it)
It prints sequences/s, p50/p99 request latency, the server's peak memory and start-to-ready time, the ratio
to the baseline, and the share of the machine's fp32 roofline (GEMM peak measured here, FLOPs per text from
the model's shape and each text's token count).

    python bench/serve_throughput.py                      # at RL's lengths: the benchmark's max-length-512 bundle
    python bench/serve_throughput.py --bundle bundles/default --checkpoint runs/default/checkpoint

Without --bundle it serves a MiniLM bundle at max length 512, built the first time (a short `arbiter train`: the
weights do not matter for speed) under bench/results/len512/.

Against another bundle of the same model in the same run (--baseline-bundle): the same flow as below, with this
checkout's code on both servers; for example the graph as exported against the one fused for ONNX Runtime:

    arbiter export bench/results/len512/run/checkpoint --out /tmp/unfused --no-fuse
    python bench/serve_throughput.py --only-arbiter --baseline-bundle /tmp/unfused --rounds 3

Against another version of Arbiter in the same run (--baseline-site): a folder with that version installed,

    pip wheel --no-deps --no-build-isolation -w /tmp/before-wheel /tmp/before   # a `git archive` of it
    pip install --no-deps --target /tmp/before-site /tmp/before-wheel/*.whl
    python bench/serve_throughput.py --only-arbiter --baseline-site /tmp/before-site --rounds 5

starts a second `arbiter serve` from that copy (same bundle, same flags; PYTHONPATH=DIR under `python -P`, and
the imported files are checked first), keeps both up, and scores the same requests on them in alternating
rounds (before, after, before, after, ...) at 1 and at 16 clients. The table gives each version's median over
the rounds (and the seq/s range) and the after/before ratios of those medians.
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
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import httpx
import numpy as np

from arbiter.text_table import text_table

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from arbiter.bundle.render import Prompt
    from arbiter.training.model import RewardModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.server import free_port, server_process  # noqa: E402  (the same launcher the tests use)

PREFERENCES = ROOT.parent / "shared" / "data" / "preferences"
CLIENTS = (1, 16)
PER_REQUEST = 8  # items per scoring request, for every system and round
WARMUP_TEXTS = 128  # an untimed pass per server and client count before the timed rounds
SETTLE_S = 1.0  # pause before each timed round (onnxruntime's idle threads spin for a while after a run)

Texts = list[tuple["Prompt", str]]
Body = Callable[[Texts], tuple[str, dict[str, object]]]  # a batch of texts -> (path, JSON body) of one request


class Server(TypedDict):
    url: str
    process: subprocess.Popen[bytes]
    ready_s: float


def real_texts(count: int) -> Texts:
    """(prompt, response) pairs taken in turn from each shared file: chosen and rejected responses."""
    from arbiter.data.load import load_source
    from arbiter.data.sources import SourceSpec

    per_file = [load_source(SourceSpec(path=str(f)))[0] for f in sorted(PREFERENCES.glob("*.jsonl"))]
    texts: Texts = []
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


def model_flops(model: RewardModel, lengths: list[int]) -> float:
    """Forward FLOPs: 2 x non-embedding weights per token, plus attention's two n^2 x d products per layer."""
    weights = sum(p.numel() for n, p in model.named_parameters() if "embed" not in n)
    config = model.backbone.config
    layers, hidden = config.num_hidden_layers, config.hidden_size
    return sum(2 * weights * n + 4 * layers * hidden * n * n for n in lengths)


def plain_loop(
    model: RewardModel, tokenizer: PreTrainedTokenizerBase, texts: Texts, batch: int = 32
) -> dict[str, float]:
    import torch

    from arbiter.bundle.render import pad_batch

    torch.set_grad_enabled(False)
    spec = model.spec
    builder = model.input_builder(tokenizer)
    latencies = []
    padded = real = 0
    start = time.perf_counter()
    for b in range(0, len(texts), batch):
        t0 = time.perf_counter()
        chunk = texts[b : b + batch]
        ids = [builder.encode(p, r).ids for p, r in chunk]
        input_ids, mask = pad_batch(ids, spec.pad_token_id, spec.padding_side)
        padded, real = padded + mask.size, real + int(mask.sum())
        model(torch.from_numpy(input_ids), torch.from_numpy(mask))
        latencies.append(time.perf_counter() - t0)
    seconds = time.perf_counter() - start
    return {
        "seq_per_s": len(texts) / seconds,
        "p50_ms": 1e3 * statistics.median(latencies),
        "p99_ms": 1e3 * float(np.percentile(latencies, 99)),
        "batch": batch,
        "padded_overhead": padded / real - 1,
    }


def in_process(bundle: Path, texts: Texts, precision: str, rounds: int = 3) -> dict[str, float]:
    """The ceiling a server can approach: the server's own runner and batcher in this process, every text in one
    call (sorted by length, cut under the server's default token budget); no HTTP, JSON or tokenizing is timed.
    The median of `rounds`, and the padded-token overhead of its batches."""
    from arbiter.bundle import load_bundle
    from arbiter.bundle.onnx_model import OnnxRewardModel
    from arbiter.service.runtime.batcher import Batcher, BatchStats
    from arbiter.service.settings import ServerSettings

    model = OnnxRewardModel.from_bundle(load_bundle(bundle), precision)
    sequences = [e.ids for e in model.builder.encode_many([p for p, _ in texts], [r for _, r in texts])]
    batches: list[BatchStats] = []

    class Observer:
        def observe_batch(self, stats: BatchStats) -> None:
            batches.append(stats)

        def observe_dropped(self, sequences: int) -> None:
            pass

    defaults = ServerSettings.model_fields
    tokens, size = defaults["max_batch_tokens"].default, defaults["max_batch_size"].default
    batcher = Batcher(model.run, tokens, size, 0.0, len(sequences), Observer(), "in-process")
    try:
        asyncio.run(batcher.score(sequences[:WARMUP_TEXTS]))
        seconds = []
        for _ in range(rounds):
            batches.clear()
            started = time.perf_counter()
            asyncio.run(batcher.score(sequences))
            seconds.append(time.perf_counter() - started)
    finally:
        batcher.close()
    padded, real = sum(b.padded_tokens for b in batches), sum(b.real_tokens for b in batches)
    return {"seq_per_s": len(texts) / statistics.median(seconds), "padded_overhead": padded / real - 1}


def arbiter_body(items: Texts) -> tuple[str, dict[str, object]]:
    return "/v1/score", {"items": [{"prompt": p, "response": r} for p, r in items]}


def openrlhf_body(items: Texts) -> tuple[str, dict[str, object]]:
    """serve_rm takes whole texts: the prompt rendered as Arbiter's plain template, then the response."""
    from arbiter.bundle.render import render_plain

    return "/get_reward", {"query": [render_plain(p) + " " + r for p, r in items]}


async def drive(
    url: str,
    texts: Texts,
    clients: int,
    body: Body = arbiter_body,
    per_request: int = PER_REQUEST,
) -> dict[str, float]:
    requests = [texts[i : i + per_request] for i in range(0, len(texts), per_request)]
    queue: asyncio.Queue[Texts] = asyncio.Queue()
    for r in requests:
        queue.put_nowait(r)
    latencies: list[float] = []

    async def client(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            path, payload = body(queue.get_nowait())
            t0 = time.perf_counter()
            response = await http.post(path, json=payload)
            latencies.append(time.perf_counter() - t0)
            response.raise_for_status()

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        path, payload = body(texts[:2])
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


# Which `arbiter` a server imports is decided by sys.path alone: `-P` keeps the working folder (which holds this
# checkout's arbiter/ folder) off its front, so PYTHONPATH=DIR comes before site-packages and the editable install's
# finder (last in sys.meta_path) is asked only for what DIR lacks; IMPORTS_CHECK makes sure nothing falls through.
SERVE_PYTHON = (sys.executable, "-P")
IMPORTS_CHECK = """
import json, sys
import arbiter.cli, arbiter.service.serve, arbiter.service.http.app, arbiter.service.runtime.runtime
files = {getattr(m, "__file__", None) for n, m in list(sys.modules.items()) if n.split(".")[0] == "arbiter"}
print(json.dumps(sorted(f for f in files if f)))
"""


def site_env(site: Path | None) -> dict[str, str]:
    """The environment that differs between the two servers: DIR first on PYTHONPATH for the baseline."""
    if site is None:
        return {}
    return {"PYTHONPATH": os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])}


def arbiter_code(site: Path | None) -> str:
    """Where `arbiter serve` under site's environment imports Arbiter from (same interpreter, flags and
    environment as the server); stops the run if any of its modules would come from elsewhere."""
    done = subprocess.run(
        [*SERVE_PYTHON, "-c", IMPORTS_CHECK],
        env={**os.environ, **site_env(site)},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"importing arbiter with {site_env(site) or 'this environment'} failed:\n{done.stderr}")
    home = (site or ROOT).resolve()
    files = [Path(f).resolve() for f in json.loads(done.stdout)]
    stray = [str(f) for f in files if not f.is_relative_to(home)]
    if stray or not files:
        raise SystemExit(f"arbiter serve would not run only the code under {home}: {stray or 'no modules'}")
    return f"{home} ({len(files)} modules checked)"


@contextmanager
def arbiter_server(logs: Path, flags: tuple[str, ...], site: Path | None, tag: str) -> Iterator[Server]:
    """`arbiter serve` as tests/server.py's running_server starts it, plus `-P` and the site's environment."""
    port, grpc_port = free_port(), free_port()
    command = [*SERVE_PYTHON, "-m", "arbiter.cli", "serve", "--port", str(port), "--grpc-port", str(grpc_port), *flags]
    url = f"http://127.0.0.1:{port}"
    env = {"ARBITER_ANNOTATION_DB": f"sqlite:///{logs / f'annotations-{tag}-{port}.sqlite'}", **site_env(site)}
    started = time.perf_counter()
    with server_process(command, logs / f"server-{tag}-{port}.log", url + "/readyz", timeout=180, env=env) as process:
        yield {"url": url, "process": process, "ready_s": time.perf_counter() - started}


def medians(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in rounds) for k in ("seq_per_s", "p50_ms", "p99_ms")}


def serve_arbiter(
    bundle: Path,
    texts: Texts,
    precision: str,
    logs: Path,
    rounds: int = 1,
    baseline: tuple[Path | None, Path] | None = None,
    imported: Path | None = None,
) -> dict[str, dict[str, object]]:
    """{"after": ..., "before": ... (with a baseline: (site, bundle), another version of the code or another
    bundle), "imported": ... (with an imported bundle, this checkout's code)}: all servers up at once, the timed
    rounds alternating between them at each client count; each one's "N_clients" is its median over the rounds."""
    versions: dict[str, tuple[Path | None, Path]] = {"after": (None, bundle)}
    if baseline is not None:
        versions = {"before": baseline, **versions}
    if imported is not None:
        versions["imported"] = (None, imported)
    results: dict[str, dict[str, object]] = {}
    with ExitStack() as stack:
        servers: dict[str, Server] = {}
        per_round: dict[str, dict[str, list[dict[str, float]]]] = {}  # each version's results["rounds"]
        for name, (site, served) in versions.items():
            code = arbiter_code(site)
            print(f"arbiter {precision} {name}: code from {code}, bundle {served}", flush=True)
            flags = ("--bundles", str(served), "--precision", precision)
            servers[name] = stack.enter_context(arbiter_server(logs, flags, site, f"{precision}-{name}"))
            per_round[name] = {}
            results[name] = {
                "code": f"{code}, bundle {served}",
                "ready_s": servers[name]["ready_s"],
                "rounds": per_round[name],
            }
        for clients in CLIENTS:
            for server in servers.values():
                asyncio.run(drive(server["url"], texts[:WARMUP_TEXTS], clients))
            timed: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
            for _ in range(rounds):
                for name, server in servers.items():
                    time.sleep(SETTLE_S)
                    timed[name].append(asyncio.run(drive(server["url"], texts, clients)))
            for name in servers:
                per_round[name][f"{clients}_clients"] = timed[name]
                results[name][f"{clients}_clients"] = medians(timed[name])
        for name, server in servers.items():
            results[name]["peak_rss_mb"] = peak_rss_mb(server["process"].pid)
    return results


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


def serve_openrlhf(checkpoint: Path, texts: Texts, max_len: int, logs: Path) -> dict[str, object]:
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


def trl_imported_bundle(native: Path, out: Path) -> Path:
    """The serving row of an imported model: MiniLM trained by TRL's RewardTrainer (a short run: the weights do not
    matter for speed) on the shared HH file, then `arbiter import`ed at the native bundle's max length."""
    from arbiter.bundle import load_bundle
    from arbiter.training.importing.importer import import_model
    from tests.reward_checkpoints import from_backbone, trl_run

    max_length = load_bundle(native).manifest.model.max_length
    bundle = out / f"bundle-len{max_length}"
    if (bundle / "manifest.json").is_file():
        return bundle
    rows = [json.loads(line) for line in (PREFERENCES / "hh_rlhf_harmless.jsonl").read_text().splitlines()[:32]]
    conversations = [(r["prompt"], text) for r in rows for text in (r["chosen"], r["rejected"])]
    model = trl_run(from_backbone("minilm", out / "backbone"), out / "trl", conversations, lora=False)
    return import_model(str(model), bundle, name="trl-imported", max_length=max_length, int8=False).path


LONG_RUN = ROOT / "bench" / "results" / "len512"


def recorded_checkpoint(bundle: Path) -> Path:
    """The training checkpoint that `arbiter export` recorded in the bundle's manifest."""
    from arbiter.bundle import load_bundle

    checkpoint = load_bundle(bundle).manifest.training.get("checkpoint")
    if not isinstance(checkpoint, str):
        raise SystemExit(f"{bundle}: the manifest names no training checkpoint; give --checkpoint or --only-arbiter")
    return Path(checkpoint)


def long_bundle(folder: Path = LONG_RUN, max_length: int = 512) -> tuple[Path, Path]:
    """(bundle, checkpoint) of MiniLM at `max_length`, trained for a few steps on the shared HH file if missing."""
    bundle, run = folder / "bundle", folder / "run"
    if not (bundle / "manifest.json").is_file():
        command = [sys.executable, "-m", "arbiter.cli", "train", "--data", str(PREFERENCES / "hh_rlhf_harmless.jsonl"),
                   "--max-length", str(max_length), "--freeze-layers", "4", "--max-steps", "30", "--lr", "1e-4",
                   "--name", f"minilm-len{max_length}", "--out", str(run), "--export", str(bundle)]  # fmt: skip
        print(f"building the benchmark's max-length-{max_length} bundle: {' '.join(command[2:])}", flush=True)
        subprocess.run(command, check=True)
    return bundle, run / "checkpoint"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--bundle", type=Path, default=None, help="default: the benchmark's max-length-512 bundle (built if missing)"
    )
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the --bundle's training checkpoint")
    parser.add_argument("--texts", type=int, default=1024)
    parser.add_argument("--skip-serve-rm", action="store_true", help="leave OpenRLHF's serve_rm out")
    parser.add_argument("--skip-plain-loop", action="store_true", help="leave the plain transformers loop out")
    parser.add_argument(
        "--only-arbiter",
        action="store_true",
        help="Arbiter's servers only: no plain loop, no serve_rm, no checkpoint (so no roofline)",
    )
    parser.add_argument(
        "--baseline-site",
        type=Path,
        default=None,
        metavar="DIR",
        help="a folder with another version of arbiter installed (pip install --no-deps --target DIR WHEEL): "
        "served too, from the same bundle with the same flags, in rounds alternating with this checkout's",
    )
    parser.add_argument(
        "--baseline-bundle",
        type=Path,
        default=None,
        metavar="DIR",
        help="another bundle of the same model (say, exported with --no-fuse): served by this checkout's code beside "
        "--bundle, in alternating rounds",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="timed rounds per server and client count (default 1; 3 with a baseline)",
    )
    parser.add_argument(
        "--precision",
        action="append",
        choices=["fp32", "int8"],
        default=None,
        help="Arbiter precisions to serve (repeatable; default fp32, and int8 when the bundle has it)",
    )
    parser.add_argument(
        "--no-imported",
        action="store_true",
        help="leave out the row of an imported model (MiniLM written by TRL's RewardTrainer, then arbiter import)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serve_throughput.json")
    args = parser.parse_args()
    if args.baseline_site and args.baseline_bundle:
        parser.error("--baseline-site and --baseline-bundle: one baseline at a time")
    rounds = args.rounds or (3 if args.baseline_site or args.baseline_bundle else 1)
    if args.bundle is None:
        args.bundle, built_checkpoint = long_bundle()
        args.checkpoint = args.checkpoint or built_checkpoint
    if args.checkpoint is None and not args.only_arbiter:
        args.checkpoint = recorded_checkpoint(args.bundle)
    if args.baseline_site is not None:
        args.baseline_site = args.baseline_site.resolve()
        if not (args.baseline_site / "arbiter" / "__init__.py").is_file():
            parser.error(f"--baseline-site {args.baseline_site}: no arbiter package in it")
        if sys.version_info < (3, 11):
            parser.error("--baseline-site needs Python 3.11 or later (python -P)")
        if rounds < 3:
            print(f"note: {rounds} round(s) per version: a smoke run, not a measurement (use --rounds 3 or more)")
    args.bundle = args.bundle.resolve()
    texts = real_texts(args.texts)
    from arbiter.bundle import load_bundle

    bundle = load_bundle(args.bundle)
    lengths = [len(bundle.input_builder().encode(p, r).ids) for p, r in texts]
    results: dict[str, object] = {
        "texts": len(texts),
        "mean_tokens": float(np.mean(lengths)),
        "tokens": {
            "min": int(np.min(lengths)),
            "median": float(np.median(lengths)),
            "p90": float(np.percentile(lengths, 90)),
            "max": int(np.max(lengths)),
            "max_length": bundle.manifest.model.max_length,
        },
        "per_request": PER_REQUEST,
        "rounds": rounds,
    }
    print(workload_line(results), flush=True)
    if not args.only_arbiter:
        from arbiter.training.checkpoint import load_checkpoint

        results["gemm_peak_gflops"] = gemm_peak_gflops()
        model, tokenizer = load_checkpoint(args.checkpoint)
        results["gflop_per_text"] = model_flops(model, lengths) / len(texts) / 1e9
        if not args.skip_plain_loop:
            results["plain_loop"] = plain_loop(model, tokenizer, texts)
    logs = args.out.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    if not (args.only_arbiter or args.skip_serve_rm):
        results["openrlhf_serve_rm"] = serve_openrlhf(args.checkpoint, texts, bundle.manifest.model.max_length, logs)
    precisions = args.precision or ["fp32", *(["int8"] if bundle.has("model.int8.onnx") else [])]
    for precision in dict.fromkeys(precisions):
        results[f"in_process_{precision}"] = in_process(args.bundle, texts, precision)
    imported = None if args.no_imported else trl_imported_bundle(args.bundle, args.out.parent / "trl-imported")
    baseline = None
    if args.baseline_site is not None:
        baseline = (args.baseline_site, args.bundle)
    elif args.baseline_bundle is not None:
        baseline = (None, args.baseline_bundle.resolve())
    for precision in dict.fromkeys(precisions):
        served = serve_arbiter(
            args.bundle, texts, precision, logs, rounds, baseline, imported if precision == "fp32" else None
        )
        results[f"arbiter_{precision}"] = served["after"]
        if "before" in served:
            results[f"arbiter_{precision}_before"] = served["before"]
        if "imported" in served:
            results["arbiter_fp32_imported"] = served["imported"]
    report(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))


def workload_line(results: dict[str, object]) -> str:
    t = results["tokens"]
    # results is the report's JSON, dict[str, object]: main put ints under "texts" and "per_request"
    requests = -(-results["texts"] // results["per_request"])  # type: ignore[operator]
    return (
        f"workload: {results['texts']} texts in {requests} requests of {results['per_request']} "
        f"(the same for every system and round); tokens per text min/median/p90/max "
        f"{t['min']}/{t['median']:.0f}/{t['p90']:.0f}/{t['max']} (max_length {t['max_length']}), "
        f"{results['mean_tokens']:.0f} on average"
    )


def report(results: dict[str, object]) -> None:
    loop = results.get("plain_loop")
    peak, per_text = results.get("gemm_peak_gflops"), results.get("gflop_per_text")
    print(workload_line(results))
    if peak and per_text:
        print(f"{per_text:.2f} GFLOP per text, fp32 GEMM peak {peak:.0f} GFLOP/s")

    def roofline(seq_per_s: float) -> str:
        return f"{seq_per_s * per_text / peak:.0%}" if peak and per_text else "n/a"

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
    rows: list[tuple[str, ...]] = [header]
    if loop:
        rows.append(
            (
                "plain transformers loop, batch 32",
                "-",
                f"{loop['seq_per_s']:.1f}",
                f"{loop['p50_ms']:.0f}",
                f"{loop['p99_ms']:.0f}",
                "1.00",
                "",
                roofline(loop["seq_per_s"]),
                "",
                "",
            )
        )
    rm = results.get("openrlhf_serve_rm")
    keys = (
        "openrlhf_serve_rm",
        "arbiter_fp32_before",
        "arbiter_fp32",
        "arbiter_fp32_imported",
        "arbiter_int8_before",
        "arbiter_int8",
    )
    for key in keys:
        if key not in results:
            continue
        run = results[key]
        for clients in CLIENTS:
            r = run[f"{clients}_clients"]
            vs_rm = f"{r['seq_per_s'] / rm[f'{clients}_clients']['seq_per_s']:.2f}" if rm else "n/a"
            rows.append(
                (
                    key,
                    str(clients),
                    f"{r['seq_per_s']:.1f}",
                    f"{r['p50_ms']:.0f}",
                    f"{r['p99_ms']:.0f}",
                    f"{r['seq_per_s'] / loop['seq_per_s']:.2f}" if loop else "n/a",
                    vs_rm,
                    roofline(r["seq_per_s"]),
                    f"{run['peak_rss_mb']:.0f}",
                    f"{run['ready_s']:.1f}",
                )
            )
    for precision in ("fp32", "int8"):
        ceiling = results.get(f"in_process_{precision}")
        if not ceiling:
            continue
        rows.append(
            (f"in process, {precision} (the ceiling)", "-", f"{ceiling['seq_per_s']:.1f}", "", "",
             f"{ceiling['seq_per_s'] / loop['seq_per_s']:.2f}" if loop else "n/a",
             f"{ceiling['seq_per_s'] / rm['16_clients']['seq_per_s']:.2f}" if rm else "n/a",
             roofline(ceiling["seq_per_s"]), "", "")
        )  # fmt: skip
    print(text_table(rows))
    overheads = [f"plain loop {loop['padded_overhead']:.0%}"] if loop else []
    if "in_process_fp32" in results:
        overheads.append(f"arbiter's batches {results['in_process_fp32']['padded_overhead']:.0%}")
    if overheads:
        print("padded tokens beyond the real ones: " + ", ".join(overheads))
    for precision in ("fp32", "int8"):
        served, ceiling = results.get(f"arbiter_{precision}"), results.get(f"in_process_{precision}")
        if served and ceiling:
            share = served["16_clients"]["seq_per_s"] / ceiling["seq_per_s"]
            print(f"arbiter {precision} at 16 clients reaches {share:.0%} of its in-process ceiling")
    if "arbiter_fp32_imported" in results:
        native, imported = results["arbiter_fp32"], results["arbiter_fp32_imported"]
        ratios = []
        for clients in CLIENTS:
            key = f"{clients}_clients"
            ratios.append(f"{clients} clients {imported[key]['seq_per_s'] / native[key]['seq_per_s']:.2f}x")
        print(f"imported (TRL-written MiniLM, arbiter import) against native, seq/s: {', '.join(ratios)}")
    for precision in ("fp32", "int8"):
        if f"arbiter_{precision}_before" in results:
            print()
            print(versus_table(results, precision))


def versus_table(results: dict[str, object], precision: str) -> str:
    """Before and after, each its median over the alternating rounds, and the after/before ratios of the medians
    (seq/s above 1: after is faster; latency above 1: after is slower)."""
    before, after = results[f"arbiter_{precision}_before"], results[f"arbiter_{precision}"]
    rows: list[tuple[str, ...]] = [
        (f"arbiter {precision}, {results['rounds']} alternating rounds", "clients", "seq/s", "seq/s min-max",
         "p50 ms", "p99 ms", "peak MB", "ready s"),
    ]  # fmt: skip
    for clients in CLIENTS:
        key = f"{clients}_clients"
        for name, run in (("before", before), ("after", after)):
            r, each = run[key], [x["seq_per_s"] for x in run["rounds"][key]]
            rows.append(
                (name, str(clients), f"{r['seq_per_s']:.1f}", f"{min(each):.1f}-{max(each):.1f}",
                 f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}", f"{run['peak_rss_mb']:.0f}", f"{run['ready_s']:.1f}")
            )  # fmt: skip
        b, a = before[key], after[key]
        rows.append(
            ("after/before", str(clients), f"{a['seq_per_s'] / b['seq_per_s']:.3f}", "",
             f"{a['p50_ms'] / b['p50_ms']:.3f}", f"{a['p99_ms'] / b['p99_ms']:.3f}",
             f"{after['peak_rss_mb'] / before['peak_rss_mb']:.3f}", "")
        )  # fmt: skip
    lines = [f"before: {before['code']}", f"after:  {after['code']}", text_table(rows)]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
