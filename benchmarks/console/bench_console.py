"""The web console's two targets, measured in Debian's chromium (Playwright), beside the gRPC calls
under them:

    python -m benchmarks.console.bench_console [--videos 10000] [--repeat 10]

Set-up (one run, one machine):
- a data dir holding `--videos` synthetic videos of 5 samples each, written through the storage
  layer by `benchmarks.load.bench_search.fill` (collection `bench`; no thumbnails: they are not
  ingested media) and cached under build/console-bench/; plus opencv-doc's vtest.avi, ingested
  through the running server (default collection, with its thumbnails and original);
- `frameseek serve --http-address 127.0.0.1:0` on it (default settings, model on the CPU).

Timed:
1. Library first paint: a fresh browser context opens /library (all collections, 50 per page, the
   default) `--repeat` times. First contentful paint (the browser's paint timing) and "rows
   rendered" (console.js sets body[data-rendered] after the first page's rows are in the DOM),
   both from navigation start. Baseline: ListVideos(collections/-, page_size 50) through
   frameseek.client (what the page's data costs without HTTP, JSON and the browser).
2. Search by image, drop to rendered hits: on /search-image, a frame of vtest.avi (t = 42 s) is
   given to the file input (the drop handler's path); from its change event to the hits in the
   DOM (body[data-started] -> body[data-rendered]). Baseline: SearchByImage with the same bytes
   through frameseek.client. One untimed warm-up each.

3. What thumbnails cost an ingest: frameseek.pipeline.embed_media on vtest.avi (79.5 s, the
   server's reference sampling: 3 fps, coarse twins) in-process, with and without the console's
   on_sample hook (store.IngestFrames: shrink + JPEG-encode every sample on the decode thread),
   alternated, `--ingest-repeat` times each; media seconds per wall-clock second.

Prints a markdown table; writes benchmarks/results/console.json. Targets (issue 20, measured not
asserted): first paint <= 300 ms with 10k videos, search by image <= 1 s on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "benchmarks" / "results" / "console.json"
CACHE = ROOT / "build" / "console-bench"
VTEST = pathlib.Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
PER_VIDEO = 5


def stats(xs: list[float]) -> dict:
    xs = sorted(xs)
    return {
        "median_ms": statistics.median(xs),
        "p90_ms": xs[min(len(xs) - 1, int(0.9 * len(xs)))],
        "min_ms": xs[0],
        "n": len(xs),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--ingest-repeat", type=int, default=3)
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    from benchmarks.load.bench_search import fill
    from frameseek.v1 import frameseek_pb2 as pb
    from tests.console.conftest import launch_chromium, start_with_console
    from tests.server.helpers import ServerProcess, grab_frame

    data = CACHE / f"data-{args.videos}"
    filled = fill(data, args.videos * PER_VIDEO, 512, PER_VIDEO, profile="static")
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="console-bench-"))
    frame = grab_frame(VTEST, 42.0, tmp / "frame.png")
    srv = ServerProcess(data, http_address="127.0.0.1:0")
    try:
        url = start_with_console(srv)
        with srv.client(timeout=600) as c:
            c.ingest_video(VTEST)
            total = c.stub.ListVideos(pb.ListVideosRequest(parent="collections/-", page_size=1)).total_size
            api_list, api_search = [], []
            c.search_by_image(frame)  # warm-up
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                page = c.stub.ListVideos(pb.ListVideosRequest(parent="collections/-", page_size=50))
                api_list.append((time.perf_counter() - t0) * 1000)
                assert len(page.videos) == 50
                t0 = time.perf_counter()
                hits = c.search_by_image(frame, k=12).hits
                api_search.append((time.perf_counter() - t0) * 1000)
                assert hits and hits[0].video.filename == "vtest.avi"
        with sync_playwright() as p:
            browser = launch_chromium(p)
            fcp, rendered = [], []
            for i in range(args.repeat + 1):
                ctx = browser.new_context(viewport={"width": 1280, "height": 900})
                pg = ctx.new_page()
                pg.goto(f"{url}/library")
                pg.wait_for_function("document.body.dataset.rendered")
                t = pg.evaluate("""() => ({
                    fcp: (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime,
                    rendered: Number(document.body.dataset.rendered),
                    rows: document.querySelectorAll('#videos tbody tr').length,
                    html: performance.getEntriesByType('navigation')[0].responseEnd,
                    dcl: performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd,
                    api: performance.getEntriesByType('resource').filter(r => r.name.includes('/api/videos'))
                         .map(r => [r.startTime, r.responseEnd])[0]})""")
                print("  library load", {k: (round(v, 1) if isinstance(v, float) else v) for k, v in t.items()})
                assert t["rows"] == 50
                if i:  # the first is the warm-up
                    fcp.append(t["fcp"])
                    rendered.append(t["rendered"])
                ctx.close()
            ctx = browser.new_context(viewport={"width": 1280, "height": 900})
            pg = ctx.new_page()
            pg.goto(f"{url}/search-image")
            search = []
            for i in range(args.repeat + 1):
                pg.evaluate("delete document.body.dataset.rendered")
                pg.set_input_files("#file", frame)
                pg.wait_for_function("document.body.dataset.rendered")
                t = pg.evaluate("Number(document.body.dataset.rendered) - Number(document.body.dataset.started)")
                assert pg.locator(".hit").count() > 0
                if i:
                    search.append(t)
            ctx.close()
            browser.close()
    finally:
        srv.stop()
    ingest = ingest_overhead(args.ingest_repeat, tmp)
    results = {
        "ingest_x_realtime": ingest,
        "library_first_contentful_paint": stats(fcp),
        "library_rows_rendered": stats(rendered),
        "api_list_videos_page_50": stats(api_list),
        "search_by_image_drop_to_hits": stats(search),
        "api_search_by_image": stats(api_search),
    }
    rows = [
        ("Library /library: first contentful paint", "console", results["library_first_contentful_paint"], 300),
        ("Library /library: 50 rows rendered", "console", results["library_rows_rendered"], 300),
        ("ListVideos(collections/-, 50) via frameseek.client", "baseline", results["api_list_videos_page_50"], None),
        ("Search by image: drop -> hits rendered", "console", results["search_by_image_drop_to_hits"], 1000),
        ("SearchByImage via frameseek.client", "baseline", results["api_search_by_image"], None),
    ]
    print(
        f"\nweb console, {total} videos in the library ({filled['videos']} synthetic + vtest.avi), "
        f"{args.repeat} runs each, {os.cpu_count()} CPUs\n"
    )
    print("| measure | kind | median ms | p90 ms | min ms | target ms |")
    print("|---|---|---:|---:|---:|---:|")
    for name, kind, s, target in rows:
        print(f"| {name} | {kind} | {s['median_ms']:.1f} | {s['p90_ms']:.1f} | {s['min_ms']:.1f} | {target or ''} |")
    print("\n| ingest of vtest.avi (embed_media, in-process) | median × realtime | runs |")
    print("|---|---:|---:|")
    for k in ("without_thumbnails", "with_thumbnails"):
        print(f"| {k.replace('_', ' ')} | {statistics.median(ingest[k]):.2f} | {len(ingest[k])} |")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "meta": {
                    "videos": int(total),
                    "repeat": args.repeat,
                    "cpus": os.cpu_count(),
                    "machine": platform.machine(),
                    "python": platform.python_version(),
                },
                "results": results,
            },
            indent=2,
        )
    )
    print(f"\nwrote {OUT.relative_to(ROOT)}")


def ingest_overhead(repeat: int, tmp: pathlib.Path) -> dict:
    from frameseek.config import Settings
    from frameseek.console.store import ConsoleMedia
    from frameseek.embed import load_embedder
    from frameseek.pipeline import SamplingSettings, embed_media
    from frameseek.storage import JobRecord, JobState

    s = Settings()
    embedder = load_embedder()
    sampling = SamplingSettings.reference(fps=s.sampling.default_fps)  # what ingest embeds: frame + coarse twin
    media = ConsoleMedia(str(tmp / "ingest"), s.console_thumbnail_width, keep_originals=False)
    out: dict[str, list[float]] = {"without_thumbnails": [], "with_thumbnails": []}
    embed_media(str(VTEST), embedder, sampling)  # warm-up
    for i in range(repeat):
        for key in out:
            hook = (
                media.ingest_frames(
                    JobRecord(id=f"bench-{i}", collection_id=0, state=JobState.RUNNING), 0, f"sha-{i}", str(VTEST)
                )
                if key == "with_thumbnails"
                else None
            )
            t0 = time.perf_counter()
            m = embed_media(str(VTEST), embedder, sampling, on_sample=hook)
            out[key].append(m.duration / (time.perf_counter() - t0))
            if hook is not None:
                hook.discard()
    return out


if __name__ == "__main__":
    main()
