"""The wheel holds every package and every file of the source folders, and setuptools builds it without warnings.

The packages and their data are listed by hand in pyproject.toml (the top-level folders install as arbiter.*), so a
new folder or data file that nobody declares is left out of the wheel silently: one once shipped without
arbiter.service.access. Everything here is derived from the folders on disk and [tool.setuptools.package-dir].
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest
from setuptools.config.pyprojecttoml import load_file

ROOT = Path(__file__).resolve().parents[1]
# Read as setuptools reads it (tomllib is not in the standard library of Python 3.10, which the project supports).
PYPROJECT = load_file(ROOT / "pyproject.toml")
PACKAGE_DIRS: dict[str, str] = PYPROJECT["tool"]["setuptools"]["package-dir"]
# What setuptools says about a folder that is importable but not declared: it ships by accident, or not at all.
PACKAGE_WARNING = re.compile(r"(?:BuildBackend|Setuptools\w*)Warning: .*\b(?:[Pp]ackage|as data)\b|would be ignored")
BUILD_LEFTOVERS = shutil.ignore_patterns("__pycache__", "*.pyc")


def packages(files: set[str]) -> set[str]:
    return {str(PurePosixPath(name).parent).replace("/", ".") for name in files if name.endswith("/__init__.py")}


@dataclass
class Wheel:
    files: set[str]
    log: str


def source_files(root: Path) -> set[str]:
    """Every file under the mapped folders, named by where it lands in the wheel (arbiter/service/..., not service/)."""
    folders = {(root / folder).resolve(): package for package, folder in PACKAGE_DIRS.items()}
    files: set[str] = set()
    for folder, package in folders.items():
        for current, subfolders, names in os.walk(folder):
            # A folder mapped to a package of its own is walked under that name, not as part of its parent.
            subfolders[:] = [
                name for name in subfolders if name != "__pycache__" and (Path(current) / name) not in folders
            ]
            inside = PurePosixPath(*package.split("."), Path(current).relative_to(folder).as_posix())
            files.update(str(inside / name) for name in names if not name.endswith(".pyc"))
    return files


def build_wheel(root: Path, scratch: Path) -> Wheel:
    """A wheel from a copy of what the build reads, so no stale build/ folder of the checkout can fill in a gap."""
    source = scratch / "source"
    source.mkdir()
    for name in ("pyproject.toml", PYPROJECT["project"]["readme"]):
        shutil.copy(root / name, source / name)
    for folder in set(PACKAGE_DIRS.values()):
        shutil.copytree(root / folder, source / folder, ignore=BUILD_LEFTOVERS, dirs_exist_ok=True)
    out = scratch / "wheel"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = build.stdout + build.stderr
    assert build.returncode == 0, log
    (wheel,) = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        files = {name for name in archive.namelist() if ".dist-info/" not in name}
    return Wheel(files, log)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Wheel:
    return build_wheel(ROOT, tmp_path_factory.mktemp("packaging"))


def test_every_package_folder_is_a_package_of_the_wheel(wheel: Wheel) -> None:
    on_disk = packages(source_files(ROOT))
    assert {"arbiter", "arbiter.service.access", "arbiter.clients.v1"} <= on_disk  # the walk found the layout
    missing = sorted(on_disk - packages(wheel.files))
    assert not missing, f"add these to [tool.setuptools] packages in pyproject.toml: {missing}"


def test_every_file_of_the_package_folders_is_in_the_wheel(wheel: Wheel) -> None:
    on_disk = source_files(ROOT)
    # Data files of each kind the service reads at run time; without them the walk would prove nothing about data.
    assert {
        "arbiter/service/http/static/annotate.html",
        "arbiter/clients/v1/reward.proto",
        "arbiter/annotation/migrations/script.py.mako",
    } <= on_disk
    missing = sorted(on_disk - wheel.files)
    assert not missing, f"declare these in [tool.setuptools.package-data] (or packages) in pyproject.toml: {missing}"
    assert wheel.files <= on_disk, sorted(wheel.files - on_disk)


def test_the_build_has_no_warning_about_packages(wheel: Wheel) -> None:
    warnings = [line.strip() for line in wheel.log.splitlines() if PACKAGE_WARNING.search(line)]
    assert not warnings, "\n".join(warnings)
