"""Where the preference store is: the server's `annotation_db` setting, read the way the server reads it (its YAML
file, then ARBITER_ANNOTATION_DB over it), so that the store's commands need none of the server's other settings."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

DEFAULT_STORE_URL = "sqlite:///" + str(Path.home() / ".cache" / "arbiter" / "annotations.sqlite")
ENVIRONMENT_VARIABLE = "ARBITER_ANNOTATION_DB"


def store_url(config_file: Path | None = None) -> str | None:
    """The store's URL; empty or None when annotation is off."""
    url = DEFAULT_STORE_URL
    if config_file:
        url = (yaml.safe_load(Path(config_file).read_text()) or {}).get("annotation_db", url)
    return os.environ.get(ENVIRONMENT_VARIABLE, url)
