"""What a benchmark run measured, its statistics, and the verdict on the targets.

A `Run` is one process measuring every selected scenario on one backend in one mode (see
`benchmarks/README.md`: `pinned`, one CPU and the garbage collector frozen; `plain`, neither).
Runs travel from the measuring processes to the one that reports them as JSON.

A ratio between two variants is computed round by round: each round of one variant is divided by
the round of the other in the same turn of the interleaving (measured moments apart), and the
ratio reported is the median of these per-round ratios, with their interquartile range (the middle
half of the rounds) as its spread. Pairing cancels most of the machine's drift; the range shows
how much is left.

A target is judged on the lower of the two modes' medians: it is met only if it is met both with
and without pinning and `gc.freeze`, so no setting of the harness can flatter afterward.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MODES",
    "Outcome",
    "Run",
    "ScenarioResult",
    "Summary",
    "Target",
    "judge",
    "summarize",
]

MODES = ("pinned", "plain")
"""The two ways every scenario is measured, in the order they are reported."""


@dataclass(frozen=True)
class Target:
    """A performance target: `variant` must reach `minimum` times the req/s of `baseline`."""

    variant: str
    baseline: str
    minimum: float


@dataclass(frozen=True)
class Summary:
    """The median of some values and their interquartile range (`low` to `high`)."""

    median: float
    low: float
    high: float

    def contains(self, value: float) -> bool:
        """Whether `value` lies within the interquartile range: not told apart from noise."""
        return self.low <= value <= self.high


def summarize(values: Iterable[float]) -> Summary:
    """Return the median and the quartiles of `values` (at least one)."""
    data = sorted(values)
    if not data:
        raise ValueError("summarize() needs at least one value; no round was measured.")
    if len(data) == 1:
        return Summary(data[0], data[0], data[0])
    low, median, high = statistics.quantiles(data, n=4, method="inclusive")
    return Summary(median, low, high)


@dataclass
class ScenarioResult:
    """The requests/s of every round of every variant of one scenario.

    Attributes:
        name: The scenario's name.
        requests: Requests per round.
        rates: Variant name -> its requests/s, one per round, in the order of the rounds (round
            `i` of every variant belongs to the same turn of the interleaving).
        targets: The scenario's targets.
    """

    name: str
    requests: int
    rates: dict[str, list[float]] = field(default_factory=dict)
    targets: tuple[Target, ...] = ()

    def rate(self, variant: str) -> Summary:
        """Return the median requests/s of `variant` over its rounds, with their quartiles."""
        return summarize(self.rates[variant])

    def ratio(self, variant: str, baseline: str) -> Summary:
        """Return how many times faster `variant` is than `baseline`: per-round ratios' summary.

        Raises:
            ValueError: the two variants do not have the same number of rounds (they were not
                measured in the same interleaved turns, so they cannot be paired).
        """
        mine, theirs = self.rates[variant], self.rates[baseline]
        if len(mine) != len(theirs):
            raise ValueError(
                f"{self.name}: {variant!r} has {len(mine)} rounds and {baseline!r} {len(theirs)}; "
                f"rounds can only be paired when both were measured in the same turns."
            )
        return summarize(a / b for a, b in zip(mine, theirs, strict=True))

    def to_json(self) -> dict[str, Any]:
        """Return this result as JSON-compatible data (see `from_json`)."""
        return {
            "name": self.name,
            "requests": self.requests,
            "rates": self.rates,
            "targets": [[t.variant, t.baseline, t.minimum] for t in self.targets],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ScenarioResult:
        """Return the result `to_json` described."""
        return cls(
            name=data["name"],
            requests=data["requests"],
            rates={variant: list(rates) for variant, rates in data["rates"].items()},
            targets=tuple(Target(v, b, m) for v, b, m in data["targets"]),
        )


@dataclass
class Run:
    """Every scenario measured by one process, on one backend, in one mode.

    Attributes:
        backend: "asyncio" or "trio".
        mode: One of `MODES`.
        cpus: The CPUs the process was allowed to run on while measuring (None: unknown).
        rounds: Timed rounds per variant.
        results: One per scenario, in the order they were run.
    """

    backend: str
    mode: str
    cpus: list[int] | None
    rounds: int
    results: list[ScenarioResult]

    def to_json(self) -> dict[str, Any]:
        """Return this run as JSON-compatible data (see `from_json`)."""
        return {
            "backend": self.backend,
            "mode": self.mode,
            "cpus": self.cpus,
            "rounds": self.rounds,
            "results": [result.to_json() for result in self.results],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Run:
        """Return the run `to_json` described."""
        return cls(
            backend=data["backend"],
            mode=data["mode"],
            cpus=data["cpus"],
            rounds=data["rounds"],
            results=[ScenarioResult.from_json(result) for result in data["results"]],
        )


@dataclass(frozen=True)
class Outcome:
    """One target on one backend: the ratio measured in each mode, and the verdict.

    Attributes:
        backend: The backend measured.
        scenario: The scenario's name.
        target: The target.
        ratios: Mode -> the summary of the per-round ratios measured in that mode.
    """

    backend: str
    scenario: str
    target: Target
    ratios: Mapping[str, Summary]

    @property
    def deciding(self) -> str:
        """The mode whose median is the lower: the one the target is judged on."""
        return min(self.ratios, key=lambda mode: self.ratios[mode].median)

    @property
    def met(self) -> bool:
        """Whether the target is met in every mode measured."""
        return self.ratios[self.deciding].median >= self.target.minimum

    @property
    def close(self) -> bool:
        """Whether the target lies within the deciding mode's interquartile range (noise)."""
        return self.ratios[self.deciding].contains(self.target.minimum)


def judge(runs: Sequence[Run]) -> list[Outcome]:
    """Return every target of every scenario on every backend, judged over the modes measured.

    Raises:
        ValueError: one backend's runs measured different scenarios or targets, so their modes
            cannot be compared.
    """
    outcomes: list[Outcome] = []
    for backend in dict.fromkeys(run.backend for run in runs):
        mine = [run for run in runs if run.backend == backend]
        shapes = {tuple((r.name, r.targets) for r in run.results) for run in mine}
        if len(shapes) != 1:
            raise ValueError(
                f"The {backend} runs measured different scenarios or targets in each mode; "
                f"run every mode with the same --scenario options."
            )
        for index, result in enumerate(mine[0].results):
            for target in result.targets:
                ratios = {
                    run.mode: run.results[index].ratio(target.variant, target.baseline)
                    for run in mine
                }
                outcomes.append(Outcome(backend, result.name, target, ratios))
    return outcomes
