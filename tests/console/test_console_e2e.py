"""End to end in a real browser: ingest real media through the ingest page, browse the library, a
video's page, search by a grabbed frame and by a re-encoded clip, see the errors, delete."""

from __future__ import annotations

import base64
import pathlib
import subprocess
import time

import pytest

from tests.server.helpers import needs_media

from .conftest import needs_browser

pytestmark = [pytest.mark.slow, needs_browser, needs_media]
LONG = 300_000  # ms: ingests and searches embed on a shared CPU (a liveness bound, not a speed check)


def give_file(page, event: str, target: str, path: pathlib.Path, mime: str) -> None:
    """What a user's drop (event "drop" on the drop zone) or paste ("paste" on the document) hands
    the page: a DataTransfer holding the file."""
    page.evaluate(
        """([event, target, b64, name, mime]) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], name, { type: mime }));
        const e = event === "paste" ? new ClipboardEvent("paste", { clipboardData: dt, bubbles: true })
                                    : new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true });
        (target ? document.querySelector(target) : document).dispatchEvent(e);
    }""",
        [event, target, base64.b64encode(path.read_bytes()).decode(), path.name, mime],
    )


@pytest.fixture(scope="module")
def ingested(console_server, browser, media, screenshots):
    """Uploads vtest.avi, its re-encoded sub-clip and a photo on the ingest page; returns the
    page's outcome: {file name: video resource name} and the texts of failed uploads."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 720})
    page = ctx.new_page()
    page.goto(f"{console_server.url}/ingest")
    page.fill("#labels", "source:opencv")
    page.set_input_files("#files", [media["video"], media["clip"], media["photo"]])
    page.wait_for_function(
        "document.querySelectorAll('#uploads li.done, #uploads li.failed').length === 3", timeout=LONG
    )
    failed = page.locator("#uploads li.failed").all_inner_texts()
    names = {
        li.get_attribute("data-file"): li.locator("a").get_attribute("href").lstrip("/")
        for li in page.locator("#uploads li.done").all()
    }
    bars = page.eval_on_selector_all("#uploads li.done progress", "els => els.map(e => e.value)")
    page.set_input_files("#files", [media["not_media"]])  # an upload the API refuses
    page.wait_for_selector("#uploads li.failed", timeout=LONG)
    refused = page.locator("#uploads li.failed").inner_text()
    page.screenshot(path=screenshots / "ingest.png", full_page=True)
    ctx.close()
    return {"names": names, "failed": failed, "bars": bars, "refused": refused}


def test_ingest_page_uploads_and_follows_jobs(ingested, media):
    assert ingested["failed"] == []
    assert set(ingested["names"]) == {media["video"].name, media["clip"].name, media["photo"].name}
    assert all(n.startswith("collections/default/videos/") for n in ingested["names"].values())
    assert ingested["bars"] == [1, 1, 1]  # each job's bar ends full (WatchIngestJob reached SUCCEEDED)
    assert "NOT_MEDIA" in ingested["refused"] and media["not_media"].name in ingested["refused"]


def test_library_lists_filters_and_shows_thumbnails(console_server, ingested, page, media, screenshots):
    page.goto(f"{console_server.url}/library")
    page.wait_for_selector("#videos tbody tr")
    assert page.locator("#videos tbody tr").count() == 3
    page.wait_for_function(
        """() => [...document.querySelectorAll('#videos tbody img')]
                              .every(e => e.complete && e.naturalWidth > 0)""",
        timeout=LONG,
    )
    vtest = page.locator(f"tr[data-name='{ingested['names'][media['video'].name]}']")
    text = vtest.inner_text()
    assert "vtest.avi" in text and "1:19.5" in text and "768×576" in text and "source:opencv" in text
    assert "× realtime" in text
    assert "photo" in page.locator(f"tr[data-name='{ingested['names'][media['photo'].name]}']").inner_text()
    assert "3 items" in page.locator("#total").inner_text()
    page.screenshot(path=screenshots / "library.png", full_page=True)
    page.fill("#label", "source:elsewhere")
    page.click("#filters button[type=submit]")
    page.wait_for_function("document.querySelector('#total').textContent === '0 items'")
    assert page.locator("#videos tbody tr").count() == 0


def test_video_page_strip_copies_and_media_endpoints(console_server, ingested, page, media, screenshots):
    name, clip = ingested["names"][media["video"].name], ingested["names"][media["clip"].name]
    page.goto(f"{console_server.url}/{name}")
    page.wait_for_selector("#strip figure")
    page.wait_for_function(
        """() => [...document.querySelectorAll('#strip img')]
                              .every(e => e.complete && e.naturalWidth > 0)""",
        timeout=LONG,
    )
    times = [float(t) for t in page.eval_on_selector_all("#strip figure", "els => els.map(e => e.dataset.t)")]
    assert times == sorted(times) and times[0] == 0.0 and times[-1] > 70  # vtest.avi is 79.5 s
    copy = page.wait_for_selector(f"#copies section.match[data-name='{clip}']", timeout=LONG)
    # the whole video as the query of its copy (~-18 s measured: a looser alignment than clip -> video)
    assert abs(float(copy.get_attribute("data-offset")) + 20) < 2.5
    assert page.locator("#copies svg.timeline rect.seg").count() >= 2
    page.screenshot(path=screenshots / "video.png", full_page=True)

    vid = name.rsplit("/", 1)[1]
    r = page.request.get(f"{console_server.url}/thumbs/{vid}?t=10")
    assert r.status == 200 and r.headers["content-type"] == "image/jpeg" and r.body()[:2] == b"\xff\xd8"
    assert "immutable" in r.headers["cache-control"]
    again = page.request.get(f"{console_server.url}/thumbs/{vid}?t=10", headers={"If-None-Match": r.headers["etag"]})
    assert again.status == 304
    part = page.request.get(f"{console_server.url}/media/{vid}", headers={"Range": "bytes=100-199"})
    assert part.status == 206 and part.body() == media["video"].read_bytes()[100:200]


def test_search_by_image_shows_the_moment_and_plays_from_it(console_server, ingested, page, media, screenshots):
    page.goto(f"{console_server.url}/search-image")
    give_file(page, "drop", "#drop", media["frame"], "image/png")  # vtest.avi at 42 s
    page.wait_for_selector(".hit", timeout=LONG)
    top = page.locator(".hit").first
    assert top.get_attribute("data-name") == ingested["names"][media["video"].name]
    assert abs(float(top.get_attribute("data-t")) - 42) <= 0.5
    page.wait_for_function(
        """() => { const i = document.querySelector('.hit img');
                              return i.complete && i.naturalWidth > 0 }""",
        timeout=LONG,
    )
    page.screenshot(path=screenshots / "search-image.png", full_page=True)
    top.click()
    page.wait_for_url("**/videos/*?t=*")
    assert page.url.endswith("?t=42.00") or abs(float(page.url.rsplit("=", 1)[1]) - 42) <= 0.5


def test_search_by_image_takes_a_pasted_picture(console_server, ingested, page, media):
    page.goto(f"{console_server.url}/search-image")
    give_file(page, "paste", "", media["frame"], "image/png")
    page.wait_for_selector(".hit", timeout=LONG)
    assert page.locator(".hit").first.get_attribute("data-name") == ingested["names"][media["video"].name]


def test_search_by_video_shows_the_aligned_timeline(console_server, ingested, page, media, screenshots):
    page.goto(f"{console_server.url}/search-video")
    give_file(page, "drop", "#drop", media["clip"], "video/webm")
    match = page.wait_for_selector(f"section.match[data-name='{ingested['names'][media['video'].name]}']", timeout=LONG)
    assert abs(float(match.get_attribute("data-offset")) - 20) < 1.0
    assert abs(float(match.get_attribute("data-speed")) - 1) < 0.05
    assert match.query_selector_all("svg.timeline polygon.band")
    # side by side: the clip's own frames (drawn in the browser) and the reference's thumbnails
    page.wait_for_function(
        """(name) => { const m = document.querySelector(`section.match[data-name='${name}']`);
        const imgs = [...m.querySelectorAll('.pair img')], canvases = [...m.querySelectorAll('.pair canvas')];
        return imgs.length > 0 && imgs.every(e => e.complete && e.naturalWidth > 0)
            && canvases.length === imgs.length && canvases.every(c => c.dataset.drawn === '1') }""",
        arg=ingested["names"][media["video"].name],
        timeout=LONG,
    )
    page.screenshot(path=screenshots / "search-video.png", full_page=True)


def test_a_clicked_hit_plays_from_its_moment(console_server, ingested, page, media):
    clip = ingested["names"][media["clip"].name]  # a WebM the browser can play
    page.goto(f"{console_server.url}/{clip}?t=5.00")
    page.wait_for_function(
        "() => { const v = document.querySelector('#player video'); "
        "return v && v.readyState >= 1 && Math.abs(v.currentTime - 5) < 0.5 }",
        timeout=LONG,
    )


def test_errors_show_the_api_message_and_reason(console_server, ingested, page, media):
    page.goto(f"{console_server.url}/search-image")
    page.set_input_files("#file", media["not_media"])
    page.wait_for_selector("#error:not([hidden])", timeout=LONG)
    text = page.inner_text("#error")
    assert "INVALID_ARGUMENT" in text and "NOT_MEDIA" in text and "not a recognised" in text


def test_stats_page(console_server, ingested, page, screenshots):
    page.goto(f"{console_server.url}/stats")
    page.wait_for_selector("#collections tbody tr")
    cards = page.inner_text("#cards")
    assert "videos and photos" in cards and "searches / s" in cards
    assert page.inner_text("#collections tbody tr").split("\t")[:2] == ["collections/default", "3"]
    page.screenshot(path=screenshots / "stats.png", full_page=True)


def test_delete_from_the_library_removes_the_video_and_its_media(console_server, ingested, page, media):
    name = ingested["names"][media["clip"].name]
    vid = name.rsplit("/", 1)[1]
    folders = list(pathlib.Path(console_server.data_dir, "console").glob(f"c*/{vid}"))
    assert len(folders) == 1 and (folders[0] / "original").exists()
    page.goto(f"{console_server.url}/library")
    page.wait_for_selector(f"tr[data-name='{name}']")
    page.once("dialog", lambda d: d.accept())
    page.click(f"tr[data-name='{name}'] button.danger")
    page.wait_for_selector(f"tr[data-name='{name}']", state="detached")
    assert not folders[0].exists()
    assert page.request.get(f"{console_server.url}/thumbs/{vid}?t=1").status == 404
    assert page.request.get(f"{console_server.url}/media/{vid}").status == 404
    assert page.request.get(f"{console_server.url}/api/{name}").status == 404
    page.goto(f"{console_server.url}/search-video")
    page.set_input_files("#file", media["clip"])
    page.wait_for_selector("section.match", timeout=LONG)
    assert name not in page.eval_on_selector_all("section.match", "els => els.map(e => e.dataset.name)")


def test_a_failed_ingest_leaves_no_thumbnails(console_server, ingested, tmp_path):
    """A video that decodes but has no informative frame (all black) fails after its thumbnails
    were started: nothing of it stays under console/."""
    black = tmp_path / "black.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=black:s=160x120:d=3", "-c:v", "libx264", str(black)],
        check=True,
    )
    from frameseek.client import FrameSeekError

    with console_server.client() as c, pytest.raises(FrameSeekError) as exc:
        c.ingest_video(black)
    assert exc.value.reason == "EMPTY_MEDIA"
    incoming = pathlib.Path(console_server.data_dir, "console", "incoming")
    # the console drops the folder when WatchIngestJob reports the end, around when the call fails
    deadline = time.monotonic() + 60
    while list(incoming.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(incoming.iterdir()) == []


def test_other_sites_cannot_write_and_rebound_names_are_refused(console_server, ingested, page, media):
    """A page of another site may not delete or ingest (its Origin is checked), and a name that a
    DNS rebinding points at the loopback console gets nothing (Host is checked)."""
    name = ingested["names"][media["video"].name]
    r = page.request.delete(f"{console_server.url}/api/{name}", headers={"Origin": "http://evil.example"})
    assert r.status == 403 and r.json()["error"]["reason"] == "CROSS_SITE_REQUEST"
    r = page.request.post(
        f"{console_server.url}/api/ingest?filename=x.txt",
        data=b"junk",
        headers={"Origin": "http://evil.example", "Content-Type": "text/plain"},
    )
    assert r.status == 403
    port = console_server.url.rsplit(":", 1)[1]
    assert page.request.get(f"{console_server.url}/api/videos", headers={"Host": f"evil.example:{port}"}).status == 400
    assert page.request.get(f"{console_server.url}/api/{name}").status == 200  # still there
    same = page.request.get(f"{console_server.url}/api/videos", headers={"Host": f"localhost:{port}"})
    assert same.status == 200
