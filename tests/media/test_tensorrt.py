"""Everything about the TensorRT backend that runs without TensorRT: cache keys, profiles,
selection and the logged fallback to ONNX Runtime."""

from __future__ import annotations

import logging

import pytest

from frameseek.embed import (
    EmbedderSettings,
    InputProfile,
    ModelSpec,
    OnnxEmbedder,
    PreprocessSpec,
    TensorRTUnavailable,
    engine_cache_key,
    engine_path,
    load_embedder,
    select_backend,
    tensorrt_available,
)
from frameseek.embed.tensorrt_backend import file_sha256

trt_missing = not tensorrt_available()[0]


def test_input_profile_from_spec():
    spec = EmbedderSettings().resolve_model()
    p = InputProfile.for_spec(spec, max_batch=32)
    assert p.min_shape == (1, 144, 144, 3)  # coarse query views down to MIN_INPUT_SCALE
    assert p.opt_shape == (16, 288, 512, 3)
    assert p.max_shape == (32, 1024, 1024, 3)
    fixed = spec.model_copy(
        update={"preprocess": PreprocessSpec(resize="fixed", fixed_hw=(288, 288), layout="NCHW", dtype="float32")}
    )
    q = InputProfile.for_spec(fixed, max_batch=8)
    assert q.min_shape == (1, 3, 288, 288) and q.max_shape == (8, 3, 288, 288)


def test_engine_cache_key_covers_every_input(tmp_path):
    spec = EmbedderSettings().resolve_model()
    h = file_sha256(spec.path)
    assert len(h) == 64 and h == file_sha256(spec.path)
    prof = InputProfile.for_spec(spec, 32)
    base = engine_cache_key(h, "10.9.0", (9, 0), prof)
    assert base == engine_cache_key(h, "10.9.0", (9, 0), prof)  # stable
    variants = {
        engine_cache_key("0" * 64, "10.9.0", (9, 0), prof),
        engine_cache_key(h, "11.0.0", (9, 0), prof),
        engine_cache_key(h, "10.9.0", (8, 9), prof),
        engine_cache_key(h, "10.9.0", (9, 0), InputProfile.for_spec(spec, 64)),
    }
    assert base not in variants and len(variants) == 4
    p = engine_path(tmp_path, "sscd_distilled", base)
    assert p.parent == tmp_path and p.name.startswith("sscd_distilled-") and p.suffix == ".engine"
    # a different file with other bytes hashes differently
    other = tmp_path / "m.onnx"
    other.write_bytes(spec.path.read_bytes()[:-1] + b"\x00")
    assert file_sha256(other) != h


def test_sscd_full_is_never_sent_to_tensorrt():
    spec = EmbedderSettings(model="sscd").resolve_model()
    ok, why = tensorrt_available(spec)
    assert not ok and "not TensorRT-compatible" in why
    assert select_backend(EmbedderSettings(model="sscd"), spec)[0] == "onnx"


@pytest.mark.skipif(not trt_missing, reason="TensorRT is installed here")
def test_auto_falls_back_to_onnx_runtime_with_logged_reason(caplog):
    settings = EmbedderSettings()
    backend, why = select_backend(settings, settings.resolve_model())
    assert backend == "onnx" and why
    with caplog.at_level(logging.INFO, logger="frameseek.embed"):
        emb = load_embedder(settings)
    assert isinstance(emb, OnnxEmbedder) and emb.backend == "onnxruntime" and emb.dim == 512
    assert any(why in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(not trt_missing, reason="TensorRT is installed here")
def test_explicit_tensorrt_request_fails_loudly():
    with pytest.raises(TensorRTUnavailable):
        load_embedder(EmbedderSettings(backend="tensorrt"))


def test_model_spec_from_onnx_path(tmp_path):
    spec = EmbedderSettings().resolve_model()
    s = EmbedderSettings(model=str(spec.path)).resolve_model()
    assert isinstance(s, ModelSpec) and s.path == spec.path and s.name == "sscd_distilled"


def test_driver_probes_explain_the_missing_gpu():
    from frameseek.embed.tensorrt_backend import cuda_compute_capability
    from frameseek.media.nvdec import cuda_driver_device_count

    n, why = cuda_driver_device_count()
    if n:
        major, minor = cuda_compute_capability(0)
        assert major >= 3 and minor >= 0
    else:
        assert "driver" in why or "device" in why
        with pytest.raises(TensorRTUnavailable):
            cuda_compute_capability(0)


@pytest.mark.gpu
@pytest.mark.skipif(trt_missing, reason="TensorRT is not installed (the operator installs it)")
def test_tensorrt_matches_onnx_runtime_and_serves_concurrent_callers(tmp_path):
    """Embeddings within cosine 0.999 of the CPU path; threads with different input sizes each get
    their own execution context, so no call sees another's shape or buffers."""
    from .test_torch_backend import assert_concurrent_calls_agree, cosines, real_frames

    trt = load_embedder(EmbedderSettings(backend="tensorrt", engine_cache_dir=tmp_path))
    ref_emb = load_embedder(EmbedderSettings(backend="onnx"))
    frames = real_frames()
    alone = trt.embed(frames)
    assert cosines(alone, ref_emb.embed(frames)).min() >= 0.999
    jobs = [frames[:5], frames[5:], frames[::2], [frames[6]] * 3]
    expected = [trt.embed(j) for j in jobs]
    assert_concurrent_calls_agree(trt.embed, jobs, expected, repeats=5, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(trt_missing, reason="TensorRT is not installed (the operator installs it)")
def test_auto_builds_a_missing_engine_in_the_background(tmp_path):
    """A start without a cached engine does not wait minutes for TensorRT: it embeds on the next
    backend while the engine is built, and the next start loads the cached engine."""
    from frameseek.embed import BACKGROUND_BUILDS, engine_file_for

    settings = EmbedderSettings(engine_cache_dir=tmp_path)
    target = engine_file_for(settings.resolve_model(), settings)
    first = load_embedder(settings)
    assert first.backend != "tensorrt" and target in BACKGROUND_BUILDS
    BACKGROUND_BUILDS[target].join()
    assert target.exists()
    assert load_embedder(settings).backend == "tensorrt"
