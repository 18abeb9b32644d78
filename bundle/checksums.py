"""File checksums recorded in the manifest and verified at load."""

from __future__ import annotations

import hashlib
from pathlib import Path

from arbiter.bundle.manifest import FileEntry


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entry(path: Path) -> FileEntry:
    return FileEntry(sha256=sha256_file(path), bytes=path.stat().st_size)
