"""Serving throughput: Arbiter over HTTP against a plain transformers loop, on the same model and texts.

One run, the same bundle (and its training checkpoint for the torch rows), the same 1,024 real texts
from ../shared/data/preferences, untruncated up to the bundle's max length:
  plain loop    - transformers + torch in process, batch 32, padding to the longest in the batch
  serve_rm      - OpenRLHF's own server on the same weights, at 1 and 16 clients
  arbiter       - `arbiter serve` over HTTP on 127.0.0.1, at 1 client and at 16 concurrent clients sending
                  batches of 8: fp32; int8 when the bundle has it; bf16 (torch, on the bundle's
                  model.bf16.safetensors) when the bundle has it and the CPU multiplies bf16 faster than fp32
  in process    - the server's own batcher over ONNX Runtime and over torch, no HTTP: the ceiling
All servers are up at once and every system runs once per round (3 rounds by default), in the same order, so
that the machine's drift moves them alike. It prints sequences/s, p50/p99 request latency, the server's peak
memory and start-to-ready time, the ratios to the plain loop and to serve_rm (the median of each round's
ratio), and the share of the machine's fp32 roofline (GEMM peak measured at the start of each round, FLOPs
per text from the model's shape and each text's token count).

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
the rounds (and the seq/s range) and the after/before ratios.
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

    from arbiter.bundle import Bundle
    from arbiter.bundle.render import Prompt
    from arbiter.service.runtime.models import Runner
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


def gemm_peak_gflops() -> dict[str, float]:
    """The fp32 roofline: the fastest matrix product this machine's libraries reach, the best of 5 runs of numpy's
    (its BLAS) at 2048^3 ("numpy") and of ONNX Runtime's MatMul (MLAS, the kernels the server runs) at MiniLM's
    shapes for a 1,024-token batch and at 2048^3 ("onnxruntime"). On AVX-512 CPUs MLAS reaches nearly twice
    OpenBLAS's rate; the roofline is the faster of the two."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def best(run: Callable[[], object], flop: float) -> float:
        run()
        fastest = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            run()
            fastest = min(fastest, time.perf_counter() - start)
        return flop / fastest / 1e9

    a = rng.standard_normal((2048, 2048), dtype=np.float32)
    numpy_rate = best(lambda: a @ a, 2 * 2048**3)
    rates = []
    for m, k, n in ((1024, 384, 1536), (1024, 1536, 384), (2048, 2048, 2048)):
        weight = numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32), "w")
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["y"])], "gemm",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])], [weight],
        )  # fmt: skip
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        x = rng.standard_normal((m, k), dtype=np.float32)
        rates.append(best(lambda: session.run(None, {"x": x}), 2 * m * k * n))  # noqa: B023 (run at once)
    return {"numpy": numpy_rate, "onnxruntime": max(rates)}


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


class InProcess:
    """The ceiling a server can approach: a runner the server has (ONNX Runtime on the bundle; torch on the
    checkpoint, as `--backend torch` serves it; torch on the bundle's bf16 weights) driven by the server's own
    batcher in this process, every text queued at once and taken as the server takes them (oldest first, a window
    at a time, sorted by length within a window, cut under the server's default token budget); no HTTP, JSON or
    tokenizing is timed. One `round()` per round of the run, with the padded-token overhead of its batches."""

    def __init__(self, runner: Runner, texts: Texts) -> None:
        from arbiter.service.runtime.batcher import Batcher, BatchStats
        from arbiter.service.runtime.models import default_batch_tokens
        from arbiter.service.settings import ServerSettings

        self.sequences = [e.ids for e in runner.builder.encode_many([p for p, _ in texts], [r for _, r in texts])]
        self.batches: list[BatchStats] = []
        batches = self.batches

        class Observer:
            def observe_batch(self, stats: BatchStats) -> None:
                batches.append(stats)

            def observe_dropped(self, sequences: int) -> None:
                pass

        tokens, size = default_batch_tokens(runner), ServerSettings.model_fields["max_batch_size"].default
        self.batcher = Batcher(runner.run, tokens, size, 0.0, len(self.sequences), Observer(), "in-process")
        asyncio.run(self.batcher.score(self.sequences[:WARMUP_TEXTS]))

    def round(self) -> dict[str, float]:
        self.batches.clear()
        started = time.perf_counter()
        asyncio.run(self.batcher.score(self.sequences))
        seconds = time.perf_counter() - started
        padded, real = sum(b.padded_tokens for b in self.batches), sum(b.real_tokens for b in self.batches)
        return {"seq_per_s": len(self.sequences) / seconds, "padded_overhead": padded / real - 1}

    def close(self) -> None:
        self.batcher.close()

    @classmethod
    def onnx(cls, bundle: Path, texts: Texts, precision: str) -> InProcess:
        from arbiter.bundle import load_bundle
        from arbiter.bundle.onnx_model import OnnxRewardModel

        return cls(OnnxRewardModel.from_bundle(load_bundle(bundle), precision), texts)

    @classmethod
    def torch(cls, checkpoint: Path, texts: Texts) -> InProcess:
        from arbiter.service.runtime.torch_backend import open_checkpoint

        return cls(open_checkpoint(checkpoint, "cpu", "fp32")[1], texts)

    @classmethod
    def bf16(cls, bundle: Path, texts: Texts) -> InProcess:
        from arbiter.bundle import load_bundle
        from arbiter.service.runtime.torch_backend import open_bf16

        return cls(open_bf16(load_bundle(bundle), device="cpu"), texts)


def score_items(texts: Texts) -> list[dict[str, object]]:
    """The `items` of an Arbiter scoring request."""
    return [{"prompt": p, "response": r} for p, r in texts]


def arbiter_body(items: Texts) -> tuple[str, dict[str, object]]:
    return "/v1/score", {"items": score_items(items)}


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


def medians(rounds: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over the rounds."""
    return {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}


@contextmanager
def openrlhf_server(checkpoint: Path, max_len: int, logs: Path) -> Iterator[Server]:
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
        yield {"url": url, "process": process, "ready_s": time.perf_counter() - started}
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


def default_precisions(bundle: Bundle) -> list[str]:
    """fp32, and each reduced-precision file the bundle's export kept (it passed the fidelity gate): int8, and bf16
    where this CPU multiplies bf16 matrices faster than fp32 ones (measured; `--precision bf16` runs it anyway)."""
    import torch

    from arbiter.service.runtime.torch_backend import bf16_speedup

    precisions = ["fp32", *(p for p in ("int8", "bf16") if bundle.manifest.kept(p))]
    if "bf16" in precisions and bf16_speedup(torch.device("cpu")) <= 1:
        print("bf16 left out: bf16 matrix products are no faster than fp32's on this CPU (--precision bf16 runs it)")
        precisions.remove("bf16")
    return precisions


def run_rounds(
    rounds: int,
    texts: Texts,
    servers: dict[str, tuple[Server, Body]],
    ceilings: dict[str, InProcess],
    loop: tuple[RewardModel, PreTrainedTokenizerBase] | None,
    roofline: bool,
) -> dict[str, dict[str, object]]:
    """Every system once per round, in the same order each round, so that a machine that slows down or speeds up
    while the run goes on moves all of them alike; each figure is given per round ("rounds") and as its median.
    Each round starts with the GEMM peak, measured again, as the roofline of that round."""
    for server, body in servers.values():
        for clients in CLIENTS:
            asyncio.run(drive(server["url"], texts[:WARMUP_TEXTS], clients, body))
    if loop is not None:
        plain_loop(*loop, texts[:WARMUP_TEXTS])
    each: dict[str, dict[str, list[dict[str, float]]]] = {name: {} for name in [*servers, *ceilings]}
    peaks: list[dict[str, float]] = []
    loops: list[dict[str, float]] = []
    for r in range(rounds):
        started = time.perf_counter()
        if roofline:
            peaks.append(gemm_peak_gflops())
        if loop is not None:
            loops.append(plain_loop(*loop, texts))
        for clients in CLIENTS:
            for name, (server, body) in servers.items():
                time.sleep(SETTLE_S)
                each[name].setdefault(f"{clients}_clients", []).append(
                    asyncio.run(drive(server["url"], texts, clients, body))
                )
        for name, ceiling in ceilings.items():
            time.sleep(SETTLE_S)
            each[name].setdefault("run", []).append(ceiling.round())
        print(f"round {r + 1}/{rounds}: {time.perf_counter() - started:.0f} s", flush=True)
    measured: dict[str, dict[str, object]] = {
        name: {"rounds": runs, **{key: medians(values) for key, values in runs.items()}} for name, runs in each.items()
    }
    if loop is not None:
        measured["plain_loop"] = {"rounds": {"run": loops}, "run": medians(loops)}
    if roofline:
        measured["gemm_peak_gflops"] = {"rounds": peaks}
    return measured


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
        help="rounds: every system once per round, ratios within each round, medians of those (default 3)",
    )
    parser.add_argument(
        "--precision",
        action="append",
        choices=["fp32", "int8", "bf16"],
        default=None,
        help="Arbiter precisions to serve (repeatable; default fp32, and int8 and bf16 when the bundle has their "
        "files, bf16 only where it is faster than fp32)",
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
    rounds = args.rounds or 3
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
    model = tokenizer = None
    if not args.only_arbiter:
        from arbiter.training.checkpoint import load_checkpoint

        model, tokenizer = load_checkpoint(args.checkpoint)
        results["gflop_per_text"] = model_flops(model, lengths) / len(texts) / 1e9
    logs = args.out.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    precisions = list(dict.fromkeys(args.precision or default_precisions(bundle)))
    for precision in precisions[1:]:
        judged = bundle.manifest.kept(precision)
        if judged is None:
            parser.error(f"--precision {precision}: {args.bundle} has no {precision} file (its export refused it)")
        results[f"{precision}_fidelity"] = judged.model_dump()
    imported = None if args.no_imported else trl_imported_bundle(args.bundle, args.out.parent / "trl-imported")
    baseline = None
    if args.baseline_site is not None:
        baseline = (args.baseline_site, args.bundle)
    elif args.baseline_bundle is not None:
        baseline = (None, args.baseline_bundle.resolve())
    with ExitStack() as stack:
        servers: dict[str, tuple[Server, Body]] = {}
        if not (args.only_arbiter or args.skip_serve_rm):
            max_len = bundle.manifest.model.max_length
            servers["openrlhf_serve_rm"] = (stack.enter_context(openrlhf_server(args.checkpoint, max_len, logs)),
                                            openrlhf_body)  # fmt: skip
        for precision in precisions:
            versions: dict[str, tuple[Path | None, Path]] = {"": (None, args.bundle)}
            if baseline is not None and precision != "bf16":  # bf16 came with bundle format 1.5: not in a baseline
                versions = {"_before": baseline, **versions}
            if imported is not None and precision == "fp32":
                versions["_imported"] = (None, imported)
            for suffix, (site, served) in versions.items():
                name = f"arbiter_{precision}{suffix}"
                code = arbiter_code(site)
                print(f"{name}: code from {code}, bundle {served}", flush=True)
                flags = ("--bundles", str(served), "--precision", precision)
                servers[name] = (stack.enter_context(arbiter_server(logs, flags, site, name)), arbiter_body)
                results[name] = {"code": f"{code}, bundle {served}"}
        ceilings = {f"in_process_{p}": InProcess.onnx(args.bundle, texts, p) for p in precisions if p != "bf16"}
        if args.checkpoint is not None and not args.only_arbiter:
            ceilings["in_process_torch"] = InProcess.torch(args.checkpoint, texts)
        if "bf16" in precisions:
            ceilings["in_process_bf16"] = InProcess.bf16(args.bundle, texts)
        for ceiling in ceilings.values():
            stack.callback(ceiling.close)
        loop = not args.skip_plain_loop and model is not None and tokenizer is not None
        pair = (model, tokenizer) if loop else None
        measured = run_rounds(rounds, texts, servers, ceilings, pair, roofline=model is not None)
        for name, server in servers.items():
            run = results.setdefault(name, {})
            run.update(measured[name], ready_s=server[0]["ready_s"], peak_rss_mb=peak_rss_mb(server[0]["process"].pid))
        for name in measured.keys() - servers.keys():
            results[name] = measured[name]
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


def per_round(results: dict[str, object], name: str, key: str) -> list[float]:
    return [r["seq_per_s"] for r in results[name]["rounds"][key]]  # type: ignore[index]


def ratio(over: list[float], under: list[float]) -> float:
    """The median over the rounds of each round's ratio (the two measured in the same round)."""
    return statistics.median(a / b for a, b in zip(over, under, strict=True))


def report(results: dict[str, object]) -> None:
    """One row per system and client count: medians over the rounds; the ratios are medians of each round's ratio,
    and the roofline share is each round's seq/s against the GEMM peak measured at that round's start."""
    per_text = results.get("gflop_per_text")
    measured_peaks = results.get("gemm_peak_gflops", {}).get("rounds")  # type: ignore[attr-defined]
    peaks = [max(p.values()) for p in measured_peaks] if measured_peaks else None
    print(workload_line(results))
    if measured_peaks and per_text:
        each = ", ".join(f"{p['onnxruntime']:.0f} ({p['numpy']:.0f})" for p in measured_peaks)
        print(
            f"{per_text:.2f} GFLOP per text; fp32 GEMM peak per round, ONNX Runtime's MatMul (numpy's): {each} GFLOP/s"
        )
    loop = per_round(results, "plain_loop", "run") if "plain_loop" in results else None
    rm = "openrlhf_serve_rm" in results

    def versus(seq: list[float], base: list[float] | None) -> str:
        return f"{ratio(seq, base):.2f}" if base else "n/a"

    def roofline(seq: list[float]) -> str:
        return f"{ratio([s * per_text for s in seq], peaks):.0%}" if peaks and per_text else "n/a"  # type: ignore[operator]

    rows: list[tuple[str, ...]] = [
        ("system", "clients", "seq/s", "min-max", "p50 ms", "p99 ms", "x loop", "x serve_rm", "roofline", "peak MB",
         "ready s"),
    ]  # fmt: skip
    for name in LABELS:
        if name not in results:
            continue
        run = results[name]
        for key in run["rounds"]:  # type: ignore[index]
            seq, r = per_round(results, name, key), run[key]  # type: ignore[index]
            clients = key.split("_")[0] if key != "run" else "-"
            # serve_rm at the same client count; the rows without clients against serve_rm at 16
            rm_key = key if key != "run" else f"{CLIENTS[-1]}_clients"
            rows.append(
                (LABELS[name], clients, f"{r['seq_per_s']:.1f}", f"{min(seq):.1f}-{max(seq):.1f}",
                 f"{r['p50_ms']:.0f}" if "p50_ms" in r else "", f"{r['p99_ms']:.0f}" if "p99_ms" in r else "",
                 versus(seq, loop), versus(seq, per_round(results, "openrlhf_serve_rm", rm_key) if rm else None),
                 roofline(seq), f"{run['peak_rss_mb']:.0f}" if "peak_rss_mb" in run else "",
                 f"{run['ready_s']:.1f}" if "ready_s" in run else "")
            )  # fmt: skip
    print(text_table(rows))
    overheads = [f"plain loop {results['plain_loop']['run']['padded_overhead']:.0%}"] if loop else []  # type: ignore[index]
    if "in_process_fp32" in results:
        overheads.append(f"arbiter's batches {results['in_process_fp32']['run']['padded_overhead']:.0%}")  # type: ignore[index]
    if overheads:
        print("padded tokens beyond the real ones: " + ", ".join(overheads))
    top = f"{CLIENTS[-1]}_clients"
    for precision in ("fp32", "int8", "bf16"):
        served = f"arbiter_{precision}"
        # the ceiling: the fastest in-process scorer of the same precision, in each round
        scorers = [n for n in (f"in_process_{precision}", *(["in_process_torch"] if precision == "fp32" else []))
                   if n in results]  # fmt: skip
        if served in results and scorers:
            fastest = [max(each) for each in zip(*(per_round(results, n, "run") for n in scorers), strict=True)]
            share = ratio(per_round(results, served, top), fastest)
            print(f"arbiter {precision} at {CLIENTS[-1]} clients reaches {share:.0%} of the fastest in-process "
                  f"{precision} scorer ({' or '.join(LABELS[n] for n in scorers)}, each round's faster)")  # fmt: skip
            r = results[served][top]  # type: ignore[index]
            print(f"arbiter {precision} at {CLIENTS[-1]} clients: p99/p50 {r['p99_ms'] / r['p50_ms']:.2f}")
            if measured_peaks and per_text:
                blas = ratio(
                    [x * per_text for x in per_round(results, served, top)], [p["numpy"] for p in measured_peaks]
                )  # type: ignore[operator]
                print(f"arbiter {precision} at {CLIENTS[-1]} clients: {blas:.0%} of numpy's GEMM peak (its BLAS)")
    for precision in ("int8", "bf16"):
        if f"{precision}_fidelity" in results:
            f = results[f"{precision}_fidelity"]
            print(f"{precision} against fp32 at export, on the run's {f['pairs']} held-out pairs: accuracy "  # type: ignore[index]
                  f"{f['accuracy']:.4f} (fp32 {f['fp32_accuracy']:.4f}), spearman {f['spearman']:.4f}, same order on "  # type: ignore[index]
                  f"{f['pairwise_agreement']:.1%}")  # type: ignore[index]  # fmt: skip
    if "arbiter_fp32_imported" in results:
        ratios = []
        for clients in CLIENTS:
            key = f"{clients}_clients"
            share = ratio(per_round(results, "arbiter_fp32_imported", key), per_round(results, "arbiter_fp32", key))
            ratios.append(f"{clients} clients {share:.2f}x")
        print(f"imported (TRL-written MiniLM, arbiter import) against native, seq/s: {', '.join(ratios)}")
    for precision in ("fp32", "int8"):
        if f"arbiter_{precision}_before" in results:
            print()
            print(versus_table(results, precision))


LABELS = {  # the report's rows, in this order
    "plain_loop": "plain transformers loop, batch 32",
    "openrlhf_serve_rm": "OpenRLHF serve_rm",
    "arbiter_fp32_before": "arbiter fp32, baseline",
    "arbiter_fp32": "arbiter fp32",
    "arbiter_fp32_imported": "arbiter fp32, imported from TRL",
    "arbiter_int8_before": "arbiter int8, baseline",
    "arbiter_int8": "arbiter int8",
    "arbiter_bf16": "arbiter bf16 (torch, the bundle's bf16 file)",
    "in_process_fp32": "in process, ONNX Runtime fp32",
    "in_process_torch": "in process, torch fp32",
    "in_process_int8": "in process, ONNX Runtime int8",
    "in_process_bf16": "in process, torch bf16",
}


def versus_table(results: dict[str, object], precision: str) -> str:
    """Before and after, each its median over the alternating rounds, and the after/before ratios: of seq/s, the
    median of each round's ratio; of latency and memory, the ratio of the medians (seq/s above 1: after is faster;
    latency above 1: after is slower)."""
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
        speedup = ratio(
            per_round(results, f"arbiter_{precision}", key), per_round(results, f"arbiter_{precision}_before", key)
        )
        rows.append(
            ("after/before", str(clients), f"{speedup:.3f}", "",
             f"{a['p50_ms'] / b['p50_ms']:.3f}", f"{a['p99_ms'] / b['p99_ms']:.3f}",
             f"{after['peak_rss_mb'] / before['peak_rss_mb']:.3f}", "")
        )  # fmt: skip
    lines = [f"before: {before['code']}", f"after:  {after['code']}", text_table(rows)]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
