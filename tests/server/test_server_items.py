"""Own vectors over gRPC against the real server: a collection created with a vector dimension and
no model takes UpsertItems (streamed batches; by external key or name; several vectors with
timestamps; labels) and DeleteItems; SearchByVector and its filters work on it as on any
collection; what was acknowledged survives a restart; media ingest is refused with NO_MODEL."""

from __future__ import annotations

import json
import subprocess
import sys

import grpc
import numpy as np
import pytest

from frameseek.client import FrameSeekError
from frameseek.v1 import frameseek_pb2 as pb

from .helpers import OPENCV_DATA, ServerProcess, needs_index

pytestmark = [needs_index]
DIM = 16


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = ServerProcess(tmp_path_factory.mktemp("isrv") / "data").start()
    yield s
    assert s.stop() == 0, s.log()


def unit(rng, n):
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def loaded(srv):
    rng = np.random.default_rng(5)
    vecs = unit(rng, 300)
    with srv.client() as fs:
        c = fs.create_collection("emb", vector_dimension=DIM, metric="cosine")
        assert c.own_vectors and c.vector_dimension == DIM and c.dimension == DIM and c.model == ""
        rows = [(f"k{i}", vecs[i], {"parity": str(i % 2)}) for i in range(len(vecs))]
        r = fs.upsert_items(rows, collection="emb", batch_size=64, return_names=True)
    assert (r.item_count, r.vector_count, r.replaced_count) == (300, 300, 0)
    return vecs, list(r.names)


def error_of(fn) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(FrameSeekError) as e:
        fn()
    return e.value.code, e.value.reason


def test_items_are_searchable_at_once(srv, loaded):
    vecs, names = loaded
    with srv.client() as fs:
        for i in (0, 7, 299):
            hit = fs.search_by_vector(vecs[i], collection="emb", k=3).hits[0]
            assert hit.video.name == names[i] and hit.score == pytest.approx(1.0, abs=1e-4)
            assert hit.video.kind == pb.MEDIA_KIND_ITEM and hit.video.external_key == f"k{i}"


def test_filters_work_on_items(srv, loaded):
    vecs, names = loaded
    with srv.client() as fs:
        r = fs.search_by_vector(vecs[7], collection="emb", k=5, labels={"parity": "0"})
        assert r.hits and all(h.video.labels["parity"] == "0" for h in r.hits)
        r = fs.search_by_vector(vecs[7], collection="emb", k=5, exclude_videos=[names[7]])
        assert names[7] not in {h.video.name for h in r.hits}


def test_upsert_replaces_by_key_and_by_name_and_keeps_timestamps(srv, loaded):
    vecs, names = loaded
    rng = np.random.default_rng(9)
    new = unit(rng, 3)
    with srv.client() as fs:
        r = fs.upsert_items([("k10", new[:2], {"v": "2"})], collection="emb", return_names=True)
        assert r.replaced_count == 1
        hit = fs.search_by_vector(new[1], collection="emb", k=1).hits[0]
        assert hit.video.name == r.names[0] and hit.video.sample_count == 2 and hit.video.external_key == "k10"
        assert hit.matches[0].timestamp_seconds == pytest.approx(1.0)  # vector 1 of the item: t = 1 s
        assert fs.search_by_vector(vecs[10], collection="emb", k=1).hits[0].video.name != names[10]
        with pytest.raises(FrameSeekError):
            fs.get_video(names[10])  # replaced: gone
        item = pb.Item(
            name=names[11], vectors=[pb.ItemVector(values=new[2], timestamp_seconds=42.5)], labels={"x": "y"}
        )
        r = fs.upsert_items([item], collection="emb", return_names=True)
        assert r.replaced_count == 1
        hit = fs.search_by_vector(new[2], collection="emb", k=1).hits[0]
        assert hit.video.name == r.names[0] and hit.matches[0].timestamp_seconds == pytest.approx(42.5)


def test_delete_items(srv, loaded):
    vecs, names = loaded
    with srv.client() as fs:
        r = fs.delete_items(collection="emb", names=[names[20]], external_keys=["k21", "nope"])
        assert (r.deleted_count, r.not_found_count) == (2, 1)
        for i in (20, 21):
            assert fs.search_by_vector(vecs[i], collection="emb", k=1).hits[0].video.name != names[i]


def test_bad_items_and_wrong_collections(srv, loaded, tmp_path):
    with srv.client() as fs:
        assert error_of(lambda: fs.upsert_items([("a", np.ones(DIM + 1), None)], collection="emb")) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "DIMENSION_MISMATCH",
        )
        bad = np.ones(DIM, dtype=np.float32)
        bad[3] = np.nan
        assert error_of(lambda: fs.upsert_items([("a", bad, None)], collection="emb"))[1] == "NON_FINITE_VECTOR"
        assert error_of(lambda: fs.upsert_items([("a", np.ones(DIM), None)])) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "NOT_OWN_VECTORS",
        )
        assert error_of(lambda: fs.ingest_video(OPENCV_DATA / "tree.avi", collection="emb")) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "NO_MODEL",
        )
        assert error_of(lambda: fs.create_collection("bad", vector_dimension=8, audio=True))[0] == (
            grpc.StatusCode.INVALID_ARGUMENT
        )


def test_cli_upsert_npy_and_restart_keeps_every_acknowledged_item(tmp_path):
    srv = ServerProcess(tmp_path / "data").start()
    rng = np.random.default_rng(3)
    vecs = unit(rng, 500)
    np.save(tmp_path / "emb.npy", vecs)
    try:
        with srv.client() as fs:
            fs.create_collection("mine", vector_dimension=DIM)
        out = subprocess.run(
            [sys.executable, "-m", "frameseek.cli", "upsert", str(tmp_path / "emb.npy"), "-c", "mine", "--json"]
            + ["--batch-size", "128", "--server", srv.address],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr
        assert int(json.loads(out.stdout)["item_count"]) == 500  # int64 is a JSON string
        srv.kill9()  # acknowledged means durable: no graceful snapshot
        srv.start()
        with srv.client() as fs:
            for i in (0, 250, 499):
                hit = fs.search_by_vector(vecs[i], collection="mine", k=1).hits[0]
                assert hit.video.external_key == f"emb/{i}" and hit.score == pytest.approx(1.0, abs=1e-4)
    finally:
        srv.stop()


def test_cli_upsert_parquet(srv, tmp_path):
    """`frameseek upsert FILE.parquet`: external keys, one vector (`vector`) or several (`vectors`)
    per row, labels as JSON; a file without the needed columns is refused with a message."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(21)
    vecs = unit(rng, 12).reshape(4, 3, DIM)  # 4 items of 3 vectors
    table = pa.table(
        {
            "external_key": [f"doc-{i}" for i in range(4)],
            "vectors": [v.tolist() for v in vecs],
            "labels": [json.dumps({"lang": "de" if i % 2 else "en"}) for i in range(4)],
        }
    )
    pq.write_table(table, tmp_path / "items.parquet")
    pq.write_table(pa.table({"id": [1], "vector": [[0.0] * DIM]}), tmp_path / "bad.parquet")
    with srv.client() as fs:
        fs.create_collection("pq", vector_dimension=DIM)

    def upsert(name):
        return subprocess.run(
            [sys.executable, "-m", "frameseek.cli", "upsert", str(tmp_path / name), "-c", "pq", "--json"]
            + ["--server", srv.address],
            capture_output=True,
            text=True,
        )

    out = upsert("items.parquet")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert (int(r["item_count"]), int(r["vector_count"])) == (4, 12)
    with srv.client() as fs:
        for i in range(4):
            hit = fs.search_by_vector(vecs[i, 2], collection="pq", k=1).hits[0]
            assert hit.video.external_key == f"doc-{i}" and hit.video.sample_count == 3
            assert hit.video.labels["lang"] == ("de" if i % 2 else "en")
            assert hit.matches[0].timestamp_seconds == pytest.approx(2.0)  # vector 2 of the item
    bad = upsert("bad.parquet")
    message = " ".join(bad.stderr.replace("│", " ").split())  # rich draws the error in a wrapped box
    assert bad.returncode == 2 and "needs columns 'external_key' and 'vector' or 'vectors'" in message


def test_kill9_while_the_linker_has_a_backlog_loses_no_acknowledged_item(tmp_path):
    """Bulk items are acknowledged once logged and in the fresh segment, long before the HNSW graph
    holds them (GetStats' unlinked_vectors > 0). A kill -9 then loses none: the restart replays
    them from the log into the fresh segment, and every one is found by its own vector."""
    dim, n = 512, 6000  # the graph links 512-d vectors far slower than the stream acknowledges them
    srv = ServerProcess(tmp_path / "data").start()
    vecs = np.random.default_rng(8).standard_normal((n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    try:
        with srv.client() as fs:
            fs.create_collection("bulk", vector_dimension=dim)
            r = fs.upsert_items(((f"b{i}", vecs[i], None) for i in range(n)), collection="bulk", batch_size=500)
            assert r.item_count == n
            (stats,) = [c for c in fs.stats().collections if c.collection == "collections/bulk"]
        assert stats.index_vectors == n and stats.unlinked_vectors > 0  # the kill hits a backlog
        srv.kill9()
        srv.start()
        with srv.client() as fs:
            (stats,) = [c for c in fs.stats().collections if c.collection == "collections/bulk"]
            assert stats.index_vectors == n
            for i in range(n):
                hit = fs.search_by_vector(vecs[i], collection="bulk", k=1).hits[0]
                assert hit.video.external_key == f"b{i}" and hit.score == pytest.approx(1.0, abs=1e-4)
    finally:
        srv.stop()


@pytest.mark.parametrize("dim", [1, 31, 32, 512, 4096])
def test_the_clients_item_vectors_are_the_fields_in_wire_format(dim):
    """The Python client writes an item's vectors as protobuf wire bytes (one copy of the matrix):
    the same message as setting each ItemVector's values."""
    from frameseek.client.items import item_vectors_wire

    for n in (1, 2, 5):
        v = np.random.default_rng(dim + n).standard_normal((n, dim)).astype(np.float32)
        item = pb.Item(external_key="k")
        item.MergeFromString(item_vectors_wire(v))
        assert item == pb.Item(external_key="k", vectors=[pb.ItemVector(values=row) for row in v.tolist()])


def test_a_stream_commits_its_batches_in_order_up_to_a_bad_one(srv):
    """The server parses a batch while the previous one commits: a later batch replacing keys of
    an earlier one still sees it committed, and a bad batch fails the stream after the batches
    before it were committed (none after it)."""
    rng = np.random.default_rng(12)
    first, second, third = unit(rng, 4), unit(rng, 4), unit(rng, 4)
    rows = [(f"o{i}", first[i], None) for i in range(4)] + [(f"o{i}", second[i], None) for i in range(4)]
    rows += [("bad", np.ones(DIM + 1, dtype=np.float32), None)] + [(f"p{i}", third[i], None) for i in range(4)]
    with srv.client() as fs:
        fs.create_collection("order", vector_dimension=DIM)
        assert error_of(lambda: fs.upsert_items(rows, collection="order", batch_size=4)) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "DIMENSION_MISMATCH",
        )
        for i in range(4):
            hit = fs.search_by_vector(second[i], collection="order", k=1).hits[0]
            assert hit.video.external_key == f"o{i}" and hit.score == pytest.approx(1.0, abs=1e-4)
        (stats,) = [c for c in fs.stats().collections if c.collection == "collections/order"]
        assert stats.video_count == 4  # the first batch's items were replaced, the last batch never sent on


def test_a_batch_is_parsed_by_column_and_a_bad_item_is_named():
    """The server reads a batch into one array of every item's vectors (api.messages.item_batch):
    each item's rows, keys, labels and timestamps in order; a vector of another length names its
    item with the expected and the received length, and half-stamped vectors name theirs."""
    from frameseek.api.messages import item_batch
    from frameseek.errors import ServiceError

    rng = np.random.default_rng(2)
    vecs = unit(rng, 6)
    items = [
        pb.Item(external_key="a", vectors=[pb.ItemVector(values=vecs[0])]),
        pb.Item(
            external_key="b",
            labels={"x": "1"},
            vectors=[pb.ItemVector(values=v, timestamp_seconds=t) for v, t in zip(vecs[1:4], (0.5, 1.5, 2.5))],
        ),
        pb.Item(name="collections/c/videos/7", vectors=[pb.ItemVector(values=v) for v in vecs[4:]]),
    ]
    b = item_batch(items, "c", DIM)
    assert np.array_equal(b.vectors, vecs) and b.ends.tolist() == [1, 4, 6] and b.starts.tolist() == [0, 1, 4]
    assert (b.external_keys, b.labels, b.video_ids) == (["a", "b", ""], [{}, {"x": "1"}, {}], [None, None, 7])
    assert b.timestamps[0] is None and b.timestamps[1].tolist() == [0.5, 1.5, 2.5] and b.timestamps[2] is None
    assert item_batch([], "c", DIM).vectors.shape == (0, DIM)

    short = [*items[:2], pb.Item(vectors=[pb.ItemVector(values=vecs[5]), pb.ItemVector(values=vecs[5][:3])])]
    with pytest.raises(ServiceError) as e:
        item_batch(short, "c", DIM)
    assert e.value.reason == "DIMENSION_MISMATCH" and "item 2" in str(e.value)
    assert e.value.metadata == {"expected": str(DIM), "got": "3"}
    half = [
        items[0],
        pb.Item(vectors=[pb.ItemVector(values=vecs[1], timestamp_seconds=1), pb.ItemVector(values=vecs[2])]),
    ]
    with pytest.raises(ServiceError) as e:
        item_batch(half, "c", DIM)
    assert "item 1" in str(e.value)


def test_item_vectors_are_read_from_their_wire_form():
    """item_batch slices each vector's packed floats out of its wire form: the client's hand-made
    wire (client.items.item_vectors_wire), a vector with a timestamp, and one without values
    (DIMENSION_MISMATCH, 0 values) all read as protobuf reads them."""
    from frameseek.api.messages import item_batch
    from frameseek.client.items import item_vectors_wire
    from frameseek.errors import ServiceError

    vecs = np.random.default_rng(3).standard_normal((3, DIM)).astype(np.float32)
    wired = pb.Item(external_key="w")
    wired.MergeFromString(item_vectors_wire(vecs[:2]))
    stamped = pb.Item(vectors=[pb.ItemVector(values=vecs[2], timestamp_seconds=4.0)])
    b = item_batch([wired, stamped], "c", DIM)
    assert np.array_equal(b.vectors, vecs) and b.ends.tolist() == [2, 3] and b.timestamps[1].tolist() == [4.0]
    with pytest.raises(ServiceError) as e:
        item_batch([wired, pb.Item(vectors=[pb.ItemVector(timestamp_seconds=1.0)])], "c", DIM)
    assert e.value.reason == "DIMENSION_MISMATCH" and "item 1" in str(e.value) and e.value.metadata["got"] == "0"


def test_a_batch_request_built_as_wire_is_the_message_protobuf_builds():
    """client.items.item_batch_request (the upload's wire, built in bytes) parses to the message
    made field by field: keys (empty, non-ASCII), labels, 1-d and [n, d] vectors, float64 input,
    a pb.Item passed as it is."""
    from frameseek.client.items import item_batch_request, item_vectors_wire

    v = np.random.default_rng(4).standard_normal((8, DIM)).astype(np.float32)

    def made(key, vectors, labels):
        rows = np.asarray(vectors, dtype=np.float32).reshape(-1, DIM)
        return pb.Item(external_key=key, labels=labels or {}, vectors=[pb.ItemVector(values=r) for r in rows])

    rows = [
        ("é/1", v[:3], {"a": "1", "b": "2"}),
        ("", v[3], None),
        ("k", v[4:5], {}),
        ("d", v[5].astype(np.float64), None),
    ]
    given = pb.Item(name="collections/c/videos/3", vectors=[pb.ItemVector(values=v[6], timestamp_seconds=1.5)])
    want = pb.UpsertItemsRequest(batch=pb.ItemBatch(items=[made(*r) for r in rows] + [given]))
    assert item_batch_request([*rows, given]) == want
    assert item_vectors_wire(v[:2]) == b"".join(
        pb.Item(vectors=[pb.ItemVector(values=r)]).SerializeToString() for r in v[:2]
    )
