"""The middleware's fast path: the worker pool's wake-up policy and `Supervisor.try_submit`."""

from __future__ import annotations

import threading

import anyio
import pytest

from afterward import BackgroundTasks
from afterward._supervisor import Supervisor
from afterward._workers import WorkerPool


class _Job:
    """A job that records the thread it ran in, and can be made to block until released."""

    def __init__(self, release: threading.Event | None = None) -> None:
        self.release = release
        self.started = threading.Event()
        self.done = threading.Event()
        self.thread = ""

    def run(self) -> None:
        self.thread = threading.current_thread().name
        self.started.set()
        if self.release is not None:
            assert self.release.wait(10)
        self.done.set()


def test_a_burst_of_jobs_is_drained_by_the_one_awake_worker() -> None:
    # A patience far longer than the test: only the "no worker awake" rule may start threads.
    pool = WorkerPool(8, patience=60)
    gate = threading.Event()
    first = _Job(gate)
    pool.submit(first)
    assert first.started.wait(5)
    burst = [_Job() for _ in range(200)]
    for job in burst:
        pool.submit(job)  # the first worker is awake (inside its job): nobody is woken
    gate.set()
    for job in burst:
        assert job.done.wait(5)
    assert {job.thread for job in burst} == {first.thread}
    assert len(pool._threads) == 2  # the worker, and a watchman that was never woken
    pool.close()


def test_a_job_queued_behind_blocking_tasks_still_runs_while_they_block() -> None:
    pool = WorkerPool(3, patience=0.01)
    gate = threading.Event()
    blockers = [_Job(gate), _Job(gate)]
    for job in blockers:
        pool.submit(job)
        assert job.started.wait(5)
    queued = _Job()
    pool.submit(queued)
    # Both awake workers block: the watchman sees the queue stand still and starts a worker.
    assert queued.done.wait(5)
    assert queued.thread not in {job.thread for job in blockers}
    gate.set()
    pool.close()


def test_a_parked_worker_is_woken_for_the_queue_when_the_awake_one_blocks() -> None:
    pool = WorkerPool(3, patience=0.01)
    # Start three workers at once, then let them all park.
    gate = threading.Event()
    warmup = [_Job(gate) for _ in range(3)]
    for job in warmup:
        pool.submit(job)
    for job in warmup:
        assert job.started.wait(5)
    gate.set()
    for job in warmup:
        assert job.done.wait(5)
    blocker_gate = threading.Event()
    blocker = _Job(blocker_gate)
    pool.submit(blocker)
    assert blocker.started.wait(5)
    queued = _Job()
    pool.submit(queued)  # a worker is awake (blocked in its job): the submit wakes nobody
    assert queued.done.wait(5)
    assert queued.thread != blocker.thread
    blocker_gate.set()
    pool.close()


def test_close_returns_the_queued_jobs_and_running_shows_the_running_one() -> None:
    pool = WorkerPool(1, patience=60)
    gate = threading.Event()
    running = _Job(gate)
    pool.submit(running)
    assert running.started.wait(5)
    queued = _Job()
    pool.submit(queued)
    assert pool.running() == [running]
    assert pool.close() == [queued]
    with pytest.raises(RuntimeError, match="closed"):
        pool.submit(_Job())
    gate.set()
    assert running.done.wait(5)
    assert not queued.started.is_set()


@pytest.mark.anyio
async def test_try_submit_takes_a_collector_at_once_and_declines_when_full_or_stopped() -> None:
    supervisor = Supervisor(
        max_running=1, max_waiting=1, workers=1, drain_timeout=5, handoff_timeout=0
    )
    ran = threading.Event()
    started = threading.Event()
    gate = threading.Event()

    def block() -> None:
        started.set()
        gate.wait(10)

    blocked = BackgroundTasks()
    blocked.add_task(block)
    second = BackgroundTasks()
    second.add_task(ran.set)
    assert not supervisor.try_submit(second)  # not serving yet
    async with supervisor.serving():
        assert supervisor.try_submit(blocked)
        assert await anyio.to_thread.run_sync(started.wait, 5)
        assert supervisor.counts() == (0, 1)  # started: its waiting place is free again
        assert supervisor.try_submit(second)  # takes the one waiting place
        third = BackgroundTasks()
        third.add_task(ran.set)
        assert not supervisor.try_submit(third)  # max_waiting reached: submit() must wait
        gate.set()
        with anyio.fail_after(5):
            await supervisor.wait_idle()
    assert ran.is_set()
    assert third.has_pending()  # declined: untouched, still pending


def test_the_eager_pool_runs_queued_jobs_at_once_on_free_threads() -> None:
    pool = WorkerPool(3)  # no patience: the eager policy of awaited jobs (the inline hop)
    gate = threading.Event()
    jobs = [_Job(gate) for _ in range(3)]
    for job in jobs:
        pool.submit(job)
    for job in jobs:  # all three run at once, each in a thread of its own
        assert job.started.wait(5)
    assert len({job.thread for job in jobs}) == 3
    gate.set()
    for job in jobs:
        assert job.done.wait(5)
    pool.close()
