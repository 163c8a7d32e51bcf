"""The GPU path, proved in one run: NVDEC against PyAV, the GPU embedders against ONNX Runtime,
and the speed of each, side by side with the CPU baseline in the same run.

    python benchmarks/gpu/prove.py --vtest PATH/vtest.avi [--out DIR] [--cpu-only]

benchmarks/gpu/prove.sh sets up the device machine and runs this (README.md beside it).

1. Parity on real footage (vtest.avi, OpenCV's sample, re-encoded here with PyAV in every codec
   NVDEC takes, plus two it must hand to the CPU): the sampled frames' timestamps (exact) and
   PSNR of NVDEC's RGB against PyAV's; NVDEC decodes on a fresh thread, as the pipeline does.
2. Embeddings: cosine of torch-on-CUDA (fp16 autocast), and TensorRT where installed, against
   ONNX Runtime on the CPU; for host frames and for NVDEC's CUDA frames.
3. Speed on a 1080p H.264 file made from vtest.avi (looped, scaled, libx264 veryfast CRF 23):
   decode fps (every frame, RGB), embed img/s (batch 32 at the model's 288x512 input), and
   ingest x realtime at 1 fps (the pipeline, one file and several at once) for NVDEC + torch,
   PyAV + torch, and PyAV + ONNX Runtime (the CPU baseline).
Prints one table and writes prove.json under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import numpy as np

#: Parity clips: name -> (encoder, suffix, pix_fmt, options, NVDEC expected to take it)
PARITY = {
    "h264_mp4": ("libx264", "mp4", "yuv420p", {"preset": "veryfast"}, True),
    "h264_mkv": ("libx264", "mkv", "yuv420p", {"preset": "veryfast"}, True),  # approximate seeks
    "hevc_mkv": ("libx265", "mkv", "yuv420p", {"preset": "fast", "x265-params": "log-level=none"}, True),
    "hevc10_mkv": ("libx265", "mkv", "yuv420p10le", {"preset": "fast", "x265-params": "log-level=none"}, True),
    "vp9_webm": ("libvpx-vp9", "webm", "yuv420p", {"deadline": "realtime", "cpu-used": "8"}, True),
    "av1_mkv": ("libsvtav1", "mkv", "yuv420p", {"preset": "10"}, True),
    "h264_422_mp4": ("libx264", "mp4", "yuv422p", {"preset": "veryfast"}, False),
}


def vtest_frames(vtest: Path, limit: int | None = None) -> list[np.ndarray]:
    with av.open(str(vtest)) as c:
        out = []
        for f in c.decode(video=0):
            out.append(f.to_ndarray(format="rgb24"))
            if limit and len(out) >= limit:
                break
    return out


def encode(path: Path, frames, codec: str, pix_fmt: str, options: dict, rate: int = 25, size=None) -> Path:
    """Encode RGB frames (an iterable) at `rate` fps, scaled to `size` (w, h) when given."""
    if path.exists():
        return path
    tmp = path.with_name("part-" + path.name)
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream(codec, rate=rate, options=options)
        stream.pix_fmt = pix_fmt
        stream.thread_type = "AUTO"
        first = True
        for img in frames:
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            if first:
                stream.width, stream.height = size or (vf.width, vf.height)
                first = False
            vf = vf.reformat(width=stream.width, height=stream.height, format=pix_fmt)
            for p in stream.encode(vf):
                out.mux(p)
        for p in stream.encode():
            out.mux(p)
    tmp.rename(path)
    return path


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def on_fresh_thread(fn):
    box: dict = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # reported, not raised: one failure must not end the proof
            box["error"] = f"{type(exc).__name__}: {exc}"
            box["trace"] = traceback.format_exc(limit=6)

    th = threading.Thread(target=run, name="prove-decode")
    th.start()
    th.join()
    return box


def compare_decoders(path: Path, expected: str, gpu: bool) -> dict:
    """Samples at 3 fps by PyAV and by `decoder=auto` (NVDEC where it takes the file), the latter
    on a fresh thread as the pipeline decodes."""
    from frameseek.media import TimeGridSampler, open_decoder

    cpu_dec = open_decoder(path, backend="cpu")
    cpu = [(f.t, f.image) for f in cpu_dec.frames(TimeGridSampler(3.0))]
    cpu_dec.close()
    row: dict = {"expected": expected, "samples": len(cpu)}
    if not gpu:
        return row

    def gpu_decode():
        dec = open_decoder(path, backend="auto", gpu_id=0)
        got = [(f.t, f.to_numpy()) for f in dec.frames(TimeGridSampler(3.0))]
        return dec.name, got, dict(dec.stats.extra)

    box = on_fresh_thread(gpu_decode)
    if "error" in box:
        row.update(error=box["error"], trace=box["trace"])
        return row
    name_used, got, extra = box["value"]
    row.update(decoder=name_used, notes=extra, gpu_samples=len(got))
    if len(got) == len(cpu):
        row["max_dt_s"] = max(abs(a[0] - b[0]) for a, b in zip(got, cpu))
        ps = [psnr(a[1], b[1]) for a, b in zip(got, cpu)]
        row["psnr_min"], row["psnr_mean"] = min(ps), float(np.mean(ps))
    return row


def parity(work: Path, vtest: Path, gpu: bool) -> dict:
    rows = {"vtest_avi": compare_decoders(vtest, "nvdec", gpu)}  # the footage itself: MPEG-4 part 2 in AVI
    frames = vtest_frames(vtest, 250)  # 10 s of it, re-encoded
    for name, (enc, suffix, pix_fmt, opts, nvdec_expected) in PARITY.items():
        if enc not in av.codecs_available:
            rows[name] = {"error": f"no {enc} encoder in this PyAV"}
            continue
        path = encode(work / f"parity_{name}.{suffix}", frames, enc, pix_fmt, opts)
        rows[name] = compare_decoders(path, "nvdec" if nvdec_expected else "pyav", gpu)
    return rows


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def embedders(gpu: bool) -> dict:
    from frameseek.embed import EmbedderSettings, load_embedder, tensorrt_available, torch_importable

    out = {"onnx_cpu": load_embedder(EmbedderSettings(backend="onnx"))}
    if torch_importable()[0]:
        from frameseek.embed import TorchEmbedder

        spec = EmbedderSettings().resolve_model()
        out["torch_cpu"] = TorchEmbedder(spec, EmbedderSettings(backend="torch"), device="cpu")
        if gpu:
            out["torch_cuda"] = load_embedder(EmbedderSettings(backend="torch"))
    if gpu and tensorrt_available(EmbedderSettings().resolve_model())[0]:
        out["tensorrt"] = load_embedder(EmbedderSettings(backend="tensorrt"))
    return out


def embedding_parity(embs: dict, vtest: Path, gpu_frames) -> dict:
    frames = vtest_frames(vtest, 400)[::25]
    ref = embs["onnx_cpu"].embed(frames)
    rows = {}
    for name, emb in embs.items():
        if name == "onnx_cpu":
            continue
        cos = cosines(emb.embed(frames), ref)
        rows[name] = {"host_frames_cos_min": float(cos.min()), "host_frames_cos_mean": float(cos.mean())}
        if gpu_frames is not None and getattr(emb, "cuda_device", None) is not None:
            cos = cosines(emb.embed(gpu_frames(frames)), ref)
            rows[name]["cuda_frames_cos_min"] = float(cos.min())
    return rows


def embed_speed(emb, seconds: float = 8.0, batch: int = 32) -> float:
    """Images per second through embed_preprocessed at the model's 16:9 input (288x512)."""
    rng = np.random.default_rng(0)
    imgs = emb.preprocess([rng.integers(0, 256, (288, 512, 3), np.uint8) for _ in range(batch)])
    emb.embed_preprocessed(imgs)  # warm-up (compiles, autotunes)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        emb.embed_preprocessed(imgs)
        n += batch
    return n / (time.perf_counter() - t0)


def decode_speed(path: Path, backend: str) -> dict:
    """Every frame decoded to RGB (full size), on a fresh thread."""
    from frameseek.media import TimeGridSampler, open_decoder

    def run():
        dec = open_decoder(path, backend=backend)
        t0, n = time.perf_counter(), 0
        for _ in dec.frames(TimeGridSampler(None)):
            n += 1
        wall = time.perf_counter() - t0
        return {"decoder": dec.name, "frames": n, "fps": n / wall, "notes": dict(dec.stats.extra)}

    box = on_fresh_thread(run)
    return box.get("value") or {"error": box["error"]}


def ingest(path: Path, emb, decoder: str, parallel: int) -> dict:
    """embed_media at 1 fps, `parallel` copies of the file at once: video seconds per wall second."""
    from frameseek.pipeline import SamplingSettings, embed_media

    def one(_):
        return embed_media(path, emb, SamplingSettings(fps=1.0, decoder=decoder))

    t0 = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        results = list(pool.map(one, range(parallel)))
    wall = time.perf_counter() - t0
    r = results[0]
    return {
        "x_realtime": sum(x.duration for x in results) / wall,
        "parallel": parallel,
        "decoder": r.decoder,
        "embedder": r.embedder,
        "samples": len(r),
        "duration_s": r.duration,
        "wall_s": wall,
        "decoder_notes": r.stats.get("decoder_notes", {}),
    }


#: Called after every step (main sets it to write prove.json): a run cut short by its time limit
#: still leaves what it measured.
AFTER_STEP = [lambda: None]


def guarded(results: dict, key: str, fn):
    t0 = time.perf_counter()
    try:
        results[key] = fn()
    except Exception as exc:
        results[key] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc(limit=6)}
    print(f"[{time.perf_counter() - t0:6.1f} s] {key}", flush=True)
    AFTER_STEP[0]()


def table(doc: dict) -> str:
    lines = ["", f"GPU path proof on {doc['meta']['device']} ({doc['meta']['mode']})", ""]
    lines.append(
        f"{'parity clip':<14} {'want':>5} {'got':>6} {'samples':>8} {'max dt s':>9} {'PSNR min/mean dB':>17}  notes"
    )
    for name, r in doc.get("parity", {}).items():
        if "error" in r and "decoder" not in r:
            lines.append(f"{name:<14} {r.get('expected', ''):>5} {'ERROR':>6}  {r['error']}")
            continue
        dt = f"{r['max_dt_s']:.1e}" if "max_dt_s" in r else "-"
        ps = f"{r['psnr_min']:.1f}/{r['psnr_mean']:.1f}" if "psnr_min" in r else "-"
        lines.append(
            f"{name:<14} {r['expected']:>5} {r.get('decoder', '-'):>6} {r['samples']:>8} {dt:>9} {ps:>17}  "
            f"{r.get('notes') or ''}"
        )
    lines += [
        "",
        f"{'embedder vs ONNX Runtime CPU':<30} {'cos min (host)':>15} {'cos mean':>9} {'cos min (CUDA frames)':>22}",
    ]
    for name, r in doc.get("embedding_cosine", {}).items():
        if "error" in r:
            lines.append(f"{name:<30} ERROR {r['error']}")
            continue
        cuda = f"{r['cuda_frames_cos_min']:.5f}" if "cuda_frames_cos_min" in r else "-"
        lines.append(f"{name:<30} {r['host_frames_cos_min']:>15.5f} {r['host_frames_cos_mean']:>9.5f} {cuda:>22}")
    tc = doc.get("torch_compile")
    if tc:
        lines.append(
            f"{'torch_cuda compiled':<30} {tc['host_frames_cos_min']:>15.5f} {tc['host_frames_cos_mean']:>9.5f}"
            if "img_s" in tc
            else f"{'torch_cuda compiled':<30} ERROR {tc.get('error')}"
        )
    lines += ["", "speed (1080p H.264, 25 fps)"]
    for name, r in doc.get("decode_fps", {}).items():
        val = f"{r['fps']:.0f} fps ({r['decoder']}, {r['frames']} frames)" if "fps" in r else f"ERROR {r['error']}"
        lines.append(f"  decode {name:<22} {val}")
    for name, r in doc.get("embed_img_s", {}).items():
        lines.append(f"  embed  {name:<22} " + (f"{r:.0f} img/s" if isinstance(r, float) else f"ERROR {r}"))
    if tc and "img_s" in tc:
        lines.append(f"  embed  {'torch_cuda compiled':<22} {tc['img_s']:.0f} img/s (compiled in {tc['load_s']:.0f} s)")
    for name, r in doc.get("ingest", {}).items():
        val = (
            f"{r['x_realtime']:.1f}x realtime ({r['decoder']} + {r['embedder']}, {r['parallel']} at once)"
            if "x_realtime" in r
            else f"ERROR {r['error']}"
        )
        lines.append(f"  ingest {name:<22} {val}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vtest", type=Path, required=True, help="OpenCV's vtest.avi")
    ap.add_argument("--work", type=Path, default=Path("/tmp/frameseek-prove"))
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "benchmarks/results"))
    ap.add_argument("--cpu-only", action="store_true", help="everything but the GPU steps (a dry run)")
    ap.add_argument("--loops", type=int, default=3, help="vtest.avi repeats in the 1080p file (32 s each)")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)

    from frameseek.embed import torch_cuda_available
    from frameseek.media.nvdec import nvdec_available

    gpu = not args.cpu_only
    nv_ok, nv_why = nvdec_available()
    tc_ok, tc_why = torch_cuda_available()
    if gpu and not (nv_ok and tc_ok):
        print(f"warning: NVDEC: {nv_why}; torch: {tc_why}", flush=True)
    device = tc_why if tc_ok else platform.processor() or platform.machine()
    mode = "cpu-only dry run" if args.cpu_only else "GPU"
    meta = {"device": device, "mode": mode, "nvdec": nv_why, "torch_cuda": tc_why, "cpus": os.cpu_count()}
    doc: dict = {"meta": dict(meta, av=av.__version__)}
    AFTER_STEP[0] = lambda: (args.out / "prove.json").write_text(json.dumps(doc, indent=2, default=str))
    guarded(doc, "parity", lambda: parity(args.work, args.vtest, gpu))
    embs: dict = {}

    def load_embedders() -> dict:
        embs.update(embedders(gpu))
        return {k: f"{v.name}@{v.backend}" for k, v in embs.items()}

    guarded(doc, "embedders", load_embedders)

    def to_cuda(frames):
        import torch

        return [torch.from_numpy(f).cuda() for f in frames]

    guarded(doc, "embedding_cosine", lambda: embedding_parity(embs, args.vtest, to_cuda if gpu else None))
    big = args.work / f"vtest_1080p_x{args.loops}.mp4"

    def make_1080p() -> str:
        frames = (f for _ in range(args.loops) for f in vtest_frames(args.vtest))
        return str(encode(big, frames, "libx264", "yuv420p", {"preset": "veryfast", "crf": "23"}, size=(1920, 1080)))

    guarded(doc, "make_1080p", make_1080p)
    doc["decode_fps"] = {}
    guarded(doc["decode_fps"], "pyav", lambda: decode_speed(big, "cpu"))
    if gpu:
        guarded(doc["decode_fps"], "nvdec", lambda: decode_speed(big, "nvdec"))
    doc["embed_img_s"] = {}
    for name, emb in embs.items():
        if name != "torch_cpu":  # the CPU baseline is ONNX Runtime
            guarded(doc["embed_img_s"], name, lambda emb=emb, s=4.0 if "cpu" in name else 8.0: embed_speed(emb, s))
    doc["ingest"] = {}
    guarded(doc["ingest"], "pyav+onnx_cpu", lambda: ingest(big, embs["onnx_cpu"], "cpu", 1))
    gpu_emb = embs.get("tensorrt") or embs.get("torch_cuda")
    if gpu and gpu_emb is not None:
        for parallel in (1, 4, 8):
            guarded(doc["ingest"], f"nvdec+gpu x{parallel}", lambda p=parallel: ingest(big, gpu_emb, "auto", p))
        guarded(doc["ingest"], "pyav+gpu x8", lambda: ingest(big, gpu_emb, "cpu", 8))
    if gpu and "torch_cuda" in embs:
        # Last: compiling takes a minute or two, and only this measurement says whether it pays.
        def compiled() -> dict:
            from frameseek.embed import EmbedderSettings, load_embedder

            t0 = time.perf_counter()
            emb = load_embedder(EmbedderSettings(backend="torch", torch_compile=True))
            load_s = time.perf_counter() - t0
            cos = embedding_parity({"onnx_cpu": embs["onnx_cpu"], "compiled": emb}, args.vtest, to_cuda)
            return {"load_s": load_s, "img_s": embed_speed(emb), **cos["compiled"]}

        guarded(doc, "torch_compile", compiled)
    text = table(doc)
    print(text)
    AFTER_STEP[0]()
    (args.out / "prove.txt").write_text(text + "\n")
    print(f"wrote {args.out / 'prove.json'}")


if __name__ == "__main__":
    main()
