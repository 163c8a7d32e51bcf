"""Embedders: determinism, normalisation, preprocessing against an independent reference,
copy robustness, pluggable models."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from frameseek.embed import EmbedderSettings, ModelSpec, OnnxEmbedder, PreprocessSpec, load_embedder
from frameseek.embed.preprocess import resize_rgb, same_size_runs, to_tensor

from .conftest import OPENCV_DATA


def load(name: str) -> np.ndarray:
    p = OPENCV_DATA / name
    if not p.exists():
        pytest.skip("opencv-doc not installed")
    return np.asarray(Image.open(p).convert("RGB"))


def ref_resize(img: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """Float64 antialiased bilinear (triangle filter widened by the scale factor), separable."""

    def weights(n_in: int, n_out: int) -> np.ndarray:
        scale = n_in / n_out
        support = max(scale, 1.0)
        centers = (np.arange(n_out) + 0.5) * scale
        x = np.arange(n_in) + 0.5
        w = np.maximum(0.0, 1.0 - np.abs(x[None, :] - centers[:, None]) / support)
        return w / w.sum(axis=1, keepdims=True)

    wy, wx = weights(img.shape[0], oh), weights(img.shape[1], ow)
    # horizontal pass, then vertical, with the intermediate rounded to 8 bits as PIL stores it
    out = np.clip(np.round(np.einsum("pw,hwc->hpc", wx, img.astype(np.float64), optimize=True)), 0, 255)
    out = np.einsum("oh,hpc->opc", wy, out, optimize=True)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("shape", [(480, 640), (1080, 1920), (96, 128), (500, 333)])
def test_cpu_resize_matches_float64_reference(shape):
    rng = np.random.default_rng(shape[0])
    img = load("baboon.jpg")
    img = np.asarray(Image.fromarray(img).resize(shape[::-1]))  # any content of that size
    img = np.clip(img.astype(int) + rng.integers(-5, 6, img.shape), 0, 255).astype(np.uint8)
    spec = PreprocessSpec()
    oh, ow = spec.output_hw(*shape)
    assert min(oh, ow) == 288
    got = resize_rgb(img, (oh, ow)).astype(int)
    ref = ref_resize(img, oh, ow).astype(int)
    # PIL works in fixed point (22-bit weights, integer rounding): a level or two off, rarely
    assert np.abs(got - ref).max() <= 2
    assert np.abs(got - ref).mean() < 0.1
    # while a resize without antialiasing is far off on this high-detail content
    naive = np.asarray(Image.fromarray(img).resize((ow, oh), Image.Resampling.NEAREST)).astype(int)
    if oh < shape[0]:
        assert np.abs(naive - ref).mean() > 3


def test_output_hw_and_fixed():
    s = PreprocessSpec()
    assert s.output_hw(1080, 1920) == (288, 512)
    assert s.output_hw(1920, 1080) == (512, 288)
    assert s.output_hw(100, 10000) == (288, 1024)  # long side capped
    assert PreprocessSpec(resize="fixed", fixed_hw=(288, 288)).output_hw(1080, 1920) == (288, 288)
    # a coarse view: the short side at a fraction of `size` (SamplingSettings.coarse_scale)
    assert s.output_hw(1080, 1920, scale=2 / 3) == (192, 341)
    assert s.output_hw(60, 80, scale=0.5) == (144, 192)
    assert s.scalable and not PreprocessSpec(resize="fixed", fixed_hw=(288, 288)).scalable
    for bad_scale in (0.49, 1.01, 0.0):
        with pytest.raises(ValueError, match="scale"):
            s.output_hw(1080, 1920, scale=bad_scale)
    with pytest.raises(ValueError):
        PreprocessSpec(resize="fixed")
    with pytest.raises(ValueError):
        PreprocessSpec(mean=(0.5, 0.5, 0.5))  # uint8 input cannot be normalised


def test_to_tensor_layouts_and_normalisation():
    imgs = [np.full((4, 6, 3), (10, 20, 30), np.uint8), np.full((4, 6, 3), (40, 50, 60), np.uint8)]
    spec = PreprocessSpec(layout="NCHW", dtype="float32", scale=1 / 255, mean=(0.1, 0.2, 0.3), std=(0.5, 0.5, 0.5))
    x = to_tensor(imgs, spec)
    assert x.shape == (2, 3, 4, 6) and x.dtype == np.float32
    np.testing.assert_allclose(x[1, :, 0, 0], (np.array([40, 50, 60]) / 255 - [0.1, 0.2, 0.3]) / 0.5, atol=1e-6)
    assert to_tensor(imgs, PreprocessSpec()).dtype == np.uint8
    assert list(same_size_runs([np.zeros((2, 2))] * 3 + [np.zeros((3, 2))] * 2, 2)) == [(0, 2), (2, 3), (3, 5)]


def test_deterministic_normalised_and_batch_invariant(embedder):
    frames = [load("baboon.jpg"), load("fruits.jpg"), load("home.jpg"), load("baboon.jpg")[:300, :400]]
    a = embedder.embed(frames)
    b = embedder.embed(frames)
    assert a.shape == (4, 512) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    singles = np.concatenate([embedder.embed([f]) for f in frames])
    np.testing.assert_allclose(a, singles, atol=1e-4)
    assert embedder.embed([]).shape == (0, 512)


def test_copies_are_close_and_unrelated_images_far(embedder):
    src = load("baboon.jpg")
    buf = io.BytesIO()
    Image.fromarray(src).resize((src.shape[1] * 2 // 3, src.shape[0] * 2 // 3)).save(buf, "JPEG", quality=25)
    copy = np.asarray(Image.open(buf).convert("RGB"))
    third = "lena.jpg" if (OPENCV_DATA / "lena.jpg").exists() else "board.jpg"
    others = [load(n) for n in ("fruits.jpg", "home.jpg", third)]
    e = embedder.embed([src, copy, *others])
    sims = e @ e[0]
    assert sims[1] > 0.9
    assert (sims[2:] < 0.5).all(), sims
    flipped = embedder.embed([src], flip=True)[0]
    assert float(flipped @ embedder.embed([src[:, ::-1]])[0]) > 0.9999


def test_video_frame_and_its_reencoded_copy_are_close(embedder, clips):
    from frameseek.media import TimeGridSampler, open_decoder

    names = [n for n in ("h264_mp4", "vp9_webm", "mpeg4_avi") if n in clips]
    got = []
    for n in names:
        dec = open_decoder(clips[n])
        got.append([f.image for f in dec.frames(TimeGridSampler(1.0))])
        dec.close()
    for t in range(4):
        e = embedder.embed([g[t] for g in got])
        assert (e @ e[0] > 0.9).all(), (t, e @ e[0])


def test_settings_and_model_resolution(tmp_path):
    assert EmbedderSettings().resolve_model().name == "sscd_distilled"
    assert EmbedderSettings(model="sscd").resolve_model().tensorrt_compatible is False
    with pytest.raises(ValueError, match="unknown model"):
        EmbedderSettings(model="nope").resolve_model()


def test_sscd_full_model_is_selectable_and_agrees_with_distilled():
    frames = [load("baboon.jpg"), load("fruits.jpg")]
    full = load_embedder(EmbedderSettings(model="sscd", backend="onnx"))
    dist = load_embedder(EmbedderSettings(model="sscd_distilled", backend="onnx"))
    a, b = full.embed(frames), dist.embed(frames)
    assert full.dim == dist.dim == 512
    assert (np.sum(a * b, axis=1) > 0.7).all()  # the student reproduces the teacher's space


def test_pluggable_nchw_float_model(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    # x: float32[N,3,H,W] -> mean over H,W -> [N,3]: checks layout, scale, mean/std end to end
    node = helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=0)
    graph = helper.make_graph(
        [node],
        "mean",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "mean.onnx"
    onnx.save(model, str(path))
    spec = ModelSpec(
        name="mean",
        path=path,
        l2_normalize=False,
        preprocess=PreprocessSpec(
            resize="fixed",
            fixed_hw=(32, 32),
            layout="NCHW",
            dtype="float32",
            scale=1 / 255,
            mean=(0.5, 0.5, 0.5),
            std=(0.25, 0.25, 0.25),
        ),
    )
    emb = OnnxEmbedder(spec)
    assert emb.dim == 3
    out = emb.embed([np.full((50, 70, 3), (255, 0, 128), np.uint8)])
    np.testing.assert_allclose(out[0], [(1 - 0.5) / 0.25, (0 - 0.5) / 0.25, (128 / 255 - 0.5) / 0.25], atol=1e-5)
    with pytest.raises(ValueError, match="input x is tensor\\(float\\)"):
        OnnxEmbedder(spec.model_copy(update={"preprocess": PreprocessSpec()}))


# ----------------------------------------------------------------------------------------------
# The decoder's one-pass path (swscale: RGB conversion + downscale to the model input size)


@pytest.mark.parametrize("shape", [(480, 640), (720, 960), (576, 768), (500, 333)])
def test_swscale_downscale_matches_float64_reference(shape):
    """On RGB input the swscale path is the same antialiased triangle filter as PIL's BILINEAR.

    Tolerance (measured on this content): inside a 2-pixel border at most 6 levels off the float64
    reference, 1 on average; swscale treats the last rows/columns slightly differently (edge
    clamping), up to ~15 levels there, so the border counts only in the mean.
    """
    import av

    from frameseek.media.decode import frame_to_rgb

    rng = np.random.default_rng(shape[0])
    img = np.asarray(Image.fromarray(load("baboon.jpg")).resize(shape[::-1]))
    img = np.clip(img.astype(int) + rng.integers(-5, 6, img.shape), 0, 255).astype(np.uint8)
    oh, ow = PreprocessSpec().output_hw(*shape)
    got = frame_to_rgb(av.VideoFrame.from_ndarray(img, format="rgb24"), (oh, ow))
    assert got.shape == (oh, ow, 3) and got.dtype == np.uint8
    diff = np.abs(got.astype(int) - ref_resize(img, oh, ow).astype(int))
    assert diff[2:-2, 2:-2].max() <= 6
    assert diff.mean() < 1.0
    # antialiased: a point-sampled resize is far off on this high-detail content
    naive = np.asarray(Image.fromarray(img).resize((ow, oh), Image.Resampling.NEAREST)).astype(int)
    assert np.abs(naive - ref_resize(img, oh, ow).astype(int)).mean() > 3 * diff.mean() + 3


def test_one_pass_decode_embeds_like_full_size_rgb_then_pil(embedder):
    """Real footage (YUV 4:2:0): frames the decoder downscales embed like the reference path
    (full-size RGB, then the PIL resize). Chroma is scaled from its own plane instead of being
    upsampled first, so pixels differ by about a level on average; retrieval must not notice."""
    from frameseek.media import TimeGridSampler, open_decoder

    path = OPENCV_DATA / "vtest.avi"
    if not path.exists():
        pytest.skip("opencv-doc not installed")

    def decode(hint):
        dec = open_decoder(path)
        try:
            return [f for f, _ in zip(dec.frames(TimeGridSampler(1.0), size_hint=hint), range(12))]
        finally:
            dec.close()

    full, small = decode(None), decode(embedder.input_size)
    assert [f.t for f in full] == [f.t for f in small]
    assert {f.image.shape for f in small} == {(288, 384, 3)} and {f.source_hw for f in small} == {(576, 768)}
    ref = embedder.preprocess([f.image for f in full])
    diff = np.abs(np.stack(ref).astype(int) - np.stack([f.image for f in small]).astype(int))
    assert diff.mean() < 2.0
    a = embedder.embed([f.image for f in full])
    b = embedder.embed([f.image for f in small])
    cos = np.sum(a * b, axis=1)
    assert cos.min() >= 0.98, cos  # measured >= 0.998 on this clip, >= 0.995 on all bench files
