"""The committed *_pb2.py modules must be exactly what protoc makes from the .proto sources."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = Path("transforms/core/wire/proto")
PROTOS = [str(PROTO_DIR / name) for name in ("remote_v1.proto", "remote_v1_view.proto", "remote_v2.proto",
                                                 "remote_read.proto")]


@pytest.mark.parametrize("proto", PROTOS)
def test_generated_code_is_current(tmp_path, proto):
    pytest.importorskip("grpc_tools")
    shutil.copytree(ROOT / PROTO_DIR, tmp_path / PROTO_DIR)
    for generated in (tmp_path / PROTO_DIR).glob("*_pb2.py*"):
        generated.unlink()
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I.", "--python_out=.", "--pyi_out=.", proto],
        cwd=tmp_path, check=True,
    )
    for suffix in ("_pb2.py", "_pb2.pyi"):
        name = Path(proto).stem + suffix
        fresh = (tmp_path / PROTO_DIR / name).read_text()
        committed = (ROOT / PROTO_DIR / name).read_text()
        assert fresh == committed, f"{name} is stale: run `make proto`"
