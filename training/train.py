"""`arbiter train`: preference (or stepwise) data in, a reward-model checkpoint and a run folder out.

The loop is deliberately plain (nanoGPT-style): encode every group once, then step through shuffled,
length-bucketed micro-batches with AdamW, linear warmup and cosine decay. Under torchrun the same code runs
as DDP, each process taking every WORLD_SIZE-th training group.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np
import torch
from tqdm import tqdm

from arbiter.training import distributed, plots
from arbiter.training.batching import batches_forever
from arbiter.training.checkpoint import save_checkpoint
from arbiter.training.config import TrainConfig
from arbiter.training.frozen_layers import LowerStates, freeze_lower
from arbiter.training.model import RewardModel, build_reward_model
from arbiter.training.objectives import Objective, objective_for

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel


def train(config: TrainConfig) -> Path:
    ctx = distributed.setup(config.device)
    try:
        return _train(config, ctx)
    finally:
        distributed.teardown()


def _train(config: TrainConfig, ctx: distributed.Context) -> Path:
    if not config.data:
        raise ValueError("no training data: give --data FILE (or a hub dataset name) at least once")
    _seed_everything(config.seed)
    run = Path(config.out)
    amp_dtype = _amp_dtype(config.precision, ctx.device)
    objective = objective_for(config)
    model, tokenizer = build_reward_model(
        config.base_model,
        config.max_length,
        config.architecture,
        config.chat_template,
        config.padding_side,
        pooling=config.pooling,
        step_token=config.step_token if config.objective == "prm" else None,
    )
    spec = model.spec
    if config.lora_r:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules="all-linear",
        )
        model.backbone = get_peft_model(model.backbone, lora)
    if config.freeze_layers:
        freeze_lower(model.backbone, config.freeze_layers)
    if config.gradient_checkpointing:
        _enable_checkpointing(model.backbone)
    model.to(ctx.device)

    data = objective.load()
    builder = model.input_builder(tokenizer)
    if ctx.is_main:
        print(data.summary_table(), flush=True)
        run.mkdir(parents=True, exist_ok=True)
        (run / "config.yaml").write_text(config.to_yaml())
        (run / "eval.jsonl").write_text("".join(json.dumps(g.to_row(), ensure_ascii=False) + "\n" for g in data.eval))
        (run / "data_report.json").write_text(json.dumps([r.__dict__ for r in data.reports], indent=2, default=dict))
    if not data.train:
        raise ValueError("no usable training rows: see the bad-row table above")
    train_items = objective.encode(data.train[ctx.rank :: ctx.world], builder, spec)
    # Length-sorted once, so that every eval pass runs batches of like lengths with little padding to compute.
    eval_items = sorted(objective.encode(data.eval, builder, spec), key=lambda i: i.tokens) if ctx.is_main else []
    if ctx.is_main:
        objective.report_cuts(run, train_items, eval_items, spec.max_length)
    lower = _cache_frozen(model, train_items, config) if config.freeze_layers and config.cache_frozen else None

    per_step = config.batch_size * config.grad_accum
    total_steps = config.max_steps or max(1, math.ceil(config.epochs * len(train_items) / per_step))
    optimizer = torch.optim.AdamW(_param_groups(model, config), lr=config.lr)
    warmup = int(config.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, warmup, total_steps, config))
    # Under torchrun the steps run through DDP, which all-reduces the gradients; `model` stays the bare module.
    ddp = torch.nn.parallel.DistributedDataParallel(model) if ctx.world > 1 else None
    engine: torch.nn.Module = model if ddp is None else ddp
    scaler = torch.amp.GradScaler(enabled=amp_dtype == torch.float16)

    log = (run / "metrics.jsonl").open("w") if ctx.is_main else None
    batches = batches_forever(train_items, config.batch_size, config.seed + ctx.rank)
    bar = tqdm(total=total_steps, desc="train", unit="step", disable=not ctx.is_main, dynamic_ncols=True)
    started, seen = time.perf_counter(), 0  # pairs, or steps: the objective's units
    window: list[tuple[float, float]] = []  # (loss, accuracy) since the last log line
    model.train()
    for step in range(1, total_steps + 1):
        loss_sum, acc_sum = 0.0, 0.0
        for micro in range(config.grad_accum):
            items = next(batches)
            batch = objective.collate(items, model).to(ctx.device)
            last = micro == config.grad_accum - 1
            sync = contextlib.nullcontext() if last or ddp is None else ddp.no_sync()
            replay = contextlib.nullcontext() if lower is None else lower.replayed(_cached(lower, items, ctx.device))
            with sync, replay, _autocast(ctx.device, amp_dtype):
                rewards = engine(batch.input_ids, batch.attention_mask).float()
                loss = objective.loss(rewards, batch)
            scaler.scale(loss / config.grad_accum).backward()
            loss_sum += loss.item() / config.grad_accum
            acc_sum += objective.accuracy(rewards.detach(), batch).item() / config.grad_accum
            seen += objective.units(batch)
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()

        window.append((ctx.mean(loss_sum), ctx.mean(acc_sum)))
        rate = seen * ctx.world / (time.perf_counter() - started)
        loss_avg, acc_avg = (float(np.mean(v)) for v in zip(*window, strict=True))
        bar.update(1)
        bar.set_postfix({"loss": f"{loss_avg:.4f}", "acc": f"{acc_avg:.3f}", f"{objective.unit}_s": f"{rate:.1f}"})
        if step % config.log_every == 0 or step == total_steps:
            window.clear()
        if log and (step % config.log_every == 0 or step == total_steps):
            row = {
                "kind": "train",
                "step": step,
                "loss": loss_avg,
                "accuracy": acc_avg,
                "lr": scheduler.get_last_lr()[0],
                f"{objective.unit}_per_s": rate,
            }
            log.write(json.dumps(row) + "\n")
            log.flush()
        if config.eval_every and step % config.eval_every == 0 and step != total_steps:
            if log and eval_items:
                _log_eval(log, step, *_eval_loss(model, objective, eval_items, config, ctx.device))
            ctx.barrier()
    bar.close()

    if ctx.is_main:
        assert log is not None
        train_seconds = time.perf_counter() - started
        if eval_items:
            _log_eval(log, total_steps, *_eval_loss(model, objective, eval_items, config, ctx.device))
        log.close()
        save_checkpoint(model, tokenizer, run / "checkpoint")
        summary = {
            "train_seconds": train_seconds,
            "steps": total_steps,
            f"{objective.unit}_per_s": seen * ctx.world / train_seconds,
            "processes": ctx.world,
        }
        (run / "train_summary.json").write_text(json.dumps(summary, indent=2))
        plots.training_curves(run / "metrics.jsonl", run / "training_curves.png")
        if data.eval:
            objective.evaluate(run, model, builder, ctx.device, data.eval, eval_items)
    ctx.barrier()
    return run


def _cache_frozen(model: RewardModel, items: list[Any], config: TrainConfig) -> LowerStates:
    """The frozen blocks' output for every training response, attached to its group."""
    # A weighted or balanced source repeats its groups: each distinct sequence is computed and stored once.
    distinct: dict[tuple[int, ...], int] = {}
    for item in items:
        for ids in item.ids:
            distinct.setdefault(tuple(ids), len(distinct))
    started = time.perf_counter()
    lower, states = LowerStates.compute(model, config.freeze_layers, list(distinct), progress=True)
    for item in items:
        item.lower = [states[distinct[tuple(ids)]] for ids in item.ids]
    megabytes = sum(s.numel() * s.element_size() for s in states) / 2**20
    tqdm.write(
        f"frozen blocks cached: {len(states)} sequences, {megabytes:.0f} MB, {time.perf_counter() - started:.0f} s"
    )
    return lower


def _cached(lower: LowerStates, items: list[Any], device: torch.device) -> torch.Tensor:
    return lower.padded([s for item in items for s in item.lower or []]).to(device)


@torch.no_grad()
def _eval_loss(
    model: RewardModel, objective: Objective, items: list[Any], config: TrainConfig, device: torch.device
) -> tuple[float, float]:
    model.eval()
    losses, accs, weights = [], [], []
    for start in range(0, len(items), config.batch_size):
        chunk = items[start : start + config.batch_size]
        batch = objective.collate(chunk, model).to(device)
        rewards = model(batch.input_ids, batch.attention_mask).float()
        losses.append(objective.loss(rewards, batch).item())
        accs.append(objective.accuracy(rewards, batch).item())
        weights.append(len(chunk))
    model.train()
    return float(np.average(losses, weights=weights)), float(np.average(accs, weights=weights))


def _log_eval(log: TextIO, step: int, loss: float, accuracy: float) -> None:
    tqdm.write(f"eval @ step {step}: loss {loss:.4f}, accuracy {accuracy:.3f}")
    log.write(json.dumps({"kind": "eval", "step": step, "loss": loss, "accuracy": accuracy}) + "\n")


def _enable_checkpointing(backbone: PreTrainedModel | PeftModel) -> None:
    """Recompute activations in the backward pass; transformers renamed the switch in version 5."""
    if hasattr(backbone, "activation_checkpointing_enable"):
        backbone.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _param_groups(model: RewardModel, config: TrainConfig) -> list[dict[str, object]]:
    """Weight decay on matrices only; the freshly initialized head may learn faster than the backbone."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, param in model.backbone.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
    head_lr = config.head_lr or config.lr
    return [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
        {"params": list(model.head.parameters()), "weight_decay": 0.0, "lr": head_lr},
    ]


def _lr_factor(step: int, warmup: int, total: int, config: TrainConfig) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine


def _amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
