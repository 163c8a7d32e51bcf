"""The linker: one background thread of the embedded storage that moves committed vectors from
each collection's fresh segment into its HNSW graph (collection_index.py: `link_step`), oldest
first, and takes the periodic snapshot once enough vectors were linked since the last one.

A commit acknowledges once its vectors are logged and in the fresh segment (searched exactly), so
ingest runs at the speed of the log and the catalog, not of the graph's inserts; the backlog
(`unlinked_count`) is what GetStats and frameseek_unlinked_vectors report. Nothing depends on the
linker for durability: stopping it (close, kill -9) leaves the backlog in the log, and recovery
replays it into the fresh segment.

The thread runs LINKER_NICENESS steps nicer than the process (Linux keeps a nice value per thread,
and the graph's worker threads it starts inherit it): a sustained stream of commits and searches
is served first, and the graph catches up when they pause (the backlog is searched exactly
meanwhile, so only its size waits, not correctness)."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable

import structlog

log = structlog.get_logger("frameseek.storage")

#: how long the linker waits after a failed step before it tries again (seconds)
RETRY_AFTER_S = 5.0
#: how much nicer than the process the linker's thread runs (0: same priority; capped at 19)
LINKER_NICENESS = 10


class Linker:
    """`indexes()` lists what to link (every open collection's indexes); `snapshot_due(index)`
    snapshots one when it is due. `wake()` after a commit; `stop()` ends the thread after the step
    in progress."""

    def __init__(self, indexes: Callable[[], list], snapshot_due: Callable[[object], None]):
        self._indexes, self._snapshot_due = indexes, snapshot_due
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True, name="linker")
            self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None

    @property
    def native_id(self) -> int | None:
        """The OS thread id of the running linker (None when it is not running)."""
        return self._thread.native_id if self._thread is not None else None

    @staticmethod
    def _lower_priority() -> None:
        if LINKER_NICENESS <= 0 or not sys.platform.startswith("linux"):  # elsewhere a thread id is no pid
            return
        try:
            me = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, me, min(19, os.getpriority(os.PRIO_PROCESS, me) + LINKER_NICENESS))
        except (AttributeError, OSError) as exc:  # not Linux, or not allowed: link at the process's priority
            log.info("linker_priority_unchanged", error=str(exc))

    def _run(self) -> None:
        self._lower_priority()
        while not self._stop.is_set():
            self._wake.clear()  # a commit after this wakes the wait below
            linked = 0
            for x in self._indexes():
                if self._stop.is_set():
                    return
                try:
                    n = x.link_step()
                    linked += n
                    if n:
                        self._snapshot_due(x)
                except Exception:  # e.g. out of memory in the graph: the vectors stay searchable in the fresh segment
                    log.exception("link_failed", collection=x.name)
                    self._stop.wait(RETRY_AFTER_S)
            if not linked:
                self._wake.wait()
