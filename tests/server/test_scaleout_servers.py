"""Several `frameseek serve` processes on one Milvus (Lite) and one PostgreSQL serve one library:
an ingest through one is searchable through the other as soon as it is acknowledged, a delete
through one is gone from all, jobs are visible from any; with PostgreSQL down a server reports
NOT_SERVING and its calls fail UNAVAILABLE (BACKEND_UNAVAILABLE), and it recovers by itself; the
same with Milvus down."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2

from benchmarks.scale.backends import MilvusLite, PostgresCluster
from frameseek.client import FrameSeekError
from frameseek.v1 import frameseek_pb2 as pb

from .helpers import ROOT, ServerProcess, ffmpeg_subclip, grab_frame, have_media_pipeline, make_video, needs_index

pytestmark = [needs_index, pytest.mark.skipif(not have_media_pipeline(), reason="needs the media pipeline")]


def _settings(url: str, uri: str, prefix: str) -> dict:
    return {
        "vector_store": "milvus",
        "milvus_uri": uri,
        "catalog_url": url,
        "milvus_collection_prefix": prefix,
        "backend_timeout_s": 3,
        "ingest_workers": 1,
    }


def _health(client) -> int:
    return client.health.Check(health_pb2.HealthCheckRequest(service="frameseek.v1.FrameSeek"), timeout=10).status


def _until_health(client, status: int) -> None:
    while _health(client) != status:  # the server's backend probe decides; no clock here
        time.sleep(0.2)


def test_two_servers_one_library(tmp_path, postgres_cluster, milvus_lite):
    common = _settings(postgres_cluster.database(), milvus_lite.uri, f"t{uuid.uuid4().hex[:10]}_")
    a = ServerProcess(tmp_path / "a", server_id="a", **common)
    b = ServerProcess(tmp_path / "b", server_id="b", **common)
    try:
        a.start(wait=False)
        b.start(wait=False)  # starting together: one of them creates the default collection
        a.client().wait_ready(timeout=300)
        b.client().wait_ready(timeout=300)
        video = make_video(tmp_path / "v.mp4", seconds=3, seed=11)
        frame = grab_frame(video, 1.3, tmp_path / "f.png")
        with a.client(timeout=300) as fa, b.client(timeout=300) as fb:
            r = fa.ingest_video(video)
            hits = fb.search_by_image(frame).hits  # acknowledged through A, searched through B
            assert hits and hits[0].video.name == r.video.name
            assert 1.0 <= hits[0].matches[0].timestamp_seconds <= 1.7
            assert fb.get_job(r.job.name).state == pb.INGEST_JOB_STATE_SUCCEEDED
            assert [v.name for v in fb.list_videos()] == [r.video.name]
            fb.delete_video(r.video.name)  # deleted through B: gone from A
            assert r.video.name not in [h.video.name for h in fa.search_by_image(frame).hits]
            with pytest.raises(FrameSeekError) as e:
                fa.get_video(r.video.name)
            assert e.value.code == grpc.StatusCode.NOT_FOUND
            # a collection deleted and made again through A: B follows (no stale record of it)
            vector = [1.0] + [0.0] * 511
            fa.create_collection("extra")
            assert fb.search_by_vector(vector, collection="extra").hits == []
            fa.delete_collection("extra")
            with pytest.raises(FrameSeekError) as e:
                fb.search_by_vector(vector, collection="extra")
            assert e.value.code == grpc.StatusCode.NOT_FOUND
            fa.create_collection("extra", metric="l2")
            assert fb.search_by_vector(vector, collection="extra").hits == []
            # the CLI spreads a directory's uploads over both servers
            folder = tmp_path / "library"
            folder.mkdir()
            for seed in range(4):
                make_video(folder / f"clip{seed}.mp4", seconds=2, seed=40 + seed)
            out = subprocess.run(
                [sys.executable, "-m", "frameseek.cli", "ingest", str(folder), "--json", "-j", "4"]
                + ["--server", f"{a.address},{b.address}"],
                capture_output=True,
                text=True,
                cwd=ROOT,
                check=True,
            )
            report = json.loads(out.stdout)
            assert report["summary"]["ingested"] == 4
            assert {f["server"] for f in report["files"]} == {a.address, b.address}
            assert len(list(fa.list_videos())) == len(list(fb.list_videos())) == 4
            # SearchByVideo through B: the copy search (frame kNN from Milvus, alignment, dense
            # refinement with the vectors read back from Milvus) finds a re-encoded sub-clip
            source = fa.ingest_video(make_video(tmp_path / "long.mp4", seconds=6, seed=77)).video.name
            clip = ffmpeg_subclip(tmp_path / "long.mp4", 2.0, 3.0, tmp_path / "sub.mp4")
            found = fb.search_by_video(clip, k=3, min_score=-1)
            assert found.matches and found.matches[0].video.name == source
            assert abs(found.matches[0].offset_seconds - 2.0) <= 1.0, found.matches[0]
    finally:
        a.stop()
        b.stop()


def test_postgres_then_milvus_down_then_back(tmp_path):
    pg = PostgresCluster().start()
    milvus = MilvusLite(str(tmp_path / "milvus"), str(tmp_path / "milvus.log")).start()
    srv = ServerProcess(tmp_path / "s", server_id="s", **_settings(pg.database(), milvus.uri, "down_"))
    try:
        srv.start()
        with srv.client(timeout=30, retries=0) as fs:
            vector = [1.0] + [0.0] * 511
            fs.search_by_vector(vector)
            pg.kill9()
            _until_health(fs, health_pb2.HealthCheckResponse.NOT_SERVING)
            with pytest.raises(FrameSeekError) as e:
                list(fs.list_videos())
            assert e.value.code == grpc.StatusCode.UNAVAILABLE and e.value.reason == "BACKEND_UNAVAILABLE"
            pg.start()
            _until_health(fs, health_pb2.HealthCheckResponse.SERVING)  # reconnected by itself
            assert fs.search_by_vector(vector).hits == []
            milvus.kill9()
            _until_health(fs, health_pb2.HealthCheckResponse.NOT_SERVING)
            with pytest.raises(FrameSeekError) as e:
                fs.search_by_vector(vector)
            assert e.value.code == grpc.StatusCode.UNAVAILABLE and e.value.reason == "BACKEND_UNAVAILABLE"
            milvus.start()
            _until_health(fs, health_pb2.HealthCheckResponse.SERVING)
            assert fs.search_by_vector(vector).hits == []
    finally:
        srv.stop()
        milvus.stop()
        pg.remove()


def test_a_server_killed_mid_ingest_resumes_its_job_while_another_serves(tmp_path, postgres_cluster, milvus_lite):
    """kill -9 of the server running an ingest: the other server never shows a half-done video, the
    job stays visible, and the killed server, restarted, finishes it from its spool."""
    common = _settings(postgres_cluster.database(), milvus_lite.uri, f"t{uuid.uuid4().hex[:10]}_")
    a = ServerProcess(tmp_path / "a", server_id="a", **common).start()
    b = ServerProcess(tmp_path / "b", server_id="b", **common).start()
    try:
        video = make_video(tmp_path / "long.mp4", seconds=20, seed=5)
        with a.client(timeout=300) as fa, b.client(timeout=300) as fb:
            job = fa.ingest_video(video, return_job=True).job.name
            while fb.get_job(job).state != pb.INGEST_JOB_STATE_RUNNING:  # seen through B
                time.sleep(0.05)
        a.kill9()
        with b.client(timeout=300) as fb:
            before = list(fb.list_videos())
            # killed before its commit point: nothing; after it (a fast machine): the whole video
            assert before == [] or [v.sample_count > 0 for v in before] == [True]
            assert fb.get_job(job).state in (pb.INGEST_JOB_STATE_RUNNING, pb.INGEST_JOB_STATE_SUCCEEDED)
        a.start()  # same server_id and spool: it sweeps its half-done ingest and resumes the job
        with b.client(timeout=300) as fb:
            done = [j.state for j in fb.watch_job(job, timeout=300)][-1]
            assert done == pb.INGEST_JOB_STATE_SUCCEEDED
            videos = list(fb.list_videos())
            assert [v.name for v in videos] == [fb.get_job(job).video]
            frame = grab_frame(video, 10.2, tmp_path / "f.png")
            assert fb.search_by_image(frame).hits[0].video.name == videos[0].name
    finally:
        a.stop()
        b.stop()


def test_own_vectors_through_two_servers(tmp_path, postgres_cluster, milvus_lite):
    """UpsertItems / DeleteItems / SearchByVector on an own-vectors collection: items upserted
    through A (Storage.add_videos batches committed in PostgreSQL + Milvus) are found through B,
    replaced and deleted through B, gone from A; GetStats counts their bytes."""
    import numpy as np

    common = _settings(postgres_cluster.database(), milvus_lite.uri, f"t{uuid.uuid4().hex[:10]}_")
    a = ServerProcess(tmp_path / "a", server_id="a", **common)
    b = ServerProcess(tmp_path / "b", server_id="b", **common)
    rng = np.random.default_rng(12)
    vecs = rng.standard_normal((60, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    try:
        a.start(wait=False)
        b.start(wait=False)
        a.client().wait_ready(timeout=300)
        b.client().wait_ready(timeout=300)
        with a.client(timeout=300) as fa, b.client(timeout=300) as fb:
            empty = fa.stats().storage_bytes
            fa.create_collection("emb", vector_dimension=16, metric="cosine")
            rows = [(f"k{i}", vecs[i], {"parity": str(i % 2)}) for i in range(len(vecs))]
            r = fa.upsert_items(rows, collection="emb", batch_size=16, return_names=True)
            assert (r.item_count, r.vector_count) == (60, 60)
            names = list(r.names)
            for i in (0, 17, 59):  # acknowledged through A, searched through B
                hit = fb.search_by_vector(vecs[i], collection="emb", k=3).hits[0]
                assert hit.video.name == names[i] and hit.video.external_key == f"k{i}"
            found = fb.search_by_vector(vecs[5], collection="emb", k=5, labels={"parity": "0"}).hits
            assert found and all(h.video.labels["parity"] == "0" for h in found)
            new = vecs[30] * -1
            r = fb.upsert_items([("k3", new, None)], collection="emb", return_names=True)
            assert r.replaced_count == 1
            assert fa.search_by_vector(new, collection="emb", k=1).hits[0].video.name == r.names[0]
            d = fb.delete_items(collection="emb", names=[names[7]], external_keys=["k8", "nope"])
            assert (d.deleted_count, d.not_found_count) == (2, 1)
            for i in (3, 7, 8):  # replaced or deleted through B: gone from A
                assert fa.search_by_vector(vecs[i], collection="emb", k=1).hits[0].video.name != names[i]
            assert fa.stats().storage_bytes - empty >= vecs[:57].nbytes  # PostgreSQL + the rows Milvus holds
    finally:
        a.stop()
        b.stop()


@pytest.mark.slow
def test_faces_and_people_through_two_servers(tmp_path, postgres_cluster, milvus_lite):
    """A faces collection on the scale-out store (face vectors in Milvus, the people tables in
    PostgreSQL), with the real face models on real faces (opencv-doc photos): photos ingested
    through A are found by face through B; a person's later photo, ingested through B, joins the
    person A's ingest made; a name given through B reaches A's searches and listings; a delete
    through B is gone from A's face search."""
    import io

    from PIL import Image

    from benchmarks.faces.media import load_identities, rephotograph

    def png(rgb) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "PNG")
        return buf.getvalue()

    idents = load_identities(limit=4)
    for i in range(2):
        (tmp_path / f"p{i}.png").write_bytes(png(idents[i].crop))
    (tmp_path / "again0.png").write_bytes(png(rephotograph(idents[0].query, seed=3)))
    common = _settings(postgres_cluster.database(), milvus_lite.uri, f"t{uuid.uuid4().hex[:10]}_")
    a = ServerProcess(tmp_path / "a", server_id="a", **common)
    b = ServerProcess(tmp_path / "b", server_id="b", **common)
    try:
        a.start(wait=False)
        b.start(wait=False)
        a.client().wait_ready(timeout=300)
        b.client().wait_ready(timeout=300)
        with a.client(timeout=600) as fa, b.client(timeout=600) as fb:
            fa.create_collection("people", faces=True)
            assert fb.get_collection("people").faces
            p0, p1 = (
                fa.ingest_image(tmp_path / f"p{i}.png", collection="people", external_key=f"p{i}").video
                for i in range(2)
            )
            found = fb.search_by_face(png(idents[0].query), collection="people").results[0].hits
            assert [h.video.external_key for h in found] == ["p0"]
            stranger = fb.search_by_face(png(idents[3].query), collection="people").results
            assert all(not r.hits for r in stranger)

            (person,) = fb.video_people(p0.name)
            again = fb.ingest_image(
                tmp_path / "again0.png", collection="people", external_key="again0", labels={"via": "b"}
            ).video
            assert [p.name for p in fa.video_people(again.name)] == [person.name]  # one person, across servers
            assert fb.update_person(person.name, "The sitter").display_name == "The sitter"
            everyone = {p.name: p for p in fa.list_people("people")}
            assert len(everyone) == 2 and everyone[person.name].display_name == "The sitter"
            assert everyone[person.name].video_count == 2
            hits = fa.search_by_face(png(idents[0].query), collection="people").results[0].hits
            assert sorted(h.video.external_key for h in hits) == ["again0", "p0"]
            assert {h.person_display_name for h in hits} == {"The sitter"}
            labelled = fa.search_by_face(png(idents[0].query), collection="people", labels={"via": "b"})
            assert [h.video.external_key for h in labelled.results[0].hits] == ["again0"]  # filtered in Milvus

            fb.delete_video(p1.name)
            gone = fa.search_by_face(png(idents[1].query), collection="people").results[0].hits
            assert "p1" not in [h.video.external_key for h in gone]
            assert len(list(fa.list_people("people"))) == 1
    finally:
        a.stop()
        b.stop()
