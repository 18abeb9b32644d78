"""Run OpenRLHF's own `serve_rm` on a CPU, for the serving benchmark only.

serve_rm is written for GPUs. Three CPU quirks are worked around here, and nothing else is changed:
- `flash_attn` (a CUDA-only build that cannot be installed on this machine) is imported by openrlhf.models at
  import time. A named stand-in provides the names it imports (padding helpers, all_gather); they are only
  used with `--ds.packing_samples`, which this benchmark does not set, so the stand-in raises if called.
- serve_rm offers only bf16 and fp16 weights; on a CPU without bf16 matrix units those are emulated and slow,
  so the weights load as fp32 (the same precision Arbiter's fp32 path uses).
- the attention implementation is passed as `sdpa` on the command line (its default is flash_attention_2).

    python bench/peers/serve_rm_cpu.py --reward.model_name_or_path DIR --port 5000 --ds.attn_implementation sdpa
"""

from __future__ import annotations

import importlib.machinery
import runpy
import sys
import types

import torch


def flash_attn_stand_in() -> None:
    def not_available(*_: object, **__: object) -> None:
        raise RuntimeError("flash_attn stand-in: packing_samples needs the real CUDA flash_attn")

    names = {
        "flash_attn.bert_padding": ("index_first_axis", "pad_input", "unpad_input", "rearrange"),
        "flash_attn.utils.distributed": ("all_gather",),
    }
    for package in ("flash_attn", "flash_attn.utils"):
        sys.modules[package] = _module(package)
    for module_name, functions in names.items():
        module = _module(module_name)
        for function in functions:
            setattr(module, function, not_available)
        sys.modules[module_name] = module


def _module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, loader=None)  # find_spec() callers need one
    return module


def main() -> None:
    flash_attn_stand_in()
    import openrlhf.utils.utils as utils

    utils.convert_to_torch_dtype = lambda _dtype: torch.float32
    sys.argv = ["serve_rm", *sys.argv[1:]]
    runpy.run_module("openrlhf.cli.serve_rm", run_name="__main__")


if __name__ == "__main__":
    main()
