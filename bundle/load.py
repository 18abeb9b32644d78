"""Opening a bundle folder: every check happens here, with errors that say what to fix."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from arbiter.bundle.checksums import sha256_file
from arbiter.bundle.manifest import FORMAT_VERSION, MANIFEST_FILE, Manifest

REQUIRED_FILES = ("model.onnx", "tokenizer.json")


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
        return self.path / name

    def has(self, name: str) -> bool:
        return name in self.manifest.files and (self.path / name).is_file()

    def tokenizer(self):  # noqa: ANN201 - tokenizers is an optional import for bundle readers
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(self.file("tokenizer.json")))

    def input_builder(self):  # noqa: ANN201
        from arbiter.bundle.render import InputBuilder

        spec = self.manifest.model
        return InputBuilder(self.tokenizer(), spec.rendering, spec.max_length)


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
    for name in REQUIRED_FILES:
        if name not in manifest.files:
            raise BundleError(f"{root}: manifest lists no {name}; the bundle is incomplete")
    for name, entry in manifest.files.items():
        file = root / name
        if not file.is_file():
            raise BundleError(f"{root}: missing file {name} (listed in the manifest)")
        if file.stat().st_size != entry.bytes:
            raise BundleError(f"{file}: size {file.stat().st_size} bytes, manifest says {entry.bytes}")
        if verify_checksums and sha256_file(file) != entry.sha256:
            raise BundleError(f"{file}: checksum mismatch; the file was changed or corrupted after export")
    return Bundle(root, manifest)


def _check_version(where: Path, version: object) -> None:
    if not isinstance(version, str) or "." not in version:
        raise BundleError(f"{where}: missing or malformed format_version {version!r}")
    major = version.split(".", 1)[0]
    if major != FORMAT_VERSION.split(".", 1)[0]:
        raise BundleError(
            f"{where}: bundle format {version} is not readable by this Arbiter (reads {FORMAT_VERSION.split('.')[0]}.x)"
        )
