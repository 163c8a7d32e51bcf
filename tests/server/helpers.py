"""Test helpers: a real frameseek server in a subprocess on a free loopback port, synthetic media,
and checks for which pieces of the system are built."""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
OPENCV_DATA = pathlib.Path("/usr/share/doc/opencv-doc/examples/data")


def have_native_index() -> bool:
    from frameseek import _native

    return hasattr(_native, "HnswIndex")


def have_aggregate() -> bool:
    from frameseek import _native

    return hasattr(_native, "aggregate")


def have_media_pipeline() -> bool:
    try:
        import frameseek.embed  # noqa: F401
        import frameseek.pipeline  # noqa: F401
    except ImportError:
        return False
    return True


needs_index = pytest.mark.skipif(
    not have_native_index(), reason="frameseek._native.HnswIndex is not built yet (native stream, issue 2)"
)
needs_media = pytest.mark.skipif(
    not (have_native_index() and have_media_pipeline()),
    reason="frameseek.pipeline/embed (issue 3) or the native index is not merged yet",
)
needs_aggregate = pytest.mark.skipif(
    not (have_native_index() and have_media_pipeline() and have_aggregate()),
    reason="frameseek._native.aggregate (issue 2) or the media pipeline is missing",
)


class ServerProcess:
    """`frameseek serve` as a child process (so kill -9 is a real crash): the server of the tests
    and of the benchmarks. `settings` become FRAMESEEK_* variables; `serve_args`, more `serve`
    options; `python`, the command that runs Python (a baseline build's interpreter, or this one
    under `nice`), this interpreter by default; `log_path`, where its output goes (beside the data
    directory by default, as its port file)."""

    running: set[ServerProcess] = set()  # started and not yet stopped (conftest dumps their stacks)

    def __init__(
        self,
        data_dir: pathlib.Path,
        env: dict | None = None,
        *,
        serve_args: Sequence[str] = (),
        python: Sequence[str] = (),
        log_path: pathlib.Path | None = None,
        **settings,
    ):
        self.data_dir = pathlib.Path(data_dir)
        self.port_file = self.data_dir.parent / f"{self.data_dir.name}.port"
        self.log_path = pathlib.Path(log_path or self.data_dir.parent / f"{self.data_dir.name}.log")
        self.env = {
            **os.environ,
            "FRAMESEEK_METRICS_ADDRESS": "",
            "FRAMESEEK_LOG_FORMAT": "json",
            **{f"FRAMESEEK_{k.upper()}": str(v) for k, v in settings.items()},
            **(env or {}),
        }
        self.command = [
            *(python or [sys.executable]),
            *("-m", "frameseek.cli", "serve", "--address", "127.0.0.1:0"),
            *("--data-dir", str(self.data_dir), "--port-file", str(self.port_file), *serve_args),
        ]
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.ready_s = 0.0  # seconds from the last start's launch to SERVING (wait_ready)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, wait: bool = True, timeout: float = 300.0) -> ServerProcess:
        """Launch the process and read its port; with `wait`, wait_ready(timeout) too."""
        with contextlib.suppress(FileNotFoundError):
            self.port_file.unlink()
        self._launched = time.perf_counter()
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT)
        ServerProcess.running.add(self)
        while not self.port_file.exists():
            self._check_running()
            time.sleep(0.02)
        self.port = int(self.port_file.read_text())
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 300.0) -> float:
        """Until the server's health check (plaintext) says SERVING: returns `ready_s`.
        RuntimeError (with the log) when the process exits first, TimeoutError after `timeout` s."""
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout
        request = health_pb2.HealthCheckRequest(service="frameseek.v1.FrameSeek")
        with grpc.insecure_channel(self.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                with contextlib.suppress(grpc.RpcError):
                    if health.Check(request, timeout=2).status == health_pb2.HealthCheckResponse.SERVING:
                        self.ready_s = time.perf_counter() - self._launched
                        return self.ready_s
                self._check_running()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"frameseek at {self.address} not SERVING after {timeout} s")
                time.sleep(0.02)

    def _check_running(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")

    def client(self, **kw):
        from frameseek.client import Client

        return Client(self.address, **kw)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 120.0) -> int:
        """Graceful stop (SIGTERM: drain + snapshot; SIGKILL after `timeout` s); returns the exit
        code. Called while an exception propagates (a failed check or a pytest-timeout, in a
        `finally`), it first prints the server's thread stacks to stderr, which pytest shows with
        the failure."""
        if sys.exc_info()[0] is not None:
            dump = self.dump_stacks()
            if dump:
                print(f"--- server {self.address}: thread stacks at the failure (SIGUSR1) ---\n{dump}", file=sys.stderr)
            stacks = self.native_stacks()
            if stacks:
                print(f"--- server {self.address}: threads at the failure (gdb) ---\n{stacks}", file=sys.stderr)
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                # still there after SIGTERM: where it hangs goes to the end of its log (which a
                # failed check prints), before SIGKILL
                stacks = self.native_stacks()
                with open(self.log_path, "a") as f:
                    f.write(f"--- not stopped {timeout:g} s after SIGTERM; threads (gdb) ---\n{stacks}\n")
                self.proc.kill()
                self.proc.wait()
        self._close()
        return self.proc.returncode if self.proc else 0

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self._close()

    def dump_stacks(self, timeout: float = 10.0) -> str:
        """SIGUSR1: the server writes every Python thread's stack to its log and goes on serving.
        Returns that dump (empty when the process is gone or wrote nothing within `timeout`)."""
        if not self.proc or self.proc.poll() is not None or not self.port_file.exists():
            return ""  # gone, or not yet at the point where serve() installs the handler
        start = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        text, last_size, quiet_since = "", -1, time.monotonic()
        while time.monotonic() < deadline:  # until the dump is there and the log stops growing
            time.sleep(0.1)
            with open(self.log_path, "rb") as f:
                f.seek(start)
                text = f.read().decode(errors="replace")
            if len(text) != last_size:
                last_size, quiet_since = len(text), time.monotonic()
            elif "thread 0x" in text.lower() and time.monotonic() - quiet_since > 0.5:
                break
        return text

    def native_stacks(self, timeout: float = 60.0) -> str:
        """Every thread of the process, native frames included (gdb, when installed): a line per
        thread, its name and innermost frames, so that a C++ thread that waits (gRPC's, ONNX
        Runtime's, the index's) shows where. Empty when gdb is missing or cannot attach."""
        if not self.proc or self.proc.poll() is not None:
            return ""
        return native_thread_summary(self.proc.pid, timeout)

    def _close(self) -> None:
        ServerProcess.running.discard(self)
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None


_GDB_THREAD = re.compile(r'^Thread \d+ \(.*?\(LWP (\d+)\)(?: "([^"]*)")?\)')
_GDB_FRAME = re.compile(r"^#\d+\s+(?:0x[0-9a-f]+ in )?(.+?) \(")
# frames that say only "it waits" (the innermost frame, kept, says on what)
_WAIT_FRAMES = re.compile(
    r"^(\?\?|_+(futex|GI_|new_sem|pthread|lll)|do_futex_wait|syscall$|absl::.*(Waiter|PerThreadSem)"
    r"|AbslInternal|gpr_cv_wait|gpr_mu_lock|std::condition_variable::)"
)


def native_thread_summary(pid: int, timeout: float = 60.0, frames: int = 5) -> str:
    """`gdb -batch` attached to `pid`: a line per thread, "LWP name: innermost | caller < caller
    ...", the frames that only wait (futex, condition variables, absl's waiter) left out, short
    enough for a CI log's tail. Empty when gdb is missing, times out or cannot attach."""
    gdb = shutil.which("gdb")
    if gdb is None:
        return ""
    cmd = [gdb, "-p", str(pid), "-batch", "-nx", "-ex", "set pagination off", "-ex", "thread apply all bt 24"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    threads: list[tuple[str, list[str]]] = []
    for line in out.splitlines():
        if m := _GDB_THREAD.match(line):
            threads.append((f"{m[1]} {m[2] or '?'}:", []))
        elif threads and (f := _GDB_FRAME.match(line)):
            name, shorter = f[1], ""
            while shorter != name:  # template arguments make C++ names unreadably long
                shorter, name = name, re.sub(r"<[^<>]*>", "", name)
            threads[-1][1].append(re.sub(r"\(.*", "", name))
    lines = []
    for head, stack in threads:
        callers = [f for f in stack[1:] if not _WAIT_FRAMES.match(f)][: frames - 1]
        lines.append(f"{head} {stack[0] if stack else '?'} | {' < '.join(callers)}")
    return "\n".join(lines)


def make_video(
    path: pathlib.Path, seconds: float, seed: int, fps: int = 25, size=(160, 120), codec: str = "mpeg4"
) -> pathlib.Path:
    """A synthetic video whose content changes every second (distinct scenes: random blocky
    textures with a moving bar), so each second is distinguishable from every other one."""
    import av

    rng = np.random.default_rng(seed)
    w, h = size
    scenes = [
        np.kron(rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8), np.ones((8, 8, 1), np.uint8))
        for _ in range(int(np.ceil(seconds)) + 1)
    ]
    with av.open(str(path), "w") as out:
        st = out.add_stream(codec, rate=fps)
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        for i in range(int(seconds * fps)):
            img = scenes[i // fps].copy()
            x = (i * 3) % w
            img[:, x : x + 4] = 255
            for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    return path


def grab_frame(video: pathlib.Path, t: float, out: pathlib.Path) -> pathlib.Path:
    """Save the frame at time t of a video as PNG."""
    import av

    with av.open(str(video)) as c:
        st = c.streams.video[0]
        for frame in c.decode(st):
            if frame.time is not None and frame.time >= t:
                frame.to_image().save(out)
                return out
    raise ValueError(f"no frame at {t}s in {video}")


def ffmpeg_subclip(src: pathlib.Path, start: float, duration: float, out: pathlib.Path) -> pathlib.Path:
    """Re-encode a sub-clip with another codec and scale (a typical re-upload)."""
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-ss",
            str(start),
            "-i",
            str(src),
            "-t",
            str(duration),
            "-vf",
            "scale=iw*3/4:-2",
            "-c:v",
            "libx264",
            "-crf",
            "30",
            "-an",
            str(out),
        ],
        check=True,
    )
    return out


def random_unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def video_record(content_sha256: str, **fields):
    """A storage.VideoRecord for storage tests: a 5 s 64x48 video of no samples yet, with this content
    hash; `fields` set the others (collection_id, duration, external_key, ...)."""
    from frameseek.storage import VideoRecord

    defaults = dict(
        id=0, collection_id=0, kind="video", duration=5.0, width=64, height=48, sample_count=0, size_bytes=1
    )
    return VideoRecord(**{**defaults, "content_sha256": content_sha256, **fields})


@contextlib.contextmanager
def tmpfs(mount_point: pathlib.Path, size: str):
    """A real filesystem of `size` (tmpfs, e.g. "40m") at `mount_point`, to fill up; skips the test
    where it cannot be mounted (that needs root / CAP_SYS_ADMIN)."""
    mount_point.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN): {r.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def seed_collection(
    data_dir: pathlib.Path,
    *,
    dim: int,
    videos: int,
    samples: int,
    seed: int,
    spacing: float = 1.0,
    index: dict | None = None,
    key: str | None = "video-{i}",
    labels=None,
    name: str = "vecs",
) -> dict[str, np.ndarray]:
    """A data dir with collection `name` (no model needed to search it by vector): `videos` videos
    of `samples` random unit vectors each, sample j at j * spacing seconds. `key` formats each
    video's external key from its number i (None: no key); `labels(i)` gives its labels.
    Returns {video resource name: its vectors}."""
    from frameseek.storage import EmbeddedStorage, VideoRecord

    rng = np.random.default_rng(seed)
    st = EmbeddedStorage(str(data_dir))
    st.open()
    c = st.create_collection(
        name,
        model="sscd_distilled",
        dimension=dim,
        metric="ip",
        sampling={"fps": 1.0 / spacing},
        index=index or {},
    )
    vectors = {}
    for i in range(videos):
        v = random_unit_vectors(rng, samples, dim)
        rec = VideoRecord(
            id=0,
            collection_id=c.id,
            kind="video",
            duration=samples * spacing,
            width=64,
            height=48,
            sample_count=samples,
            size_bytes=100 + i,
            content_sha256=f"{i:064x}",
            external_key=key.format(i=i) if key else "",
            labels=labels(i) if labels else {},
        )
        vid = st.add_video(c.id, rec, np.arange(samples, dtype=np.float64) * spacing, v).id
        vectors[f"collections/{name}/videos/{vid}"] = v
    st.close()
    return vectors
