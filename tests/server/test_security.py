"""Security (frameseek/api/auth.py, README "Security"): TLS and mTLS on both front ends, bearer tokens
with roles checked by the Python service and by the native front end's fast path (one role
table), reload on SIGHUP, the refusal to serve a non-loopback address unprotected, and the
private socket directories of servers killed with -9. Real servers, real TLS (certificates made
with openssl at test time)."""

from __future__ import annotations

import asyncio
import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from frameseek import front_end
from frameseek.api import auth
from frameseek.client import Client, FrameSeekError
from frameseek.config import Settings
from frameseek.server import create_server
from frameseek.v1 import frameseek_pb2 as pb
from frameseek.v1 import frameseek_pb2_grpc as pb_grpc

from .helpers import ROOT, ServerProcess, needs_index
from .pki import make_pki

pytestmark = needs_index
needs_native_front_end = pytest.mark.skipif(not front_end.available(), reason="native module built without gRPC C++")

TOKENS = {"reader": "r-token-0123", "writer": "w-token-4567", "admin": "a-token-89ab"}


def write_tokens(path, roles=("reader", "writer", "admin")) -> str:
    path.write_text(
        "".join(f'[[token]]\nname = "{r}-1"\nrole = "{r}"\nsha256 = "{auth.hash_token(TOKENS[r])}"\n\n' for r in roles)
    )
    return str(path)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def reason_of(err: grpc.RpcError) -> str:
    for k, v in err.trailing_metadata() or ():
        if k == "grpc-status-details-bin":
            info = error_details_pb2.ErrorInfo()
            status_pb2.Status.FromString(v).details[0].Unpack(info)
            return info.reason
    return ""


def bearer(role: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {TOKENS[role]}"),)


# ---- the token file ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body, message",
    [
        ('[[token]]\nname = "x"\nrole = "root"\nsha256 = "' + "0" * 64 + '"\n', "role must be one of"),
        ('[[token]]\nname = "x"\nrole = "reader"\nsha256 = "my-plain-token"\n', "64 hex digits"),
        ('[[token]]\nname = "x"\nrole = "reader"\n', "exactly the keys"),
        (
            '[[token]]\nname = "x"\nrole = "reader"\nsha256 = "' + "a" * 64 + '"\n'
            '[[token]]\nname = "y"\nrole = "admin"\nsha256 = "' + "a" * 64 + '"\n',
            "duplicate",
        ),
        ("", "no [[token]] entries"),
        ("[[token]\n", "not valid TOML"),
    ],
)
def test_token_file_errors_are_clear(tmp_path, body, message):
    (tmp_path / "t.toml").write_text(body)
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        auth.load_tokens(str(tmp_path / "t.toml"))


def test_every_rpc_has_a_role():
    # a new RPC must be placed in the role table, not fall to the default silently
    methods = {f"/frameseek.v1.FrameSeek/{m.name}" for m in pb.DESCRIPTOR.services_by_name["FrameSeek"].methods}
    assert methods == set(auth.METHOD_ROLES)
    assert auth.required_rank("/grpc.health.v1.Health/Check") == auth.OPEN
    assert auth.required_rank("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo") == auth.RANK["reader"]


# ---- the native front end: one table, checked on the fast path too ------------------------------
class InProcess:
    """A server in this process (its front end's counters are visible) with TLS and tokens."""

    def __init__(self, tmp_path, pki, front: str):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.tokens = tmp_path / "tokens.toml"
        s = Settings(
            address="127.0.0.1:0",
            data_dir=str(tmp_path / "data"),
            metrics_address="",
            front_end=front,
            embedding_dim=8,
            model="none",
            auth_tokens=write_tokens(self.tokens),
            tls_cert=str(pki / "server.pem"),
            tls_key=str(pki / "server.key"),
        )
        self.srv, self.port = self.run(create_server(s))
        self.run(self.srv.wait_ready())
        creds = grpc.ssl_channel_credentials((pki / "ca.pem").read_bytes())
        self.channel = grpc.secure_channel(f"127.0.0.1:{self.port}", creds)
        self.stub = pb_grpc.FrameSeekStub(self.channel)

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=120)

    def close(self):
        self.channel.close()
        self.run(self.srv.stop(1))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


@pytest.fixture(params=["native", "python"])
def server(request, tmp_path, pki):
    if request.param == "native" and not front_end.available():
        pytest.skip("native module built without gRPC C++")
    s = InProcess(tmp_path, pki, request.param)
    yield s
    s.close()


def _fast(server) -> int:
    return server.srv.front.stats()["fast"] if server.srv.front is not None else 0


def test_roles_on_both_front_ends(server):
    stub = server.stub
    dim = stub.GetCollection(pb.GetCollectionRequest(name="collections/default"), metadata=bearer("reader")).dimension
    query = pb.SearchByVectorRequest(parent="collections/default", vector=[1.0] + [0.0] * (dim - 1))
    fast = _fast(server)
    for md, code in (
        ((), grpc.StatusCode.UNAUTHENTICATED),
        ((("authorization", "Bearer not-a-token"),), grpc.StatusCode.UNAUTHENTICATED),
        ((("authorization", TOKENS["reader"]),), grpc.StatusCode.UNAUTHENTICATED),
    ):  # no scheme
        with pytest.raises(grpc.RpcError) as e:
            stub.SearchByVector(query, metadata=md)
        assert e.value.code() == code and reason_of(e.value) == "UNAUTHENTICATED"
    assert _fast(server) == fast  # the native path answered none of them
    for role in ("reader", "writer", "admin"):
        stub.SearchByVector(query, metadata=bearer(role))
    if server.srv.front is not None:
        assert _fast(server) == fast + 3  # ... and answered these itself
    stub.SearchByVector(query, metadata=(("authorization", f"bearer   {TOKENS['reader']} "),))  # scheme any case

    # writer: ingest and delete videos; admin: collections
    with pytest.raises(grpc.RpcError) as e:
        stub.DeleteVideo(pb.DeleteVideoRequest(name="collections/default/videos/1"), metadata=bearer("reader"))
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED and reason_of(e.value) == "PERMISSION_DENIED"
    with pytest.raises(grpc.RpcError) as e:  # allowed, so the service's own answer
        stub.DeleteVideo(pb.DeleteVideoRequest(name="collections/default/videos/1"), metadata=bearer("writer"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as e:
        stub.IngestVideo(iter([pb.IngestVideoRequest(chunk=b"x")]), metadata=bearer("reader"))
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    req = pb.CreateCollectionRequest(collection_id="c1", collection=pb.Collection())
    with pytest.raises(grpc.RpcError) as e:
        stub.CreateCollection(req, metadata=bearer("writer"))
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED and "needs admin" in e.value.details()
    stub.CreateCollection(req, metadata=bearer("admin"))
    with pytest.raises(grpc.RpcError) as e:  # a server-streaming call is refused too
        next(stub.WatchIngestJob(pb.WatchIngestJobRequest(name="jobs/1")))
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED

    # health stays open; reflection needs a token
    hs = health_pb2_grpc.HealthStub(server.channel)
    assert hs.Check(health_pb2.HealthCheckRequest(service="")).status == health_pb2.HealthCheckResponse.SERVING
    rs = reflection_pb2_grpc.ServerReflectionStub(server.channel)
    ask = [reflection_pb2.ServerReflectionRequest(list_services="")]
    with pytest.raises(grpc.RpcError) as e:
        list(rs.ServerReflectionInfo(iter(ask)))
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert list(rs.ServerReflectionInfo(iter(ask), metadata=bearer("reader")))


def test_reload_reaches_both_front_ends(server):
    dim = server.stub.GetCollection(
        pb.GetCollectionRequest(name="collections/default"), metadata=bearer("admin")
    ).dimension
    query = pb.SearchByVectorRequest(parent="collections/default", vector=[1.0] + [0.0] * (dim - 1))
    server.stub.SearchByVector(query, metadata=bearer("reader"))
    write_tokens(server.tokens, roles=("writer", "admin"))  # the reader's token is revoked
    assert server.srv.reload_tokens()
    fast = _fast(server)
    with pytest.raises(grpc.RpcError) as e:
        server.stub.SearchByVector(query, metadata=bearer("reader"))
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert _fast(server) == fast  # the native side has the new table: it no longer answers that token
    server.stub.SearchByVector(query, metadata=bearer("writer"))
    server.tokens.write_text("garbage [")  # a broken file keeps the table that works
    assert not server.srv.reload_tokens()
    server.stub.SearchByVector(query, metadata=bearer("writer"))


# ---- through the CLI and the Python SDK, against `frameseek serve` -------------------------------
def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "frameseek.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
        timeout=300,
    )


def start(tmp_path, name: str, **settings) -> ServerProcess:
    srv = ServerProcess(tmp_path / name, embedding_dim=8, model="none", **settings)
    srv.start(wait=False)
    return srv


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory, pki):
    """`frameseek serve` (native front end) with TLS and tokens."""
    d = tmp_path_factory.mktemp("tls")
    srv = start(
        d, "data", tls_cert=pki / "server.pem", tls_key=pki / "server.key", auth_tokens=write_tokens(d / "tokens.toml")
    )
    srv.client(tls_ca=pki / "ca.pem").wait_ready(timeout=300)
    yield srv
    srv.stop()


def test_cli_tls_and_tokens(tls_server, pki):
    conn = ["--server", tls_server.address, "--tls-ca", str(pki / "ca.pem")]
    r = cli("collections", *conn, "--json", "--token", TOKENS["reader"])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["collections"][0]["name"] == "collections/default"
    r = cli("stats", *conn, "--json", env={"FRAMESEEK_TOKEN": TOKENS["reader"]})  # the env var
    assert r.returncode == 0 and json.loads(r.stdout).get("insecure", False) is False
    r = cli("stats", *conn, "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["error"]["reason"] == "UNAUTHENTICATED"
    r = cli("delete", "collections/default/videos/1", *conn, "--token", TOKENS["reader"])
    assert r.returncode == 1 and "PERMISSION_DENIED" in r.stderr and "needs writer" in r.stderr
    r = cli("delete", "collections/default/videos/1", *conn, "--token", TOKENS["writer"])
    assert r.returncode == 1 and "VIDEO_NOT_FOUND" in r.stderr  # allowed: the service's own answer
    r = cli("stats", "--server", tls_server.address, "--token", TOKENS["reader"])  # plaintext to a TLS port
    assert r.returncode == 1 and "UNAVAILABLE" in r.stderr


def test_sdk_tls_and_tokens(tls_server, pki):
    with Client(tls_server.address, tls_ca=pki / "ca.pem", token=TOKENS["admin"]) as fs:
        fs.create_collection("sdk")
        assert "collections/sdk" in {c.name for c in fs.list_collections()}
    with Client(tls_server.address, tls_ca=pki / "ca.pem", token=TOKENS["writer"]) as fs:
        with pytest.raises(FrameSeekError) as e:
            fs.delete_collection("sdk")
        assert e.value.code == grpc.StatusCode.PERMISSION_DENIED and e.value.reason == "PERMISSION_DENIED"
        assert e.value.metadata == {"role": "writer", "required_role": "admin"}
    with Client(tls_server.address, tls_ca=pki / "ca.pem", retries=0) as fs:
        with pytest.raises(FrameSeekError) as e:
            fs.stats()
        assert e.value.code == grpc.StatusCode.UNAUTHENTICATED
    with Client(tls_server.address, tls_ca=pki / "rogue-ca.pem", token=TOKENS["reader"], retries=0) as fs:
        with pytest.raises(FrameSeekError) as e:  # a server certificate the client does not trust
            fs.stats()
        assert e.value.code == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("front", ["native", "python"])
def test_mtls_requires_a_client_certificate(tmp_path, pki, front):
    if front == "native" and not front_end.available():
        pytest.skip("native module built without gRPC C++")
    srv = start(
        tmp_path,
        "data",
        tls_cert=pki / "server.pem",
        tls_key=pki / "server.key",
        tls_client_ca=pki / "ca.pem",
        front_end=front,
    )
    try:
        srv.client(tls_ca=pki / "ca.pem", tls_cert=pki / "client.pem", tls_key=pki / "client.key").wait_ready(300)
        conn = ["--server", srv.address, "--tls-ca", str(pki / "ca.pem")]
        r = cli("stats", *conn, "--tls-cert", str(pki / "client.pem"), "--tls-key", str(pki / "client.key"))
        assert r.returncode == 0, r.stderr
        r = cli("stats", *conn)
        assert r.returncode == 1 and "UNAVAILABLE" in r.stderr
        r = cli(
            "stats",
            *conn,
            env={"FRAMESEEK_CLIENT_CERT": str(pki / "client.pem"), "FRAMESEEK_CLIENT_KEY": str(pki / "client.key")},
        )
        assert r.returncode == 0, r.stderr
        with Client(
            srv.address,
            tls_ca=pki / "ca.pem",
            tls_cert=pki / "rogue-client.pem",
            tls_key=pki / "rogue-client.key",
            retries=0,
        ) as fs:  # signed by a CA the server does not trust
            with pytest.raises(FrameSeekError) as e:
                fs.stats()
            assert e.value.code == grpc.StatusCode.UNAVAILABLE
        with Client(srv.address, tls_ca=pki / "ca.pem", retries=0) as fs:  # no client certificate
            with pytest.raises(FrameSeekError) as e:
                fs.stats()
            assert e.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        srv.stop()


# ---- safe by default -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "address, loopback",
    [
        ("127.0.0.1:50051", True),
        ("127.3.4.5:1", True),
        ("localhost:1", True),
        ("[::1]:1", True),
        ("unix:/run/fs.sock", True),
        ("0.0.0.0:1", False),
        ("[::]:1", False),
        (":50051", False),
        ("10.0.0.5:1", False),
        ("search.example.org:1", False),
    ],
)
def test_exposure_needs_tls_and_client_authentication(address, loopback):
    tls = auth.TlsFiles(b"cert", b"key", None)
    assert auth.exposure_gaps(address, tls, authenticated=True) == []
    gaps = auth.exposure_gaps(address, None, authenticated=False)
    assert (gaps == []) == loopback
    if not loopback:
        assert len(gaps) == 2 and len(auth.exposure_gaps(address, tls, authenticated=False)) == 1


def test_non_loopback_without_protection_refuses_to_start(tmp_path, pki):
    r = cli("serve", "--address", "0.0.0.0:0", "--data-dir", str(tmp_path / "d"), "--metrics-address", "")
    assert r.returncode != 0 and "refusing to listen on 0.0.0.0:0" in r.stderr and "--insecure" in r.stderr
    assert "TLS" in r.stderr and "client authentication" in r.stderr
    # TLS without any client authentication is not enough either
    r = cli(
        "serve",
        "--address",
        "0.0.0.0:0",
        "--data-dir",
        str(tmp_path / "d"),
        "--metrics-address",
        "",
        "--tls-cert",
        str(pki / "server.pem"),
        "--tls-key",
        str(pki / "server.key"),
    )
    assert r.returncode != 0 and "without client authentication" in r.stderr
    r = cli(
        "serve",
        "--data-dir",
        str(tmp_path / "d"),
        "--tls-cert",
        str(pki / "server.pem"),
        "--tls-key",
        str(pki / "client.key"),
    )  # a key of another certificate: said at once
    assert r.returncode != 0 and "unusable" in r.stderr


def test_insecure_override_starts_with_a_warning(tmp_path):
    srv = ServerProcess(tmp_path / "data", embedding_dim=8, model="none")
    port_file = tmp_path / "port"
    with open(tmp_path / "log", "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "frameseek.cli",
                "serve",
                "--address",
                "0.0.0.0:0",
                "--insecure",
                "--data-dir",
                str(srv.data_dir),
                "--port-file",
                str(port_file),
            ],
            env=srv.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:
        while not port_file.exists():
            assert proc.poll() is None, (tmp_path / "log").read_text()
            time.sleep(0.05)
        with Client(f"127.0.0.1:{port_file.read_text()}") as fs:
            fs.wait_ready(300)
            assert fs.stats().insecure
        text = (tmp_path / "log").read_text()
        assert "INSECURE: serving 0.0.0.0:0 without TLS" in text and "client authentication" in text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)


# ---- the private socket's directory ----------------------------------------------------------------
@needs_native_front_end
def test_socket_dirs_of_killed_servers_are_removed(tmp_path):
    def ours() -> set[str]:
        return set(glob.glob(os.path.join(tempfile.gettempdir(), front_end.SOCKET_DIR_PREFIX + "*")))

    before = ours()
    a = start(tmp_path, "a")
    a.client().wait_ready(300)
    mine = ours() - before
    assert len(mine) == 1 and os.stat(next(iter(mine))).st_mode & 0o777 == 0o700
    a.kill9()
    assert mine <= ours()  # left behind by the crash
    b = start(tmp_path, "b")
    try:
        b.client().wait_ready(300)
        assert not mine & ours()  # the next server removed it ...
        assert len(ours() - before) == 1  # ... and not its own
    finally:
        b.stop()
    assert not (ours() - before)


def test_sighup_reloads_the_token_file(tls_server, pki):
    """Last of the tls_server tests: it revokes the reader's token with a real SIGHUP (and puts it back)."""
    tokens = tls_server.data_dir.parent / "tokens.toml"
    reader = Client(tls_server.address, tls_ca=pki / "ca.pem", token=TOKENS["reader"], retries=0)
    try:
        reader.stats()
        write_tokens(tokens, roles=("writer", "admin"))
        tls_server.proc.send_signal(signal.SIGHUP)
        while True:  # the reload is asynchronous to the signal; pytest-timeout bounds a hang
            try:
                reader.stats()
            except FrameSeekError as exc:
                assert exc.code == grpc.StatusCode.UNAUTHENTICATED
                break
            time.sleep(0.05)
        assert tls_server.proc.poll() is None  # SIGHUP no longer ends the process
        assert "auth_tokens_reloaded" in tls_server.log()
    finally:
        write_tokens(tokens)
        tls_server.proc.send_signal(signal.SIGHUP)
        reader.close()


def test_hash_token_prints_an_entry(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "frameseek.cli", "hash-token", "--name", "ci", "--role", "writer"],
        input="s3cret\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr
    (tmp_path / "t.toml").write_text(r.stdout)
    (entry,) = auth.load_tokens(str(tmp_path / "t.toml"))
    assert (entry.name, entry.role, entry.digest.hex()) == ("ci", "writer", auth.hash_token("s3cret"))
    assert "s3cret" not in r.stdout


@needs_native_front_end
def test_socket_dirs_of_older_servers_are_removed(tmp_path):
    # before the lock file, a server's directory held only its socket: one nobody listens on is stale
    import socket

    stale = tempfile.mkdtemp(prefix="frameseek-")
    live = tempfile.mkdtemp(prefix="frameseek-")
    other = tempfile.mkdtemp(prefix="frameseek-")  # not a socket directory: left alone
    (open(os.path.join(other, "service.sock"), "w")).close()
    (open(os.path.join(other, "notes.txt"), "w")).close()
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(os.path.join(stale, "service.sock"))
    dead.close()  # bound, never listening: what a killed server leaves
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(os.path.join(live, "service.sock"))
        listening.listen()
        removed = front_end.remove_stale_socket_dirs()
    assert stale in removed and not os.path.exists(stale)
    assert live not in removed and other not in removed
    for d in (live, other):
        for f in os.listdir(d):
            os.unlink(os.path.join(d, f))
        os.rmdir(d)
