"""End-to-end benchmark: uvicorn servers (httptools + uvloop), load from wrk, every task counted.

`python benchmarks/e2e.py` starts one uvicorn process per variant of `benchmarks/e2e_apps.py`, all
on 127.0.0.1, then measures them in interleaved rounds: in each round every variant gets one wrk
run (`wrk -t1 -c50 -d2s` by default), the starting variant rotating from round to round, so the
machine's drift touches every variant alike. A variant's requests/s is the median of its rounds; a
ratio between two variants is the median of their per-round ratios (the same round, so measured
seconds apart). The targets of issue 6 are printed with PASS or MISS.

Every task is counted. Each app counts the requests its endpoint handled and the tasks that ran,
and answers `GET /count`. After each round the harness waits until the server's tasks have caught
up (detached tasks may still be running when wrk stops), then checks that

- exactly `tasks_per_request x requests handled` tasks ran;
- wrk received a 2xx for every request handled, except those in flight when wrk stopped (at most
  one per connection), and no non-2xx response;
- the server wrote nothing to its stderr (afterward logs every task it does not run).

A mismatch is printed loudly and makes the run invalid (exit status 2). Exit status 1: a target
missed; 0: all met. `--profile VARIANT` records the server under load with py-spy instead.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import IO

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

if __name__ == "__main__":
    # Like benchmarks/run.py: from a fresh clone with only Python, set up `.venv` (with the
    # servers' extras) and run again inside it.
    from benchmarks import run as _setup  # standard library only until it re-runs

    if not _setup.in_project_environment():
        _python = _setup.ensure_environment(["test", "bench"])
        sys.stdout.flush()
        os.execv(_python, [_python, str(Path(__file__).resolve()), *sys.argv[1:]])

from benchmarks.e2e_apps import EXPECTED_BODY, PATH, VARIANTS

__all__ = [
    "TARGETS",
    "BenchmarkError",
    "Count",
    "E2ETarget",
    "Results",
    "Server",
    "WrkResult",
    "check_round",
    "main",
    "parse_wrk",
    "run_rounds",
]

ROOT = Path(__file__).resolve().parent.parent
WRK_INSTALL = "wrk was not found on PATH. Install it with `apt-get install wrk` (Debian, Ubuntu)."
WRK_SCRIPT = 'wrk.method = "POST"\n'


class BenchmarkError(Exception):
    """A server did not start or answer as expected: the numbers would mean nothing."""


# --- wrk ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run reports."""

    requests: int
    """Responses received (wrk's "N requests in ...")."""
    seconds: float
    rate: float
    """wrk's "Requests/sec"."""
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        """Responses with a 2xx (or 3xx, which these apps never send) status."""
        return self.requests - self.non_2xx


_REQUESTS = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)\b", re.MULTILINE)
_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_NON_2XX = re.compile(r"^\s*Non-2xx or 3xx responses:\s+(\d+)", re.MULTILINE)
_SOCKET = re.compile(
    r"^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.MULTILINE
)
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_wrk(text: str) -> WrkResult:
    """Read wrk's standard report.

    Raises:
        BenchmarkError: the text lacks the request count or the rate (wrk failed).
    """
    requests, rate = _REQUESTS.search(text), _RATE.search(text)
    if requests is None or rate is None:
        raise BenchmarkError(f"Could not read wrk's report; it printed:\n{text}")
    non_2xx = _NON_2XX.search(text)
    socket = _SOCKET.search(text)
    errors: dict[str, int] = {}
    if socket is not None:
        for name, value in zip(
            ("connect", "read", "write", "timeout"), socket.groups(), strict=True
        ):
            if int(value):
                errors[name] = int(value)
    return WrkResult(
        requests=int(requests.group(1)),
        seconds=float(requests.group(2)) * _UNITS[requests.group(3)],
        rate=float(rate.group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=errors,
    )


def find_wrk() -> str | None:
    """Return the path of wrk, or None."""
    return shutil.which("wrk")


def run_wrk(
    wrk: str, port: int, *, duration: int, connections: int, threads: int, script: Path
) -> WrkResult:
    """Load `PATH` on 127.0.0.1:`port` for `duration` seconds and return wrk's report."""
    command = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}{PATH}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    if done.returncode != 0:
        raise BenchmarkError(f"wrk exited with {done.returncode}: {done.stderr or done.stdout}")
    return parse_wrk(done.stdout)


# --- servers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Count:
    """A server's counters: benchmarked requests its endpoint handled, tasks that ran, and how
    many of those ran in afterward's worker threads."""

    requests: int
    tasks: int
    in_workers: int = 0


class Server:
    """One variant's uvicorn process on a free port of 127.0.0.1."""

    def __init__(self, variant: str, *, loop: str, http: str, logs: Path) -> None:
        self.variant = variant
        self.tasks_per_request = VARIANTS[variant].tasks
        self.log_path = logs / f"{variant}.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        self._log_seen = 0
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.e2e_apps", variant, "--loop", loop, "--http", http],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line.isdigit():
            self.stop()
            raise BenchmarkError(
                f"Server {variant} did not start (printed {line!r}); its log:\n{self.new_log()}"
            )
        self.port = int(line)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.count()
                return
            except (OSError, http.client.HTTPException) as exc:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise BenchmarkError(
                        f"Server {self.variant} does not answer ({exc!r}); its log:\n"
                        f"{self.new_log()}"
                    ) from exc
                time.sleep(0.05)

    def _get(self, method: str, path: str) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(method, path)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def count(self) -> Count:
        """Ask the server for its counters."""
        status, body = self._get("GET", "/count")
        if status != 200:
            raise BenchmarkError(f"GET /count on {self.variant} answered {status}: {body!r}")
        data = json.loads(body)
        return Count(
            requests=int(data["requests"]),
            tasks=int(data["tasks"]),
            in_workers=int(data["in_workers"]),
        )

    def check_one_request(self) -> None:
        """Send the benchmarked request once: 200, the exact body, and its tasks all run.

        Raises:
            BenchmarkError: the server answered or counted anything else.
        """
        before = self.count()
        status, body = self._get("POST", PATH)
        if status != 200 or body != EXPECTED_BODY:
            raise BenchmarkError(
                f"{self.variant} answered {status} {body!r}, expected 200 {EXPECTED_BODY!r}"
            )
        after = self.settle(before, 1)
        problems = check_counts(self.tasks_per_request, before, after)
        if after.requests - before.requests != 1:
            problems.append(f"{after.requests - before.requests} requests counted for 1 sent")
        if problems:
            raise BenchmarkError(f"{self.variant}: " + "; ".join(problems))

    def settle(self, before: Count, minimum: int = 0, timeout: float = 30.0) -> Count:
        """Wait until every handled request's tasks have run (or nothing moves for 2 s)."""
        deadline = time.monotonic() + timeout
        last, still_since = self.count(), time.monotonic()
        while True:
            handled = last.requests - before.requests
            if handled >= minimum and last.tasks - before.tasks == handled * self.tasks_per_request:
                # Counted once more after a pause: a request in flight when wrk stopped may
                # still be inside the endpoint.
                time.sleep(0.05)
                again = self.count()
                if again == last:
                    return last
            now = time.monotonic()
            if now > deadline or now - still_since > 2.0:
                return last
            time.sleep(0.02)
            current = self.count()
            if current != last:
                last, still_since = current, time.monotonic()

    def new_log(self) -> str:
        """Return what the server wrote to stderr since the last call."""
        if not self._log.closed:
            self._log.flush()
        text = self.log_path.read_bytes()[self._log_seen :]
        self._log_seen += len(text)
        return text.decode("utf-8", "replace")

    def stop(self) -> None:
        """SIGTERM (uvicorn shuts down gracefully, afterward drains), then SIGKILL after 15 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()


@contextlib.contextmanager
def servers(names: Sequence[str], *, loop: str, http: str, logs: Path) -> Iterator[list[Server]]:
    """Start a server per variant, check each answers correctly; stop them all at the end."""
    started: list[Server] = []
    try:
        for name in names:
            started.append(Server(name, loop=loop, http=http, logs=logs))
        for server in started:
            server.check_one_request()
        yield started
    finally:
        for server in started:
            server.stop()


# --- checking and measuring ---------------------------------------------------------------------


def check_counts(tasks_per_request: int, before: Count, after: Count) -> list[str]:
    """Return what is wrong with the tasks counted between `before` and `after`."""
    handled = after.requests - before.requests
    tasks = after.tasks - before.tasks
    expected = handled * tasks_per_request
    if tasks != expected:
        return [
            f"{tasks} tasks ran for {handled} requests handled, expected {expected} "
            f"({tasks_per_request} per request): {expected - tasks} missing"
            if tasks < expected
            else f"{tasks} tasks ran for {handled} requests handled, expected {expected} "
            f"({tasks_per_request} per request): {tasks - expected} too many"
        ]
    return []


def check_round(
    tasks_per_request: int, wrk: WrkResult, before: Count, after: Count, connections: int
) -> list[str]:
    """Return every mismatch of one round: tasks vs requests handled, handled vs wrk's 2xx.

    A request can be handled without wrk counting it: wrk stops after `duration` and drops the
    responses still in flight, at most one per connection. Nothing else may differ.
    """
    problems = check_counts(tasks_per_request, before, after)
    handled = after.requests - before.requests
    if wrk.non_2xx:
        problems.append(f"wrk received {wrk.non_2xx} non-2xx responses")
    if not wrk.ok <= handled <= wrk.ok + connections:
        problems.append(
            f"the server handled {handled} requests but wrk received {wrk.ok} 2xx responses "
            f"(at most {connections} may be in flight when wrk stops)"
        )
    tasks = after.tasks - before.tasks
    if tasks < wrk.ok * tasks_per_request:
        problems.append(
            f"{tasks} tasks ran for {wrk.ok} 2xx responses x {tasks_per_request} tasks each"
        )
    return problems


@dataclass(frozen=True)
class E2ETarget:
    """A target of issue 6: `variant` must reach `minimum` x `baseline`'s requests/s."""

    label: str
    variant: str
    baseline: str
    minimum: float


TARGETS = (
    E2ETarget("detached, 1 sync task, inject endpoint", "detached-sync", "starlette-sync", 6.0),
    E2ETarget(
        "detached, 1 sync task, plain endpoint + current_tasks()",
        "detached-sync-plain",
        "starlette-sync",
        6.0,
    ),
    E2ETarget("detached, 10 sync tasks", "detached-sync10", "starlette-sync10", 6.0),
    E2ETarget("detached, seed example", "detached-seed", "starlette-seed", 6.0),
    E2ETarget("middleware with no task: cost <= 5 %", "detached-none", "starlette-none", 0.95),
    E2ETarget("inline, no task", "inline-none", "starlette-none", 0.95),
    E2ETarget("inline, 1 async task", "inline-async", "starlette-async", 0.95),
    E2ETarget("inline >= Litestar, 1 sync task", "inline-sync", "litestar-sync", 1.0),
    E2ETarget("inline >= Litestar, seed example", "inline-seed", "litestar-seed", 1.0),
)


@dataclass
class Results:
    """Requests/s of every round of every variant (rounds in the same order for all)."""

    rates: dict[str, list[float]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    inline: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Detached variants whose tasks did not all run in afterward's worker threads:
    (tasks in the workers, tasks) summed over the rounds."""

    def median(self, variant: str) -> float:
        """The median requests/s of `variant`."""
        return statistics.median(self.rates[variant])

    def spread(self, variant: str) -> float:
        """(max - min) / median of `variant`'s rounds."""
        rates = self.rates[variant]
        return (max(rates) - min(rates)) / statistics.median(rates)

    def ratio(self, variant: str, baseline: str) -> float:
        """The median over rounds of `variant`'s requests/s / `baseline`'s in the same round."""
        pairs = zip(self.rates[variant], self.rates[baseline], strict=True)
        return statistics.median(mine / theirs for mine, theirs in pairs)


def interleaving(names: Sequence[str], round_index: int) -> list[str]:
    """The order of the variants in round `round_index`: the starting one rotates."""
    shift = round_index % len(names)
    return [*names[shift:], *names[:shift]]


def run_rounds(
    started: Sequence[Server],
    *,
    rounds: int,
    duration: int,
    connections: int,
    threads: int,
    wrk: str,
    progress: IO[str] | None = None,
) -> Results:
    """Measure every server in `rounds` interleaved rounds, checking every task each round."""
    results = Results(rates={server.variant: [] for server in started})
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(WRK_SCRIPT)
        by_name = {server.variant: server for server in started}
        for index in range(rounds):
            for name in interleaving(list(by_name), index):
                server = by_name[name]
                before = server.settle(server.count())
                report = run_wrk(
                    wrk,
                    server.port,
                    duration=duration,
                    connections=connections,
                    threads=threads,
                    script=script,
                )
                after = server.settle(before, report.ok)
                problems = check_round(server.tasks_per_request, report, before, after, connections)
                log = server.new_log().strip()
                if log:
                    problems.append(f"the server wrote to stderr:\n{log}")
                if report.socket_errors:
                    problems.append(f"wrk socket errors: {report.socket_errors}")
                for problem in problems:
                    message = f"round {index + 1}, {name}: {problem}"
                    results.problems.append(message)
                    if progress is not None:
                        print(f"!!! COUNT MISMATCH !!! {message}", file=progress, flush=True)
                results.rates[name].append(report.rate)
                note_detachment(results, name, before, after)
                if progress is not None:
                    print(
                        f"round {index + 1}/{rounds}  {name:<20} {report.rate:>10,.0f} req/s  "
                        f"{after.tasks - before.tasks:>9,} tasks for "
                        f"{after.requests - before.requests:,} requests "
                        f"(wrk: {report.ok:,} 2xx)",
                        file=progress,
                        flush=True,
                    )
    return results


# --- reporting ----------------------------------------------------------------------------------


def note_detachment(results: Results, name: str, before: Count, after: Count) -> None:
    """Record a detached variant whose tasks ran anywhere but in afterward's worker threads.

    Such a variant measures the inline path, not detached mode: its figures are valid, but they
    answer another question, and the tables say so.
    """
    if not VARIANTS[name].detached:
        return
    tasks = after.tasks - before.tasks
    in_workers = after.in_workers - before.in_workers
    if in_workers < tasks or name in results.inline:
        seen_workers, seen_tasks = results.inline.get(name, (0, 0))
        results.inline[name] = (seen_workers + in_workers, seen_tasks + tasks)


def format_detachment(results: Results) -> str:
    """Loud lines for the detached variants whose tasks did not run in the worker threads."""
    return "\n".join(
        f"!!! NOT DETACHED !!! {name}: {workers:,} of {tasks:,} tasks ran in afterward's worker "
        f"threads; the others ran inside their requests, so its figures measure the inline path."
        for name, (workers, tasks) in results.inline.items()
        if workers < tasks
    )


def format_rates(results: Results) -> str:
    """The table of variants: median requests/s, spread, ratio to Starlette's same scenario."""
    lines = [
        f"{'variant':<20} {'what':<58} {'req/s':>9} {'spread':>7} {'x Starlette':>11}",
    ]
    for name in results.rates:
        variant = VARIANTS[name]
        baseline = f"starlette-{variant.scenario}"
        versus = (
            f"{results.ratio(name, baseline):.2f}x"
            if baseline in results.rates and baseline != name
            else ""
        )
        flag = "  NOT DETACHED" if name in results.inline else ""
        lines.append(
            f"{name:<20} {variant.description:<58} {results.median(name):>9,.0f} "
            f"{results.spread(name):>6.0%} {versus:>11}{flag}"
        )
    return "\n".join(lines)


def format_targets(results: Results) -> tuple[str, int, int]:
    """The targets table; returns it with the number of targets checked and missed."""
    lines = [f"{'target':<56} {'measured':>9} {'needed':>8}  result"]
    checked = missed = 0
    for target in TARGETS:
        if target.variant not in results.rates or target.baseline not in results.rates:
            continue
        ratio = results.ratio(target.variant, target.baseline)
        met = ratio >= target.minimum
        checked += 1
        missed += not met
        lines.append(
            f"{target.label:<56} {ratio:>8.2f}x {'>= ' + format(target.minimum, 'g'):>7}x  "
            f"{'PASS' if met else 'MISS'}   ({target.variant} / {target.baseline})"
        )
    return "\n".join(lines), checked, missed


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def machine_description(wrk: str) -> str:
    """Where and with what the benchmark runs: CPU, cores, load, versions."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    wrk_version = subprocess.run([wrk, "-v"], capture_output=True, text=True).stdout
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    packages = ", ".join(
        f"{name} {_version(name)}"
        for name in (
            "afterward",
            "starlette",
            "uvicorn",
            "uvloop",
            "httptools",
            "litestar",
            "anyio",
        )
    )
    return (
        f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} CPUs, "
        f"load average {load}\nPython {platform.python_version()}; {packages}\n"
        f"{wrk_version.splitlines()[0] if wrk_version else 'wrk (version unknown)'}"
    )


# --- profiling ----------------------------------------------------------------------------------


def profile(
    variant: str,
    *,
    duration: int,
    connections: int,
    threads: int,
    loop: str,
    http: str,
    keep: Path | None = None,
) -> int:
    """Record `variant`'s server with py-spy while wrk loads it; print where the time goes."""
    wrk, py_spy = find_wrk(), shutil.which("py-spy") or _venv_tool("py-spy")
    if wrk is None:
        print(WRK_INSTALL, file=sys.stderr)
        return 2
    if py_spy is None:
        print("py-spy was not found: `pip install py-spy` (it is in the bench extra).")
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "profile.txt"
        script = Path(tmp) / "post.lua"
        script.write_text(WRK_SCRIPT)
        with servers([variant], loop=loop, http=http, logs=Path(tmp)) as (server,):
            spy = subprocess.Popen(
                [
                    py_spy,
                    "record",
                    "--pid",
                    str(server.process.pid),
                    "--duration",
                    f"{duration + 1:.0f}",
                    "--rate",
                    "250",
                    "--threads",
                    "--nonblocking",
                    "--format",
                    "raw",
                    "--output",
                    str(raw),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            time.sleep(0.5)
            report = run_wrk(
                wrk,
                server.port,
                duration=duration,
                connections=connections,
                threads=threads,
                script=script,
            )
            _, err = spy.communicate(timeout=duration + 60)
            if spy.returncode != 0:
                print(f"py-spy failed ({spy.returncode}): {err}", file=sys.stderr)
                return 2
        print(f"{variant}: {report.rate:,.0f} req/s under py-spy (sampling slows it down)\n")
        text = raw.read_text()
        print(summarize_profile(text))
        if keep is not None:
            keep.write_text(text)
            print(f"\nThe raw stacks (py-spy's collapsed format) are in {keep}.")
    return 0


def _venv_tool(name: str) -> str | None:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else None


def summarize_profile(raw: str, top: int = 25) -> str:
    """Summarize py-spy's raw (collapsed) stacks: samples per thread, top self and total frames."""
    per_thread: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        count = int(number)
        frames = stack.split(";")
        thread = re.sub(r"\s*\(?0x[0-9a-f]+\)?", "", frames[0])
        thread = re.sub(r"-\d+", "-N", thread)
        per_thread[thread] += count
        samples += count
        own[frames[-1]] += count
        for frame in set(frames[1:]):
            total[frame] += count
    lines = [f"{samples} samples (active threads only)", "", "per thread:"]
    lines += [f"  {n / samples:6.1%}  {name}" for name, n in per_thread.most_common()]
    lines += ["", "self time:"]
    lines += [f"  {n / samples:6.1%}  {frame}" for frame, n in own.most_common(top)]
    lines += ["", "total time (frame on the stack):"]
    lines += [f"  {n / samples:6.1%}  {frame}" for frame, n in total.most_common(top)]
    return "\n".join(lines)


# --- command line -------------------------------------------------------------------------------


def missing_modules(names: Sequence[str], *, loop: str, http: str) -> list[str]:
    """Return the modules the servers of `names` need that cannot be imported."""
    needed = {"uvicorn"}
    needed.update(module for module in (loop, http) if module in ("uvloop", "httptools"))
    if any(name.startswith("litestar") for name in names):
        needed.add("litestar")
    return sorted(module for module in needed if importlib.util.find_spec(module) is None)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/e2e.py",
        description="End-to-end requests/s through uvicorn under wrk: afterward (inline and "
        "detached), hand-written Starlette and Litestar, every task counted.",
    )
    parser.add_argument("--quick", action="store_true", help="2 rounds of 1 s: a smoke run")
    parser.add_argument("--rounds", type=int, help="rounds per variant (default 8)")
    parser.add_argument(
        "--duration", type=int, help="whole seconds per wrk run (default 2; wrk takes no fraction)"
    )
    parser.add_argument("--connections", type=int, default=50, help="wrk -c (default 50)")
    parser.add_argument("--threads", type=int, default=1, help="wrk -t (default 1)")
    parser.add_argument(
        "--variant",
        action="append",
        choices=list(VARIANTS),
        help="only this variant (repeatable); targets need both of their variants",
    )
    parser.add_argument("--loop", default="uvloop", help="uvicorn --loop (default uvloop)")
    parser.add_argument("--http", default="httptools", help="uvicorn --http (default httptools)")
    parser.add_argument(
        "--profile", metavar="VARIANT", choices=list(VARIANTS), help="py-spy one variant instead"
    )
    parser.add_argument(
        "--profile-raw", metavar="FILE", type=Path, help="also save py-spy's collapsed stacks here"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark as the command line asks; return the exit status."""
    args = _parser().parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 8)
    duration = args.duration or (1 if args.quick else 2)
    if args.profile:
        return profile(
            args.profile,
            duration=duration,
            connections=args.connections,
            threads=args.threads,
            loop=args.loop,
            http=args.http,
            keep=args.profile_raw,
        )
    wrk = find_wrk()
    if wrk is None:
        print(WRK_INSTALL, file=sys.stderr)
        return 2
    names = args.variant or list(VARIANTS)
    missing = missing_modules(names, loop=args.loop, http=args.http)
    if missing:
        print(
            f"Missing {', '.join(missing)}: install the bench extra, `pip install -e '.[bench]'`.",
            file=sys.stderr,
        )
        return 2
    print(machine_description(wrk))
    print(
        f"{len(names)} uvicorn servers (--loop {args.loop} --http {args.http}, no access log), "
        f"{rounds} interleaved rounds of wrk -t{args.threads} -c{args.connections} "
        f"-d{duration}s each\n",
        flush=True,
    )
    try:
        with (
            tempfile.TemporaryDirectory() as logs,
            servers(names, loop=args.loop, http=args.http, logs=Path(logs)) as started,
        ):
            results = run_rounds(
                started,
                rounds=rounds,
                duration=duration,
                connections=args.connections,
                threads=args.threads,
                wrk=wrk,
                progress=sys.stdout,
            )
    except BenchmarkError as exc:
        print(f"\nINVALID RUN: {exc}", file=sys.stderr)
        return 2
    print(f"\nload average after the run: {', '.join(f'{v:.2f}' for v in os.getloadavg())}\n")
    print(format_rates(results))
    print()
    detachment = format_detachment(results)
    if detachment:
        print(detachment)
        print()
    table, checked, missed = format_targets(results)
    print(table)
    print()
    if results.problems:
        print(f"INVALID RUN: {len(results.problems)} counting mismatch(es):", file=sys.stderr)
        for problem in results.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    if missed:
        print(f"{missed} of {checked} targets missed.")
        return 1
    print(f"All {checked} targets met.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
