"""Measure every selected scenario on one backend in one mode: one process of a benchmark run.

`python benchmarks/run.py` starts this module once per backend and mode, each in a fresh Python,
so that nothing one mode does to the process (CPU affinity, which its worker threads inherit;
`gc.freeze`; warm caches) reaches the other:

    python -m benchmarks.measure --backend asyncio --mode plain --out result.json

It writes the `Run` as JSON to `--out`. Exit status 2: an app answered wrongly or a task did not
run (`BenchmarkError`, explained on stderr).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import pstats
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio

from .apps import DETACHED_VARIANTS, VARIANTS, scenarios
from .harness import BenchmarkError, Scenario, measure_round, run_benchmark, serving
from .results import MODES, Run

__all__ = ["main", "measure", "pin_to_one_cpu", "profile", "select"]


def select(all_scenarios: list[Scenario], names: Sequence[str] | None) -> list[Scenario]:
    """Return the scenarios called `names` (all of them if None or empty), in that order.

    Raises:
        SystemExit: a name is not a scenario's (the message lists the known ones).
    """
    if not names:
        return all_scenarios
    known = {s.name: s for s in all_scenarios}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(f"Unknown scenario {unknown[0]!r}; choose from {', '.join(known)}.")
    return [known[name] for name in names]


def pin_to_one_cpu() -> None:
    """Pin this process (and the worker threads it will start) to one CPU, on Linux.

    A thread hop between two cores costs a cross-core wake-up whose latency swings from round to
    round by 2x on a small VM; on one core the variants are compared on the same, steady footing.
    Elsewhere nothing is done, and `allowed_cpus` says so.
    """
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})


def allowed_cpus() -> list[int] | None:
    """Return the CPUs this process may run on, or None where the platform cannot tell."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    return sorted(os.sched_getaffinity(0))


def measure(
    backend: str, mode: str, *, rounds: int, scale: float, names: Sequence[str] | None = None
) -> Run:
    """Measure the scenarios called `names` (default: all) on `backend` in `mode`.

    `pinned` pins the process to one CPU before anything runs and controls the garbage collector
    (see `harness.run_scenario`); `plain` does neither.

    Raises:
        BenchmarkError: an app answered wrongly or a task did not run.
        ValueError: `mode` is not one of `MODES`.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}.")
    selected = select(scenarios(), names)
    pinned = mode == "pinned"
    if pinned:
        pin_to_one_cpu()
    results = run_benchmark(
        selected, rounds=rounds, scale=scale, control_gc=pinned, backend=backend
    )
    return Run(backend, mode, allowed_cpus(), rounds, results)


def profile(backend: str, variant: str, *, scale: float, names: Sequence[str] | None) -> None:
    """Print where `variant` spends its time in each scenario that has it.

    Only the event loop's thread is profiled: a detached variant's sync tasks, which run in the
    middleware's worker threads, are not seen.
    """
    known = VARIANTS + DETACHED_VARIANTS
    if variant not in known:
        raise SystemExit(f"Unknown variant {variant!r}; choose from {', '.join(known)}.")
    for scenario in select(scenarios(), names):
        if variant not in scenario.apps:
            continue
        requests = max(1, round(scenario.requests * scale))
        profiler = cProfile.Profile()
        anyio.run(_profiled_round, profiler, scenario, variant, requests, backend=backend)
        print(f"=== {scenario.name} / {variant}: {requests} requests, {backend} ===")
        stats = pstats.Stats(profiler, stream=sys.stdout)
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(25)


async def _profiled_round(
    profiler: cProfile.Profile, scenario: Scenario, variant: str, requests: int
) -> None:
    async with serving(scenario):
        await measure_round(scenario, variant, requests)  # warm up caches and threads
        gc.collect()
        profiler.enable()
        await measure_round(scenario, variant, requests, collect_garbage=False)
        profiler.disable()


def main(argv: Sequence[str] | None = None) -> int:
    """Measure as the command line asks, write the run as JSON; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.measure")
    parser.add_argument("--backend", choices=["asyncio", "trio"], required=True)
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--scale", type=float, required=True)
    parser.add_argument("--scenario", action="append", metavar="NAME")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        run = measure(
            args.backend, args.mode, rounds=args.rounds, scale=args.scale, names=args.scenario
        )
    except BenchmarkError as exc:
        print(f"INVALID RUN ({args.backend}, {args.mode}): {exc}", file=sys.stderr)
        return 2
    args.out.write_text(json.dumps(run.to_json()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
