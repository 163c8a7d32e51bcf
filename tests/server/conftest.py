"""Server tests: when one fails (a timeout included) while a server process runs, the report
gets that server's thread stacks (Python's by SIGUSR1, see frameseek.server.serve; every thread's
native frames by gdb), so a hang seen once in CI still says where it waited."""

from __future__ import annotations

import pytest

from .helpers import ServerProcess


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for srv in list(ServerProcess.running):
        dump = srv.dump_stacks()
        if dump:
            report.sections.append((f"server {srv.address} thread stacks (SIGUSR1)", dump))
        native = srv.native_stacks()
        if native:
            report.sections.append((f"server {srv.address} threads (gdb)", native))


# -- the scale-out store's real backends (tests/server/backends.py), one of each per session -------
@pytest.fixture(scope="session")
def postgres_cluster():
    from benchmarks.scale.backends import PostgresCluster

    cluster = PostgresCluster().start()
    yield cluster
    cluster.remove()


@pytest.fixture(scope="session")
def milvus_lite(tmp_path_factory):
    from benchmarks.scale.backends import MilvusLite

    base = tmp_path_factory.mktemp("milvus")
    server = MilvusLite(str(base / "data"), str(base / "milvus.log")).start()
    yield server
    server.stop()
