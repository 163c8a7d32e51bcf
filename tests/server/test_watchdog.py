"""frameseek.watchdog: a mark that stops moving is reported once, with every thread's stack."""

from __future__ import annotations

import threading
import time

import pytest

from frameseek import metrics
from frameseek.watchdog import Watchdog


def test_a_stalled_mark_is_reported_once_with_every_threads_stack(capfd):
    dog = Watchdog(stall_s=0.01)
    parked = threading.Event()
    waiter = threading.Thread(target=parked.wait, name="stuck-one", daemon=True)
    waiter.start()
    before = metrics.STALLS._value.get()
    dog.beat("ingest job-1")
    time.sleep(0.05)  # longer than stall_s: the mark is stale whatever the scheduler did
    stalled = dog.check()
    assert [name for name, _ in stalled] == ["ingest job-1"] and stalled[0][1] >= 0.01
    err = capfd.readouterr().err
    assert "Current thread 0x" in err and err.count("Thread 0x") >= 1  # the waiting thread is listed too
    assert "in wait" in err  # ... down to where it waits
    assert metrics.STALLS._value.get() == before + 1
    assert dog.check() == []  # once per stall
    dog.beat("ingest job-1")  # it moved again: a new stall is a new report
    time.sleep(0.05)
    assert [name for name, _ in dog.check()] == ["ingest job-1"]
    dog.done("ingest job-1")  # finished work is never reported
    time.sleep(0.05)
    assert dog.check() == []
    parked.set()


def test_marks_that_move_are_not_reported():
    dog = Watchdog(stall_s=60)
    dog.beat("event_loop")
    dog.beat("ingest job-2")
    assert dog.check() == []
    assert dog.period_s == 5.0 and Watchdog(stall_s=2).period_s == 0.5  # checks 4x per stall window


def test_the_thread_reports_on_its_own_and_stops():
    dog = Watchdog(stall_s=0.02)
    dog.beat("event_loop")
    seen = []
    check = dog.check
    dog.check = lambda: seen.extend(check()) or []  # record what the thread reported
    dog.start()
    try:
        deadline = time.monotonic() + 60  # liveness only: the report comes within a few periods
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        dog.stop()
    assert [name for name, _ in seen] == ["event_loop"]
    assert not dog._thread.is_alive()


def test_stall_s_must_be_positive():
    with pytest.raises(ValueError):
        Watchdog(stall_s=0)
