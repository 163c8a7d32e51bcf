"""Reports work that stopped moving, while it is still stuck.

Things that should show a sign of life at least every few seconds (an ingest's progress, the
event loop's heartbeat) `beat()` under a name; a daemon thread checks the marks and, when one has
not moved for `stall_s`, logs `stalled` once for it and writes the stack of every Python thread to
stderr (faulthandler), so the log says where it waits without anyone attaching a debugger. The
thread is a plain thread, not an asyncio task, so a blocked event loop is reported too.
"""

from __future__ import annotations

import faulthandler
import sys
import threading
import time

import structlog

from . import metrics

log = structlog.get_logger("frameseek.watchdog")


class Watchdog:
    def __init__(self, stall_s: float):
        if stall_s <= 0:
            raise ValueError("stall_s must be > 0")
        self.stall_s = stall_s
        self.period_s = min(5.0, stall_s / 4)  # how often the marks are checked (and the loop beats)
        self._lock = threading.Lock()
        self._marks: dict[str, float] = {}  # name -> last sign of life (time.monotonic)
        self._reported: set[str] = set()  # stalls already reported (until the next beat)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self, name: str) -> None:
        with self._lock:
            self._marks[name] = time.monotonic()
            self._reported.discard(name)

    def done(self, name: str) -> None:
        with self._lock:
            self._marks.pop(name, None)
            self._reported.discard(name)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="frameseek-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def check(self) -> list[tuple[str, float]]:
        """Report the marks that have not moved for stall_s (each once per stall); returns them."""
        now = time.monotonic()
        with self._lock:
            stalled = [
                (name, now - t)
                for name, t in self._marks.items()
                if now - t >= self.stall_s and name not in self._reported
            ]
            self._reported.update(name for name, _ in stalled)
        for name, age in stalled:
            log.warning("stalled", what=name, seconds=round(age, 1), hint="the stack of every thread follows on stderr")
            metrics.STALLS.inc()
        if stalled:
            faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        return stalled

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.check()
            except Exception:  # the watchdog must never be what stops the server
                log.exception("watchdog_failed")
