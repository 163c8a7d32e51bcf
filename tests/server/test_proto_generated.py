"""The committed generated code must be exactly what `make proto` produces from proto/."""

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _load_generator():
    spec = importlib.util.spec_from_file_location("proto_generate", ROOT / "proto" / "generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_generated_python_matches_protos(tmp_path):
    gen = _load_generator()
    fresh = gen.generate(tmp_path)
    assert fresh, "no proto files found"
    committed_dir = ROOT / "server" / "frameseek" / "v1"
    fresh_names = sorted(p.name for p in fresh)
    committed_names = sorted(p.name for p in committed_dir.iterdir() if p.suffix in (".py", ".pyi"))
    assert fresh_names == committed_names, "run `make proto` and commit the result"
    for p in fresh:
        assert p.read_text() == (committed_dir / p.name).read_text(), (
            f"{p.name} is stale: run `make proto` and commit the result"
        )


def test_service_surface():
    from frameseek.v1 import frameseek_pb2

    svc = frameseek_pb2.DESCRIPTOR.services_by_name["FrameSeek"]
    methods = {m.name for m in svc.methods}
    assert {
        "CreateCollection",
        "GetCollection",
        "ListCollections",
        "DeleteCollection",
        "IngestVideo",
        "IngestImage",
        "GetIngestJob",
        "WatchIngestJob",
        "SearchByImage",
        "SearchByVideo",
        "SearchByVector",
        "SearchByAudio",
        "GetVideo",
        "ListVideos",
        "DeleteVideo",
        "GetStats",
    } <= methods
    assert svc.methods_by_name["IngestVideo"].client_streaming
    assert svc.methods_by_name["SearchByAudio"].client_streaming
    assert svc.methods_by_name["WatchIngestJob"].server_streaming
