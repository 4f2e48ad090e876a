"""Compare afterward's `inject` with hand-written Starlette and FastAPI: `python benchmarks/run.py`.

Prints requests/s per scenario and variant (median of interleaved rounds), then every target of
the issue with the measured ratio and PASS or MISS. Exits 1 if a target is missed, 2 if an app
answered wrongly or a task did not run (the numbers would then mean nothing).

Options: `--quick` for a short run; `--backend trio`; `--scenario NAME` (repeatable) to run only
some scenarios; `--all-cpus` not to pin the process to one CPU; `--profile VARIANT` to print a
cProfile of one variant instead of benchmarking. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import platform
import pstats
import sys
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

import anyio

if __package__ in (None, ""):
    # Run as a script: make `benchmarks` (and afterward from a source checkout) importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.apps import VARIANTS, scenarios
from benchmarks.harness import (
    BenchmarkError,
    Scenario,
    ScenarioResult,
    TargetOutcome,
    evaluate,
    measure_round,
    run_benchmark,
)

FULL_ROUNDS = 60
QUICK_ROUNDS, QUICK_SCALE = 10, 0.5


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or a profile) as the command line asks; return the exit status."""
    args = _parser().parse_args(argv)
    selected = _select(scenarios(), args.scenario)
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else FULL_ROUNDS)
    scale = args.scale or (QUICK_SCALE if args.quick else 1.0)
    cpu = None if args.all_cpus else _pin_to_one_cpu()
    if args.profile:
        for scenario in selected:
            _profile(scenario, args.profile, round(scenario.requests * scale), args.backend)
        return 0
    print(_header(args.backend, rounds, scale, cpu), flush=True)
    try:
        results = run_benchmark(selected, rounds=rounds, scale=scale, backend=args.backend)
    except BenchmarkError as exc:
        print(f"\nINVALID RUN: {exc}", file=sys.stderr)
        return 2
    outcomes = evaluate(results)
    print()
    print(format_rates(results))
    print()
    print(format_targets(outcomes))
    missed = [o for o in outcomes if not o.met]
    print()
    if missed:
        print(f"{len(missed)} of {len(outcomes)} targets missed.")
        return 1
    print(f"All {len(outcomes)} targets met.")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/run.py",
        description="Requests/s of afterward's inject vs hand-written Starlette and FastAPI, "
        "in-process, with interleaved rounds and every task checked.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_ROUNDS} rounds of half the requests (a smoke run, noisy)",
    )
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--rounds", type=int, help=f"timed rounds per variant ({FULL_ROUNDS})")
    parser.add_argument("--scale", type=float, help="multiply the requests per round")
    parser.add_argument(
        "--scenario",
        action="append",
        metavar="NAME",
        help="run only this scenario (repeatable), e.g. --scenario '1 async task'",
    )
    parser.add_argument(
        "--all-cpus",
        action="store_true",
        help="do not pin the process to one CPU (thread hops get slower and much noisier)",
    )
    parser.add_argument(
        "--profile",
        choices=VARIANTS,
        metavar="VARIANT",
        help=f"print a cProfile of one variant ({', '.join(VARIANTS)}) instead of benchmarking",
    )
    return parser


def _select(all_scenarios: list[Scenario], names: list[str] | None) -> list[Scenario]:
    if not names:
        return all_scenarios
    known = {s.name: s for s in all_scenarios}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(f"Unknown scenario {unknown[0]!r}; choose from {', '.join(known)}.")
    return [known[name] for name in names]


def _pin_to_one_cpu() -> int | None:
    """Pin this process (and the worker threads it will start) to one CPU; return it.

    A thread hop between two cores costs a cross-core wake-up whose latency swings from round to
    round by 2x on a small VM; on one core the variants are compared on the same, steady footing.
    """
    if not hasattr(os, "sched_setaffinity"):
        return None  # not Linux: run unpinned
    cpu = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def _header(backend: str, rounds: int, scale: float, cpu: int | None) -> str:
    versions = ", ".join(
        f"{name} {version(name)}" for name in ("afterward", "starlette", "fastapi", "anyio")
    )
    pinning = f"pinned to CPU {cpu}" if cpu is not None else "not pinned"
    return (
        f"afterward benchmark: {backend}, {rounds} rounds per variant, request scale {scale:g}, "
        f"{pinning}\nPython {platform.python_version()}, {versions}"
    )


def format_rates(results: Sequence[ScenarioResult]) -> str:
    """Return the table of median requests/s (with the rounds' spread) and the main ratios."""
    variants = [v for v in VARIANTS if any(v in r.rates for r in results)]
    header = ["scenario", "requests", *variants, "aw/st", "aw/fa", "bare/st"]
    rows = [header]
    for result in results:
        row = [result.scenario.name, str(result.requests)]
        for variant in variants:
            if variant in result.rates:
                row.append(f"{result.median(variant):,.0f} ±{result.spread(variant) / 2:.0%}")
            else:
                row.append("-")
        row += [
            f"{result.ratio('afterward', 'starlette'):.2f}x",
            f"{result.ratio('afterward', 'fastapi'):.2f}x",
            f"{result.ratio('bare', 'starlette'):.2f}x",
        ]
        rows.append(row)
    return (
        "requests/s: median of the rounds (± half their max-min range); ratios: median of the\n"
        "per-round ratios\n" + _table(rows)
    )


def format_targets(outcomes: Sequence[TargetOutcome]) -> str:
    """Return the table of targets: ratio measured, minimum, PASS or MISS."""
    rows = [["scenario", "ratio", "measured", "target", "result"]]
    for outcome in outcomes:
        target = outcome.target
        rows.append(
            [
                outcome.scenario,
                f"{target.variant} / {target.baseline}",
                f"{outcome.ratio:.2f}x",
                f">= {target.minimum:.1f}x",
                "PASS" if outcome.met else "MISS",
            ]
        )
    return _table(rows)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        cells = [
            cell.ljust(width) if column == 0 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _profile(scenario: Scenario, variant: str, requests: int, backend: str) -> None:
    """Print where `variant` spends its time on `scenario` (the event loop's thread only)."""
    profiler = cProfile.Profile()

    async def measure() -> None:
        await measure_round(scenario, variant, requests)  # warm up caches and threads
        gc.collect()
        profiler.enable()
        await measure_round(scenario, variant, requests, collect_garbage=False)
        profiler.disable()

    anyio.run(measure, backend=backend)
    print(f"=== {scenario.name} / {variant}: {requests} requests, {backend} ===")
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    sys.exit(main())
