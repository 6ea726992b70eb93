"""Regenerate the gRPC/protobuf Python code from protos/ (`make protos`).

The protos are mapped under the import prefix ``ollama_optimizer/gen`` so the
generated modules import each other as ``ollama_optimizer.gen.optimizer.v1``.
Message stubs (``*_pb2.pyi``) come from grpcio-tools, service stubs
(``*_pb2_grpc.pyi``) from mypy-protobuf's ``protoc-gen-mypy_grpc`` plugin.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "protos"
IMPORT_PREFIX = "ollama_optimizer/gen"
PROTO_FILES = ("optimizer/v1/matcher.proto", "optimizer/v1/tuner.proto")
GRPC_STUB_PLUGIN = Path(sys.executable).parent / "protoc-gen-mypy_grpc"


def generate(out_root: Path = ROOT) -> None:
    """Write the generated modules under ``out_root/ollama_optimizer/gen``."""
    args = [
        "protoc",
        f"-I{IMPORT_PREFIX}={PROTO_DIR}",
        f"-I{Path(protoc.__file__).parent / '_proto'}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--plugin=protoc-gen-mypy_grpc={GRPC_STUB_PLUGIN}",
        f"--mypy_grpc_out={out_root}",
        *(str(PROTO_DIR / name) for name in PROTO_FILES),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
