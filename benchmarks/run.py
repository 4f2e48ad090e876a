"""Compare afterward's `inject` with hand-written Starlette and FastAPI: `python benchmarks/run.py`.

Needs only Python: like `scripts/test.py`, it creates `.venv` and installs afterward with its test
dependencies (starlette, fastapi, trio) on first use, then runs itself again with the environment's
Python. There, each backend (asyncio, trio) is measured in two modes, each in a fresh process:
`pinned` (one CPU, the garbage collector frozen and collected before each round) and `plain`
(neither). It prints requests/s per variant, then every target with the median and interquartile
range of the per-round ratios in each mode, judged on the lower of the two medians.

Exit status: 0 every target met, 1 one missed, 2 an app answered wrongly or a task did not run
(the numbers would mean nothing). Options: `--help`, and benchmarks/README.md.
"""

from __future__ import annotations

# Only the standard library up to the re-run in the environment: this must start on a fresh clone.
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import _venv  # found through the path entry above, on every platform

ROOT = _venv.ROOT
EXTRAS = ["test"]
"""The extras `.venv` needs: `test` has fastapi and trio (and is what scripts/test.py installs)."""

BACKENDS = ("asyncio", "trio")
MODES = ("pinned", "plain")  # the same as benchmarks.results.MODES, which needs no import here
FULL_ROUNDS = 40
QUICK_ROUNDS, QUICK_SCALE = 5, 0.25


def ensure_environment(extras: Sequence[str]) -> str:
    """Create or update `.venv` with `extras`; return its Python (for the other benchmarks)."""
    return str(_venv.ensure(list(extras)))


def in_project_environment() -> bool:
    """Whether this Python is the project's `.venv` (where afterward and the frameworks are)."""
    return Path(sys.prefix).resolve() == _venv.VENV.resolve()


def rerun_in_environment(argv: Sequence[str]) -> int:
    """Create or update `.venv`, then run this script again with its Python; return its status.

    On POSIX the process is replaced (`os.execv`), so signals and the exit status are the child's.
    """
    python = _venv.ensure(EXTRAS)
    command = [str(python), str(Path(__file__).resolve()), *argv]
    sys.stdout.flush()
    if os.name == "posix":
        _exec(command)
    return subprocess.call(command, cwd=ROOT)


def _exec(command: list[str]) -> NoReturn:
    os.execv(command[0], command)


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """Return the command line's options."""
    parser = argparse.ArgumentParser(
        prog="python benchmarks/run.py",
        description="Requests/s of afterward's inject vs hand-written Starlette and FastAPI, "
        "in-process, interleaved rounds, every task checked, pinned+frozen and plain.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_ROUNDS} rounds of a quarter of the requests (a smoke run, noisy)",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        action="append",
        help="measure only this backend (repeatable; default: both)",
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        action="append",
        help="measure only this mode (repeatable; default: both). Targets are judged on both.",
    )
    parser.add_argument("--rounds", type=int, help=f"timed rounds per variant ({FULL_ROUNDS})")
    parser.add_argument("--scale", type=float, help="multiply the requests per round (1)")
    parser.add_argument(
        "--scenario",
        action="append",
        metavar="NAME",
        help="run only this scenario (repeatable), e.g. --scenario '1 async task'",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also save every round here")
    parser.add_argument(
        "--profile",
        metavar="VARIANT",
        help="print a cProfile of one variant (starlette, afterward, fastapi, bare, "
        "'afterward detached', 'current_tasks detached') instead",
    )
    return parser.parse_args(argv)


Launcher = Callable[[list[str]], int]


def main(argv: Sequence[str] | None = None, *, launch: Launcher | None = None) -> int:
    """Run the benchmark (or a profile) as the command line asks; return the exit status.

    Args:
        argv: The arguments (default: `sys.argv[1:]`).
        launch: Runs one measuring process's command line and returns its exit status (default:
            `subprocess.call` from the repository root).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(argv)
    if not in_project_environment():
        return rerun_in_environment(argv)
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else FULL_ROUNDS)
    scale = args.scale or (QUICK_SCALE if args.quick else 1.0)
    backends = list(dict.fromkeys(args.backend or BACKENDS))
    modes = list(dict.fromkeys(args.mode or MODES))
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # run as a script: make `benchmarks` importable
    if args.profile:
        from benchmarks.measure import profile

        for backend in backends:
            profile(backend, args.profile, scale=scale, names=args.scenario)
        return 0
    return benchmark(backends, modes, rounds, scale, args.scenario, args.json, launch or _launch)


def benchmark(
    backends: Sequence[str],
    modes: Sequence[str],
    rounds: int,
    scale: float,
    names: Sequence[str] | None,
    save: Path | None,
    launch: Launcher,
) -> int:
    """Measure each backend in each mode in a process of its own; print and judge the results."""
    from benchmarks.report import describe_machine, format_detached, format_figures, format_rates
    from benchmarks.results import Run, judge

    print(f"afterward benchmark: {rounds} rounds per variant, request scale {scale:g}")
    print(describe_machine())
    print(_load("at the start"), flush=True)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="afterward-bench-") as folder:
        for backend in backends:
            for mode in modes:
                out = Path(folder) / f"{backend}-{mode}.json"
                command = [sys.executable, "-m", "benchmarks.measure", "--backend", backend]
                command += ["--mode", mode, "--rounds", str(rounds), "--scale", str(scale)]
                command += [f"--scenario={name}" for name in names or ()]
                command += ["--out", str(out)]
                print(f"measuring {backend}, {mode} ...", end=" ", flush=True)
                start = time.perf_counter()
                status = launch(command)
                if status != 0:
                    print("failed.", flush=True)
                    return 2 if status == 2 else 1
                runs.append(Run.from_json(json.loads(out.read_text())))
                print(f"{time.perf_counter() - start:.0f} s", flush=True)
    if save is not None:
        save.write_text(json.dumps([run.to_json() for run in runs], indent=1))
    outcomes = judge(runs)
    print(_load("at the end"))
    print()
    print(format_rates(runs))
    print()
    detached = format_detached(runs)
    if detached:
        print(detached)
        print()
    print(
        "targets: median of the per-round ratios [interquartile range]; judged on the lower "
        "median of the modes"
    )
    print(format_figures(outcomes))
    missed = [o for o in outcomes if not o.met]
    print()
    if missed:
        print(f"{len(missed)} of {len(outcomes)} targets missed.")
        return 1
    print(f"All {len(outcomes)} targets met.")
    return 0


def _load(when: str) -> str:
    """Say how busy the machine is: other processes make the rounds noisy (see the README)."""
    if not hasattr(os, "getloadavg"):
        return f"load average {when}: unknown on this platform"
    one, five, fifteen = os.getloadavg()
    return (
        f"load average {when}: {one:.1f} (1 min), {five:.1f} (5 min), {fifteen:.1f} (15 min) "
        f"on {os.cpu_count()} CPUs"
    )


def _launch(command: list[str]) -> int:
    return subprocess.call(command, cwd=ROOT)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
