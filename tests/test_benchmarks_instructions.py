"""The instruction-count benchmark's own parts: its reference apps and its reading of callgrind.

Counting itself needs valgrind and takes minutes; these show that the reference servers answer
as the benchmarked ones do and count what they run, and that each thread's total is read.
"""

from __future__ import annotations

import threading
from pathlib import Path

import anyio
import httpx
import pytest
from benchmarks.e2e_apps import EXPECTED_BODY, PATH
from benchmarks.instructions import REFERENCES, thread_totals
from starlette.applications import Starlette

from test_benchmarks_e2e import lifespan


@pytest.mark.anyio
@pytest.mark.parametrize("name", list(REFERENCES))
async def test_every_reference_app_answers_alike_and_counts_its_requests(name: str) -> None:
    app = REFERENCES[name].build()
    transport = httpx.ASGITransport(app=app)
    async with (
        lifespan(app),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client,
    ):
        before = (await client.get("/count")).json()
        for _ in range(3):
            response = await client.post(PATH)
            assert (response.status_code, response.content) == (200, EXPECTED_BODY)
        after = (await client.get("/count")).json()
    assert after["requests"] - before["requests"] == 3


@pytest.mark.anyio
async def test_the_queue_floor_runs_every_task_in_its_thread() -> None:
    app = REFERENCES["reference-queue"].build()
    assert isinstance(app, Starlette)
    transport = httpx.ASGITransport(app=app)
    async with (
        lifespan(app),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client,
    ):
        before = (await client.get("/count")).json()
        for _ in range(3):
            assert (await client.post(PATH)).status_code == 200
        done = threading.Event()
        app.state.jobs.put((lambda _: done.set(), ""))  # one thread, in order: runs last
        with anyio.fail_after(5):
            assert await anyio.to_thread.run_sync(done.wait, 5)
        after = (await client.get("/count")).json()
    assert after["tasks"] - before["tasks"] == 3
    assert after["in_workers"] - before["in_workers"] == 3


def test_thread_totals_reads_each_threads_dump_in_thread_order(tmp_path: Path) -> None:
    (tmp_path / "callgrind.out.77").write_text("")  # the process's own file: empty per thread
    (tmp_path / "callgrind.out.77-02").write_text("events: Ir\nsummary: 250\ntotals: 250\n")
    (tmp_path / "callgrind.out.77-01").write_text("events: Ir\nfn=x\n1 9\ntotals: 1000\n")
    (tmp_path / "callgrind.out.77-03").write_text("events: Ir\nsummary: 5\n")
    assert thread_totals(tmp_path) == [1000, 250, 5]
