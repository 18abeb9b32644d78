"""Regenerates the checked-in gRPC code from reward.proto (`make proto`; needs grpcio-tools, a dev dependency).

protoc maps the folder to its import path `arbiter/clients/v1`, so the generated modules import each other as
`arbiter.clients.v1.*`, wherever the checkout lives.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
IMPORT_PATH = "arbiter/clients/v1"
GENERATED = ("reward_pb2.py", "reward_pb2.pyi", "reward_pb2_grpc.py")


def generate(out_dir: Path = HERE) -> list[Path]:
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"--proto_path={IMPORT_PATH}={HERE}",
            f"--proto_path={Path(protoc.__file__).parent / '_proto'}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            f"{IMPORT_PATH}/reward.proto",
        ]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed on reward.proto")
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in GENERATED:
            shutil.copyfile(Path(tmp) / IMPORT_PATH / name, out_dir / name)
    return [out_dir / name for name in GENERATED]


if __name__ == "__main__":
    for path in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(path)
