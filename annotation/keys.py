"""Annotator keys: random, shown once, stored as a SHA-256 hash (they carry 256 bits, so a slow hash adds nothing)."""

from __future__ import annotations

import hashlib
import secrets

PREFIX = "arb_"


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
