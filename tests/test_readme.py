"""The README's copy-paste Python, run as written against a real server (its addresses swapped for the test
server's): the client, TRL, OpenRLHF, veRL, PPO-loop, reward-spec and verifiable-reward sections."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SECTIONS = (
    "Python client",
    "Use from TRL",
    "Use from OpenRLHF",
    "Use from veRL",
    "Your own PPO loop",
    "Reward specs",
    "Verifiable rewards",
)


def python_blocks(section: str) -> list[str]:
    text = README.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start : end if end > 0 else None], re.S)


@pytest.mark.parametrize("section", SECTIONS)
def test_readme_python_runs(server, section, tmp_path):
    blocks = python_blocks(section)
    assert blocks, f"no python in the README section {section!r}"
    http_port = server.url.rsplit(":", 1)[1]
    grpc_port = server.grpc_url.rsplit(":", 1)[1]
    for i, block in enumerate(blocks):
        code = block.replace("127.0.0.1:8000", f"127.0.0.1:{http_port}").replace(
            "127.0.0.1:50051", f"127.0.0.1:{grpc_port}"
        )
        script = tmp_path / f"block{i}.py"
        script.write_text(code)
        result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"README {section!r} block {i} failed:\n{code}\n{result.stderr[-3000:]}"
        assert result.stdout.strip(), "each block prints what it shows"
        assert "nan" not in result.stdout.lower(), f"a README example scored nothing:\n{result.stdout}"


def test_every_setting_is_in_the_readme():
    """The settings table is the documentation of ServerSettings: a new setting without a row fails here."""
    from arbiter.service.settings import ServerSettings

    text = README.read_text()
    assert [name for name in ServerSettings.model_fields if f"`{name}`" not in text] == []
