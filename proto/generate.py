"""Generate the Python protobuf/gRPC code for proto/frameseek/v1 into server/frameseek/v1.

`make proto` runs this. The generated files are committed (users of a wheel/sdist need them and
grpcio-tools is only a dev dependency); tests/server/test_proto_generated.py regenerates into a
temporary directory and fails when the committed files differ, so the protos and the code cannot
drift apart. The output depends on the grpcio-tools version, which is pinned in pyproject.toml.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PACKAGE_DIR = pathlib.Path("frameseek") / "v1"


def proto_files() -> list[pathlib.Path]:
    return sorted((PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))


def generate(out_root: pathlib.Path) -> list[pathlib.Path]:
    """Write *_pb2.py, *_pb2.pyi and *_pb2_grpc.py under out_root/frameseek/v1; return them."""
    out_dir = out_root / PACKAGE_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    import grpc_tools

    wkt = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    files = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{wkt}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    init = out_dir / "__init__.py"
    init.write_text('"""Generated from proto/frameseek/v1 by `make proto`; do not edit."""\n')
    return sorted(p for p in out_dir.iterdir() if p.suffix in (".py", ".pyi"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "server")
    ns = ap.parse_args(argv)
    for p in generate(ns.out):
        print(p.relative_to(ns.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
