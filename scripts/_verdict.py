"""Judge the outcomes of the upstream suites against the expected differences (for compat.py).

Standard library only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

from _upstream import Suite

__all__ = ["Expected", "Run", "Verdict", "judge", "report"]

DOCS = "docs/compatibility.md"


@dataclasses.dataclass(frozen=True)
class Expected:
    """A test that fails against afterward by design."""

    reason: str
    anchor: str
    """The section of docs/compatibility.md that explains the difference."""

    @property
    def link(self) -> str:
        return f"{DOCS}#{self.anchor}"


FAILED = frozenset({"failed", "error"})


@dataclasses.dataclass
class Run:
    """The outcome of one upstream suite."""

    suite: Suite
    status: int
    log: Path
    results: dict[str, dict[str, str]]
    """'<project>:<node id>' -> {"outcome": ..., "message": ...}."""


@dataclasses.dataclass
class Verdict:
    """What the runs mean against the list of expected differences."""

    counts: dict[str, int]
    expected_failures: list[str]
    unexpected_failures: list[str]
    unexpected_passes: list[str]
    not_collected: list[str]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not (
            self.unexpected_failures
            or self.unexpected_passes
            or self.not_collected
            or self.problems
        )


def judge(runs: Sequence[Run], expected: Mapping[str, Expected]) -> Verdict:
    """Compare the outcomes of `runs` with `expected`."""
    outcomes = {node: result["outcome"] for run in runs for node, result in run.results.items()}
    counts: dict[str, int] = {}
    for outcome in outcomes.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    failing = [node for node, outcome in outcomes.items() if outcome in FAILED]
    problems = []
    for run in runs:
        if run.status not in (0, 1):
            problems.append(
                f"pytest exited with status {run.status} on {run.suite.project}'s tests "
                f"(see {run.log})."
            )
        for entry in run.suite.selected:
            prefix = f"{run.suite.project}:{entry}"
            if not any(
                node == prefix or node.startswith((f"{prefix}::", f"{prefix}/"))
                for node in outcomes
            ):
                problems.append(f"{prefix} ran no test (see {run.log}).")
    known = [node for node in expected if node.partition(":")[0] in {r.suite.project for r in runs}]
    return Verdict(
        counts=counts,
        expected_failures=[node for node in failing if node in expected],
        unexpected_failures=[node for node in failing if node not in expected],
        unexpected_passes=[n for n in known if outcomes.get(n) in ("passed", "xfailed", "skipped")],
        not_collected=[node for node in known if node not in outcomes],
        problems=problems,
    )


def report(
    runs: Sequence[Run], verdict: Verdict, expected: Mapping[str, Expected], *, logs: Path
) -> None:
    """Print what failed and why, then the one-line summary (the pytest logs are in `logs`)."""
    messages = {node: r for run in runs for node, r in run.results.items()}
    if verdict.expected_failures:
        print("\nExpected differences (documented):")
        for node in verdict.expected_failures:
            print(f"  {node}\n      {expected[node].link}")
    sections = [
        ("Unexpected failures (not in EXPECTED):", verdict.unexpected_failures),
        (
            "Expected differences that did not fail (remove them from EXPECTED):",
            verdict.unexpected_passes,
        ),
        (
            "Expected differences that were not collected (stale ids in EXPECTED):",
            verdict.not_collected,
        ),
    ]
    for title, nodes in sections:
        if nodes:
            print(f"\n{title}")
            for node in nodes:
                message = _first_line(messages.get(node, {}).get("message", ""))
                print(f"  {node}" + (f"\n      {message}" if message else ""))
    for problem in verdict.problems:
        print(f"\n{problem}")
    c = verdict.counts
    failed = c.get("failed", 0) + c.get("error", 0)
    parts = [
        f"{c.get('passed', 0)} passed",
        f"{failed} failed ({len(verdict.expected_failures)} expected, "
        f"{len(verdict.unexpected_failures)} unexpected)",
    ]
    parts += [f"{c[k]} {k}" for k in ("skipped", "xfailed") if c.get(k)]
    if verdict.unexpected_passes:
        parts.append(f"{len(verdict.unexpected_passes)} expected differences passed")
    print(f"\n{', '.join(parts)}; logs in {logs}/.")
    print("Compatibility: OK" if verdict.ok else "Compatibility: FAILED")


def _first_line(message: str) -> str:
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[0] if lines else ""
