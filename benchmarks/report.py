"""Text tables of a benchmark run: the machine, requests/s per variant, and the target figures."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .results import MODES, Outcome, Run, Summary, summarize

__all__ = [
    "MODE_LABELS",
    "describe_machine",
    "format_detached",
    "format_figures",
    "format_rates",
    "format_ratio",
]

MODE_LABELS = {"pinned": "pinned+frozen", "plain": "plain"}
PACKAGES = ("afterward", "starlette", "fastapi", "anyio", "trio")
VARIANTS = ("starlette", "afterward", "fastapi", "bare")
CONTEXT_RATIOS = (("afterward", "starlette"), ("afterward", "fastapi"), ("bare", "starlette"))
DETACHED_VARIANTS = ("afterward detached", "current_tasks detached")
DETACHED_RATIOS = (
    ("afterward", "starlette", "inline/st"),
    ("afterward detached", "starlette", "detached/st"),
    ("current_tasks detached", "starlette", "current_tasks/st"),
    ("afterward detached", "afterward", "detached/inline"),
)


def describe_machine() -> str:
    """Return the CPU model, the CPU count, the Python and the versions of the packages measured."""
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    return (
        f"{_cpu_model()}, {os.cpu_count()} CPUs; {platform.python_implementation()} "
        f"{platform.python_version()} on {platform.system()}; {', '.join(versions)}"
    )


def _cpu_model() -> str:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU"
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return "unknown CPU"


def format_ratio(summary: Summary) -> str:
    """Return `summary` as "median [low-high]", e.g. "0.93x [0.91-0.95]"."""
    return f"{summary.median:.2f}x [{summary.low:.2f}-{summary.high:.2f}]"


def format_rates(runs: Sequence[Run]) -> str:
    """Return, per run, the median requests/s of every variant and the main per-round ratios.

    A rate is shown with half its interquartile range relative to the median (its noise).
    """
    header = ["backend", "mode", "scenario", "requests", *VARIANTS]
    header += [f"{v[:2]}/{b[:2]}" for v, b in CONTEXT_RATIOS]
    rows = [header]
    for run in runs:
        for result in run.results:
            row = [run.backend, MODE_LABELS[run.mode], result.name, str(result.requests)]
            row += [_rate(result.rates, variant) for variant in VARIANTS]
            for variant, baseline in CONTEXT_RATIOS:
                if variant in result.rates and baseline in result.rates:
                    row.append(f"{result.ratio(variant, baseline).median:.2f}x")
                else:
                    row.append("-")
            rows.append(row)
    return (
        "requests/s: median of the rounds ± half their interquartile range; ratios: median of\n"
        "the per-round ratios\n" + _table(rows)
    )


def format_detached(runs: Sequence[Run]) -> str:
    """Return, per run, the detached variants' requests/s and their ratios next to the inline one.

    Empty when no scenario of the runs has a detached variant.
    """
    rows = [["backend", "mode", "scenario", "detached", "current_tasks"]]
    rows[0] += [label for _, _, label in DETACHED_RATIOS]
    for run in runs:
        for result in run.results:
            if not any(variant in result.rates for variant in DETACHED_VARIANTS):
                continue
            row = [run.backend, MODE_LABELS[run.mode], result.name]
            row += [_rate(result.rates, variant) for variant in DETACHED_VARIANTS]
            for variant, baseline, _ in DETACHED_RATIOS:
                if variant in result.rates and baseline in result.rates:
                    row.append(f"{result.ratio(variant, baseline).median:.2f}x")
                else:
                    row.append("-")
            rows.append(row)
    if len(rows) == 1:
        return ""
    return (
        "detached (under BackgroundTasksMiddleware, lifespan running; each round ends when its "
        "tasks have run):\n" + _table(rows)
    )


def _rate(rates: dict[str, list[float]], variant: str) -> str:
    if variant not in rates:
        return "-"
    rate = summarize(rates[variant])
    noise = (rate.high - rate.low) / 2 / rate.median
    return f"{rate.median:,.0f} ±{noise:.0%}"


def format_figures(outcomes: Sequence[Outcome]) -> str:
    """Return the targets per backend: each mode's ratio [interquartile range] and the verdict.

    The verdict is taken on the lower median of the modes; "(noise)" marks a target that lies
    within that mode's interquartile range, where one run cannot tell it apart from noise.
    """
    tables = []
    for backend in dict.fromkeys(o.backend for o in outcomes):
        mine = [o for o in outcomes if o.backend == backend]
        modes = [mode for mode in MODES if any(mode in o.ratios for o in mine)]
        rows = [[backend, "target", *(MODE_LABELS[mode] for mode in modes), "verdict"]]
        for outcome in mine:
            target = outcome.target
            verdict = "PASS" if outcome.met else "MISS"
            if outcome.close:
                verdict += " (noise)"
            rows.append(
                [
                    f"{outcome.scenario}, {target.variant} / {target.baseline}",
                    f">= {_minimum(target.minimum)}x",
                    *(format_ratio(outcome.ratios[mode]) for mode in modes),
                    verdict,
                ]
            )
        tables.append(_table(rows))
    return "\n\n".join(tables)


def _minimum(value: float) -> str:
    """Return a target's minimum as written in the README: 1.0, 5.0, 0.95."""
    return f"{value:.1f}" if round(value, 1) == value else f"{value:.2f}"


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
