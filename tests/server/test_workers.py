"""`frameseek serve --workers 2`: a primary and a search replica share the port (SO_REUSEPORT).
Through real server processes, with a client connected to each process (found deterministically
from /proc: which process owns the server end of the client's TCP connection): writes through
either process are visible to searches on both, deletes are gone from both at once, kill -9 of the
replica loses nothing (the primary restarts it), and a restart keeps everything."""

from __future__ import annotations

import os
import pathlib
import signal
import time

import numpy as np
import pytest

from frameseek.client import Client, FrameSeekError

from .helpers import ServerProcess, needs_index, needs_media, seed_collection

pytestmark = needs_index
DIM, VIDEOS, SAMPLES = 64, 12, 10


def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return out


def _socket_inodes(pid: int | str) -> set[int]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            out.add(int(link[8:-1]))
    return out


def _tcp() -> list[tuple[int, int, int]]:
    """(local port, remote port, inode) of every TCP socket in this network namespace (gRPC uses
    dual-stack IPv6 sockets, so loopback IPv4 connections show up in tcp6 as v4-mapped)."""
    rows = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(name) as f:
            next(f)
            for line in f:
                p = line.split()
                rows.append((int(p[1].rsplit(":", 1)[1], 16), int(p[2].rsplit(":", 1)[1], 16), int(p[9])))
    return rows


def _my_ports(server_port: int) -> set[int]:
    mine = _socket_inodes("self")
    return {lp for lp, rp, ino in _tcp() if rp == server_port and ino in mine}


def _owner(server_port: int, client_port: int, pids: list[int]) -> int:
    inode = {ino for lp, rp, ino in _tcp() if lp == server_port and rp == client_port}
    for pid in pids:
        if inode & _socket_inodes(pid):
            return pid
    raise AssertionError(f"no server process owns the connection from port {client_port}")


def _listens(pid: int, port: int) -> bool:
    """Does process `pid` hold a listening TCP socket on `port`?"""
    listening = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(name) as f:
            next(f)
            for line in f:
                p = line.split()
                if p[3] == "0A" and int(p[1].rsplit(":", 1)[1], 16) == port:  # 0A: TCP_LISTEN
                    listening.add(int(p[9]))
    try:
        return bool(listening & _socket_inodes(pid))
    except FileNotFoundError:  # gone
        return False


def wait_listening(srv: ServerProcess, pids: list[int]) -> None:
    """Until every process has its SO_REUSEPORT socket on the port: a replica restarted a moment
    ago is still importing, and until it listens the kernel gives every new connection to the
    primary (a fast machine then used up clients_per_worker's tries before the replica bound:
    "could not reach every worker")."""
    deadline = time.monotonic() + 120
    while not all(_listens(p, srv.port) for p in pids):
        assert time.monotonic() < deadline, f"not every worker listens on {srv.port}: {pids}"
        time.sleep(0.05)


def clients_per_worker(srv: ServerProcess) -> dict[int, Client]:
    """One client connected to each serving process: once every process listens, new
    connections until every pid is covered (the kernel hashes connections over the listening
    sockets; 2^-40 odds of missing one in 40 tries)."""
    pids = [srv.proc.pid] + _children(srv.proc.pid)
    assert len(pids) == 2, pids
    wait_listening(srv, pids)
    got: dict[int, Client] = {}
    for _ in range(40):
        before = _my_ports(srv.port)
        # a private subchannel pool: otherwise channels to one target share one TCP connection
        c = srv.client(options=[("grpc.use_local_subchannel_pool", 1)])
        c.stats()
        new = _my_ports(srv.port) - before
        assert len(new) == 1
        pid = _owner(srv.port, new.pop(), pids)
        if pid in got:
            c.close()
        else:
            got[pid] = c
        if len(got) == len(pids):
            return got
    raise AssertionError("could not reach every worker")


@pytest.fixture
def world(tmp_path):
    data = tmp_path / "data"
    index = {"m": 16, "ef_construction": 200, "ef_search": 128}
    vectors = seed_collection(data, dim=DIM, videos=VIDEOS, samples=SAMPLES, seed=11, index=index, key="v{i}")
    srv = ServerProcess(data, workers=2).start()
    yield srv, vectors
    assert srv.stop() == 0, srv.log()
    assert not _children(srv.proc.pid)


def _top(c: Client, q, **kw) -> list[str]:
    return [h.video.name for h in c.search_by_vector(q, collection="vecs", **kw).hits]


def test_delete_through_either_worker_is_gone_from_both(world):
    srv, vectors = world
    workers = clients_per_worker(srv)
    names = list(vectors)
    for c in workers.values():
        for n in names:
            assert _top(c, vectors[n][3], k=1) == [n]
    for i, via in enumerate(workers.values()):  # delete once through the primary, once through the replica
        victim = names[i]
        via.delete_video(victim)
        for c in workers.values():
            assert victim not in _top(c, vectors[victim][3], k=VIDEOS)
            with pytest.raises(FrameSeekError) as e:
                c.get_video(victim)
            assert e.value.reason == "VIDEO_NOT_FOUND"
            assert c.get_collection("vecs").video_count == VIDEOS - 1 - i
    # an error raised by the primary comes back through the replica with its code and reason
    for c in workers.values():
        with pytest.raises(FrameSeekError) as e:
            c.delete_video(names[0])
        assert e.value.reason == "VIDEO_NOT_FOUND"
    for c in workers.values():
        c.close()


def test_collections_created_and_deleted_through_either_worker(world):
    srv, _ = world
    workers = list(clients_per_worker(srv).values())
    for i, via in enumerate(workers):
        via.create_collection(f"extra{i}", metric="cosine")
        for c in workers:
            assert c.get_collection(f"extra{i}").name == f"collections/extra{i}"
            r = c.search_by_vector(np.ones(512, np.float32), collection=f"extra{i}", k=3)
            assert len(r.hits) == 0
        workers[1 - i].delete_collection(f"extra{i}")
        for c in workers:
            with pytest.raises(FrameSeekError) as e:
                c.get_collection(f"extra{i}")
            assert e.value.reason == "COLLECTION_NOT_FOUND"
    for c in workers:
        c.close()


@needs_media
def test_ingest_through_either_worker_visible_on_both(world, tmp_path):
    from PIL import Image

    srv, _ = world
    workers = clients_per_worker(srv)
    rng = np.random.default_rng(5)
    imgs = {}
    for i, via in enumerate(workers.values()):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(np.kron(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), np.ones((8, 8, 1), np.uint8))).save(
            path
        )
        imgs[via.ingest_image(path, external_key=f"img{i}").video.name] = path
    for c in workers.values():
        for name, path in imgs.items():
            assert c.get_video(name).name == name
            assert c.search_by_image(path, k=1).hits[0].video.name == name
    for c in workers.values():
        c.close()


def test_kill9_replica_loses_nothing_and_restart_keeps_everything(world):
    srv, vectors = world
    names = list(vectors)
    workers = clients_per_worker(srv)
    replica = next(pid for pid in workers if pid != srv.proc.pid)
    workers[replica].delete_video(names[-1])
    for c in workers.values():
        c.close()
    os.kill(replica, signal.SIGKILL)
    # the primary notices and starts a new replica; until then the primary serves alone
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        kids = _children(srv.proc.pid)
        if kids and replica not in kids:
            break
        time.sleep(0.2)
    assert kids and replica not in kids

    def check(c: Client) -> None:
        for n in names[:-1]:
            assert _top(c, vectors[n][2], k=1) == [n]
        assert names[-1] not in _top(c, vectors[names[-1]][2], k=VIDEOS)

    deadline = time.monotonic() + 120
    while True:  # the new replica answers UNAVAILABLE until it has loaded
        try:
            workers = clients_per_worker(srv)
            for c in workers.values():
                check(c)
            break
        except FrameSeekError as e:
            if e.reason != "NOT_READY" or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    for c in workers.values():
        c.close()
    for how in ("graceful", "kill9"):
        if how == "graceful":
            assert srv.stop() == 0
        else:
            srv.kill9()  # the primary: its replica notices and exits
            deadline = time.monotonic() + 60
            while any(pathlib.Path(f"/proc/{p}").exists() for p in kids) and time.monotonic() < deadline:
                time.sleep(0.1)
        srv.start()
        kids = _children(srv.proc.pid)
        workers = clients_per_worker(srv)
        for c in workers.values():
            check(c)
            c.close()
