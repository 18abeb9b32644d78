"""`python -m arbiter.clients.adapters openrlhf|verl`: the path of the file to give that trainer."""

from __future__ import annotations

import sys
from pathlib import Path

FILES = {"openrlhf": "openrlhf_reward_func.py", "verl": "verl.py"}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in FILES:
        sys.exit(f"usage: python -m arbiter.clients.adapters {{{'|'.join(FILES)}}}")
    print(Path(__file__).resolve().parent / FILES[sys.argv[1]])
