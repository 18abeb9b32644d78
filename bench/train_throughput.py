"""Training throughput and the time to build the default bundle.

Two measurements in one run, on the same backbone, data, batch size and number of steps:
  baseline  - the common recipe: random batches padded to max_length (tokenizer(padding="max_length"))
  arbiter   - Arbiter's loop: length-bucketed batches with dynamic padding, each response encoded once
Then, unless --skip-build, the wall time of `arbiter train --config configs/default.yaml --export ...`.

    python bench/train_throughput.py [--steps 12] [--skip-build]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from arbiter.bundle.render import InputBuilder
from arbiter.training.batching import batches_forever, collate, encode_groups
from arbiter.training.config import TrainConfig
from arbiter.training.loss import preference_loss
from arbiter.training.model import build_reward_model
from arbiter.training.split import load_preferences

ROOT = Path(__file__).resolve().parents[1]
PREFERENCES = ROOT.parent / "shared" / "data" / "preferences"


def step_times(padded_to_max: bool, config: TrainConfig, steps: int) -> list[float]:
    torch.manual_seed(0)
    model, tokenizer = build_reward_model(config.base_model, config.max_length)
    spec = model.spec
    builder = model.input_builder(tokenizer)
    data = load_preferences(config.data, 0.1, 0)
    items = encode_groups(data.train[: steps * config.batch_size * 4], builder)
    if padded_to_max:  # baseline: every sequence padded to max_length, batches in random order
        for item in items:
            item.ids = [ids + [spec.pad_token_id] * (spec.max_length - len(ids)) for ids in item.ids]
        order = torch.randperm(len(items)).tolist()
        batches = iter(
            [[items[i] for i in order[b : b + config.batch_size]] for b in range(0, len(order), config.batch_size)]
        )
    else:
        batches = batches_forever(items, config.batch_size, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    times = []
    for _ in range(steps + 1):  # the first step warms up and is not counted
        start = time.perf_counter()
        batch = collate(next(batches), spec.pad_token_id, spec.padding_side, True, False)
        loss = preference_loss(model(batch.input_ids, batch.attention_mask), batch.pairs)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    return times[1:]


def token_stats(config: TrainConfig) -> dict[str, float]:
    from arbiter.training.model import load_tokenizer, rendering_for
    from arbiter.weights import resolve

    tokenizer = load_tokenizer(resolve(config.base_model))
    builder = InputBuilder(
        tokenizer.backend_tokenizer, rendering_for(tokenizer, config.chat_template), config.max_length
    )
    data = load_preferences(config.data, 0.1, 0)
    lengths = [len(builder.encode(g.prompt, r).ids) for g in data.train[:2000] for r in g.responses]
    return {
        "mean": statistics.mean(lengths),
        "share_at_max": sum(n >= config.max_length for n in lengths) / len(lengths),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per round and side")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-build", action="store_true", help="do not time the default bundle build")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train_throughput.json")
    args = parser.parse_args()
    files = sorted(PREFERENCES.glob("*.jsonl"))
    if not files:
        sys.exit(f"no preference files under {PREFERENCES}")
    default = TrainConfig.from_yaml(ROOT / "configs" / "default.yaml", data=[{"path": str(f)} for f in files])
    results: dict[str, object] = {
        "batch_size": default.batch_size,
        "max_length": default.max_length,
        "backbone": default.base_model,
        "steps": args.steps,
    }
    # Alternating rounds (A B A B) so that drift in the machine's speed falls on both sides alike.
    times: dict[str, list[float]] = {"baseline_pad_to_max": [], "arbiter_bucketed": []}
    for _ in range(args.rounds):
        for name, padded in (("baseline_pad_to_max", True), ("arbiter_bucketed", False)):
            times[name] += step_times(padded, default, args.steps)
    for name, values in times.items():
        median = statistics.median(values)
        results[name] = {"median_step_s": median, "pairs_per_s": default.batch_size / median, "steps": len(values)}
        print(f"{name:22s} median step {median:.3f} s  ->  {default.batch_size / median:.1f} pairs/s", flush=True)
    results["tokens"] = token_stats(default)
    print(
        f"tokens per sequence: mean {results['tokens']['mean']:.0f} of max {default.max_length}, "
        f"{results['tokens']['share_at_max']:.0%} at the maximum (padding to max costs little when most are)"
    )
    ratio = results["arbiter_bucketed"]["pairs_per_s"] / results["baseline_pad_to_max"]["pairs_per_s"]
    results["speedup"] = ratio
    print(f"arbiter / baseline: {ratio:.2f}x")
    if not args.skip_build:
        out_dir = ROOT / "bench" / "results" / "default-build"
        command = [
            sys.executable,
            "-m",
            "arbiter.cli",
            "train",
            "--config",
            str(ROOT / "configs" / "default.yaml"),
            *[a for f in files for a in ("--data", str(f))],
            "--out",
            str(out_dir / "run"),
            "--export",
            str(out_dir / "bundle"),
        ]
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        manifest = json.loads((out_dir / "bundle" / "manifest.json").read_text())
        results["default_bundle"] = {"build_seconds": seconds, "eval_accuracy": manifest["eval_accuracy"]}
        print(f"default bundle built in {seconds:.0f} s, held-out accuracy {manifest['eval_accuracy']:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
