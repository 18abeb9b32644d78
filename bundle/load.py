"""Opening a bundle folder: every check happens here, with errors that say what to fix."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from arbiter.bundle.checksums import sha256_file
from arbiter.bundle.manifest import FORMAT_VERSION, MANIFEST_FILE, Manifest

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from arbiter.bundle.render import InputBuilder

REQUIRED_FILES = {"onnx": ("model.onnx", "tokenizer.json"), "torch": ("tokenizer.json",), "remote": ("tokenizer.json",)}


class BundleError(ValueError):
    """A bundle that cannot be used, with the reason in words."""


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: Manifest

    @property
    def name(self) -> str:
        return self.manifest.name

    def file(self, name: str) -> Path:
        """`path / name`, refused unless `name` is a plain file name whose file (links followed) is in the folder.

        Manifest names come with the bundle, which may come from anyone: a name such as ../../etc/hostname must not
        make the loader stat, hash or open a file elsewhere."""
        if name in ("", ".", "..") or any(c in name for c in "/\\\0"):
            raise BundleError(
                f"{self.path}: manifest file name {name!r} is not a plain file name "
                "(names may not contain '/' or '\\', be '..', or be absolute paths)"
            )
        file = self.path / name
        try:
            inside = file.resolve().is_relative_to(self.path.resolve())
        except (OSError, RuntimeError) as exc:  # a link loop: RuntimeError before Python 3.13, OSError after
            raise BundleError(f"{self.path}: {name} cannot be resolved ({exc})") from exc
        if not inside:
            raise BundleError(f"{self.path}: {name} leads outside the bundle folder (a link out of it)")
        return file

    def has(self, name: str) -> bool:
        return name in self.manifest.files and self.file(name).is_file()

    def tokenizer(self) -> Tokenizer:
        from tokenizers import Tokenizer

        file = self.file("tokenizer.json")
        try:
            tokenizer = Tokenizer.from_file(str(file))
            tokenizer.encode("a")  # some broken files parse and fail only when used (a WordPiece without its [UNK])
        except Exception as exc:  # tokenizers raises bare Exceptions for every kind of bad file
            raise BundleError(f"{file}: not a usable tokenizers file ({exc})") from exc
        return tokenizer

    def input_builder(self) -> InputBuilder:
        from arbiter.bundle.render import InputBuilder

        spec = self.manifest.model
        tokenizer = self.tokenizer()
        try:
            return InputBuilder(tokenizer, spec.rendering, spec.max_length)
        except ValueError as exc:  # the rendering rule: no chat template, or one that does not compile
            raise BundleError(f"{self.path / MANIFEST_FILE}: unusable model.rendering ({exc})") from exc


def load_bundle(path: str | Path, verify_checksums: bool = True) -> Bundle:
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"{root}: not a bundle folder (it does not exist or is not a directory)")
    manifest_path = root / MANIFEST_FILE
    if not manifest_path.is_file():
        raise BundleError(f"{root}: no {MANIFEST_FILE}; was this folder written by `arbiter export`?")
    try:
        raw = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{manifest_path}: not valid JSON ({exc})") from exc
    _check_version(manifest_path, raw.get("format_version") if isinstance(raw, dict) else None)
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise BundleError(f"{manifest_path}: invalid manifest: {problems}") from exc
    if manifest.model.steps is not None and manifest.runtime != "onnx":
        raise BundleError(f"{manifest_path}: a process reward model (model.steps) runs on ONNX Runtime only")
    if manifest.model.steps is not None and manifest.objectives is not None:
        raise BundleError(f"{manifest_path}: a process reward model (model.steps) has one output, not objectives")
    for name in REQUIRED_FILES[manifest.runtime]:
        if name not in manifest.files:
            raise BundleError(f"{root}: manifest lists no {name}; the bundle is incomplete")
    bundle = Bundle(root, manifest)
    files = {name: bundle.file(name) for name in manifest.files}  # every name checked before any file is touched
    for name, entry in manifest.files.items():
        file = files[name]
        if not file.is_file():
            raise BundleError(f"{root}: missing file {name} (listed in the manifest)")
        if file.stat().st_size != entry.bytes:
            raise BundleError(f"{file}: size {file.stat().st_size} bytes, manifest says {entry.bytes}")
        if verify_checksums and sha256_file(file) != entry.sha256:
            raise BundleError(f"{file}: checksum mismatch; the file was changed or corrupted after export")
    return bundle


def _check_version(where: Path, version: object) -> None:
    if not isinstance(version, str) or "." not in version:
        raise BundleError(f"{where}: missing or malformed format_version {version!r}")
    major = version.split(".", 1)[0]
    if major != FORMAT_VERSION.split(".", 1)[0]:
        raise BundleError(
            f"{where}: bundle format {version} is not readable by this Arbiter (reads {FORMAT_VERSION.split('.')[0]}.x)"
        )
