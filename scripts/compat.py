"""Run Starlette's and FastAPI's background-task tests on afterward: `python scripts/compat.py`.

The versions are the ones installed in the project's `.venv`. Their sdists are downloaded once
(`pip download --no-deps --no-binary :all:`) into `.cache/compat/sdists/`; the upstream suites'
test dependencies go into a separate environment, `.cache/compat/venv/`, so that their pins
(FastAPI's tests want `pytest<9.2`, for example) never touch `.venv`. Each run unpacks the tests
into a temporary folder, changes only the imports of `BackgroundTask(s)` to afterward's (see
`REWRITES`), and runs the selected files (`SUITES`) with the upstream pytest configuration.

Every failure must be listed in `EXPECTED` with the reason and the section of
`docs/compatibility.md` that explains it. The exit code is non-zero if any other test fails, if a
selected file collects no test, if an expected difference passes or is not collected (the list must
stay honest, as with `xfail_strict`), or if a file of the sdist that mentions background tasks is
neither selected nor excluded with a reason (`EXCLUDED`): a new upstream test is never ignored
silently.

Only the standard library is used here, as in the other scripts.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import venv
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _venv  # found through the path entry above, on every platform

CACHE = _venv.ROOT / ".cache" / "compat"
SDISTS = CACHE / "sdists"
COMPAT_VENV = CACHE / "venv"
DOCS = "docs/compatibility.md"


@dataclasses.dataclass(frozen=True)
class Suite:
    """One upstream project whose tests run against afterward."""

    project: str
    """The distribution name on PyPI, and the package folder left out of the unpacked copy."""
    rewrites: Mapping[tuple[str, str], str]
    """(module, name) imported by the upstream tests -> the afterward module to import it from."""
    selected: Sequence[str]
    """Test files and folders (relative to the sdist) that run; folders are searched for files."""
    sources: Sequence[str]
    """Folders whose files are rewritten too, without being collected (FastAPI's `docs_src`)."""
    excluded: Mapping[str, str]
    """Files that mention background tasks but do not run here -> why."""


STARLETTE_REWRITES = {
    ("starlette.background", "BackgroundTask"): "afterward",
    ("starlette.background", "BackgroundTasks"): "afterward",
}

SUITES = (
    Suite(
        project="starlette",
        rewrites=STARLETTE_REWRITES,
        selected=(
            "tests/test_background.py",
            "tests/test_responses.py",
            "tests/middleware/test_base.py",
            "tests/middleware/test_errors.py",
            "tests/test_testclient.py",
        ),
        sources=(),
        excluded={
            "tests/test_formparsers.py": "'background' only in 'a background thread' of "
            "SpooledTemporaryFile rollover; no background task.",
        },
    ),
    Suite(
        project="fastapi",
        rewrites={
            **STARLETTE_REWRITES,
            ("fastapi", "BackgroundTasks"): "afterward.fastapi",
            ("fastapi.background", "BackgroundTasks"): "afterward.fastapi",
        },
        selected=(
            "tests/test_tutorial/test_background_tasks",
            "tests/test_dependency_contextmanager.py",
            "tests/test_dependency_concurrency.py",
            "tests/test_async_dependency_cleanup.py",
            "tests/test_response_dependency.py",
            "tests/test_frontend.py",
            "tests/test_telemetry/test_background.py",
            "tests/test_telemetry/test_http.py",
        ),
        sources=("docs_src",),
        excluded={},
    ),
)

# Files that mention background tasks (checked in every sdist, so a new upstream test is seen).
MENTIONS = re.compile(r"background", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Expected:
    """A test that fails against afterward by design."""

    reason: str
    anchor: str
    """The section of docs/compatibility.md that explains the difference."""

    @property
    def link(self) -> str:
        return f"{DOCS}#{self.anchor}"


_NEXT_RUNS = Expected(
    "The next task runs after a failing one: afterward isolates each task's error (logged on the "
    "'afterward' logger); Starlette stops at the first failure.",
    "a-failing-task-does-not-stop-the-next-one",
)
_NOT_RAISED = Expected(
    "A task's exception is logged, not raised into the server, the middleware stack or "
    "TestClient; Starlette re-raises it after the response.",
    "a-task-error-never-reaches-the-server",
)
_NO_HANDLER = Expected(
    "The app's exception handlers (ServerErrorMiddleware's included) are not called for a "
    "task's failure: the response has already gone and the error never leaves the task.",
    "exception-handlers-are-not-called-for-a-task-error",
)


def _each_backend(node: str, expected: Expected) -> dict[str, Expected]:
    return {node.format(backend=b): expected for b in ("asyncio", "trio")}


EXPECTED: dict[str, Expected] = {
    **_each_backend(
        "starlette:tests/test_background.py::test_multi_tasks_failure_avoids_next_execution"
        "[{backend}]",
        _NEXT_RUNS,
    ),
    **{
        "fastapi:tests/test_telemetry/test_background.py::test_background_task_failure"
        f"[{http_error}-{sync}]": _NEXT_RUNS
        for http_error in ("False", "True")
        for sync in ("False", "True")
    },
    **_each_backend(
        "starlette:tests/middleware/test_base.py::test_run_background_tasks_raise_exceptions"
        "[{backend}]",
        _NOT_RAISED,
    ),
    **_each_backend(
        "starlette:tests/test_testclient.py::"
        "test_closing_completed_response_waits_for_background_task[{backend}-True-expected0]",
        _NOT_RAISED,
    ),
    **_each_backend(
        "starlette:tests/middleware/test_errors.py::test_background_task[{backend}]", _NO_HANDLER
    ),
}
"""Node ids ("<project>:<pytest node id>") of the upstream tests that fail by design."""


# --- rewriting the imports ---------------------------------------------------------------------


class RewriteError(ValueError):
    """An upstream file spells a background-task import in a way the rewrite cannot change."""


def rewrite_imports(source: str, rewrites: Mapping[tuple[str, str], str], *, path: str) -> str:
    """Return `source` with each import of a name in `rewrites` taken from afterward instead.

    `from fastapi import BackgroundTasks, Depends` becomes `from fastapi import Depends` plus
    `from afterward.fastapi import BackgroundTasks`, at the same indentation, with blank lines
    added so the lines below keep their numbers. Aliases (`as`) are kept. Anything else that
    reaches one of these names (`fastapi.BackgroundTasks`, `import starlette.background`) raises
    `RewriteError`: it would silently keep the upstream class.
    """
    tree = ast.parse(source, filename=path)
    lines = source.splitlines(keepends=True)
    replacements: list[tuple[int, int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
            moved = [a for a in node.names if (node.module, a.name) in rewrites]
            if moved:
                replacements.append(_replace_import(node, moved, rewrites, lines, path))
        else:
            _refuse_other_spellings(node, rewrites, path)
    for start, end, text in sorted(replacements, reverse=True):
        lines[start:end] = [text]
    return "".join(lines)


def _replace_import(
    node: ast.ImportFrom,
    moved: list[ast.alias],
    rewrites: Mapping[tuple[str, str], str],
    lines: list[str],
    path: str,
) -> tuple[int, int, str]:
    # ast.parse always sets the end positions; the checks narrow the Optional types.
    assert node.end_lineno is not None
    assert node.end_col_offset is not None
    first, last = lines[node.lineno - 1], lines[node.end_lineno - 1]
    indent = first[: node.col_offset]
    rest = last[node.end_col_offset :].strip()
    if indent.strip() or (rest and not rest.startswith("#")):
        raise RewriteError(
            f"{path}:{node.lineno}: the import shares its line with other code; the rewrite "
            f"needs it on lines of its own. Add this spelling to scripts/compat.py."
        )
    kept = [a for a in node.names if a not in moved]
    statements = [ast.ImportFrom(module=node.module, names=kept, level=0)] if kept else []
    statements += [
        ast.ImportFrom(module=rewrites[(node.module or "", a.name)], names=[a], level=0)
        for a in moved
    ]
    new = [indent + ast.unparse(statement) for statement in statements]
    old_count = node.end_lineno - node.lineno + 1
    new += [""] * (old_count - len(new))
    return node.lineno - 1, node.end_lineno, "".join(line + "\n" for line in new)


def _refuse_other_spellings(
    node: ast.AST, rewrites: Mapping[tuple[str, str], str], path: str
) -> None:
    if not isinstance(node, ast.Attribute):
        return
    owner = ast.unparse(node.value)
    if (owner, node.attr) in rewrites:
        raise RewriteError(
            f"{path}:{node.lineno}: '{owner}.{node.attr}' reaches an upstream background-task "
            f"class without a `from ... import`; the rewrite cannot change it. Add this "
            f"spelling to scripts/compat.py."
        )


# --- unpacking and selecting ---------------------------------------------------------------------


def unpack(sdist: Path, suite: Suite, into: Path) -> Path:
    """Extract the tests, the rewritten sources and the pytest configuration of `sdist`.

    The package itself (`starlette/`, `fastapi/`) stays out, so the tests import the installed
    copy, the one afterward is built on.
    """
    top = {"tests", "pyproject.toml", *(Path(source).parts[0] for source in suite.sources)}
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers() if _inside(m.name, top)]
        if hasattr(tarfile, "data_filter"):
            archive.extractall(into, members, filter="data")
        else:  # Python < 3.11.4, which has no extraction filters
            archive.extractall(into, members)  # the sdist comes from PyPI
    (root,) = into.iterdir()
    return root


def _inside(name: str, top: set[str]) -> bool:
    parts = Path(name).parts
    return len(parts) > 1 and parts[1] in top


def python_files(root: Path, entries: Iterable[str]) -> list[Path]:
    """Return the `.py` files at or under `entries` (relative to `root`), sorted."""
    found: set[Path] = set()
    for entry in entries:
        path = root / entry
        found.update(path.rglob("*.py") if path.is_dir() else [path])
    return sorted(found)


def unclassified(root: Path, suite: Suite) -> list[str]:
    """Return the files that mention background tasks but are neither selected nor excluded."""
    covered = {p.relative_to(root).as_posix() for p in python_files(root, suite.selected)}
    missing = []
    for path in python_files(root, ["tests", *suite.sources]):
        name = path.relative_to(root).as_posix()
        if (
            name in covered
            or name in suite.excluded
            or any(name.startswith(f"{source}/") for source in suite.sources)
        ):
            continue
        if MENTIONS.search(path.read_text(encoding="utf-8")):
            missing.append(name)
    return missing


def prepare(root: Path, suite: Suite) -> int:
    """Rewrite the imports in the selected files and the sources; return how many changed."""
    changed = 0
    for path in python_files(root, [*suite.selected, *suite.sources]):
        name = path.relative_to(root).as_posix()
        before = path.read_text(encoding="utf-8")
        after = rewrite_imports(before, suite.rewrites, path=name)
        if after != before:
            path.write_text(after, encoding="utf-8")
            changed += 1
    return changed


# --- environments ------------------------------------------------------------------------------


def installed_versions(python: Path, projects: Iterable[str]) -> dict[str, str]:
    """Return the versions of `projects` installed in the environment of `python`."""
    code = (
        "import importlib.metadata as m, json, sys; "
        "print(json.dumps({p: m.version(p) for p in sys.argv[1:]}))"
    )
    output = subprocess.check_output([str(python), "-c", code, *projects], text=True)
    versions: dict[str, str] = json.loads(output)
    return versions


def download(python: Path, versions: Mapping[str, str]) -> dict[str, Path]:
    """Return the sdist of each project at its version, downloading those not cached yet."""
    SDISTS.mkdir(parents=True, exist_ok=True)
    found = {p: _cached_sdist(p, v) for p, v in versions.items()}
    missing = [f"{p}=={versions[p]}" for p, path in found.items() if path is None]
    if missing:
        print(f"Downloading the sdists of {', '.join(missing)} ...", flush=True)
        command: list[str | os.PathLike[str]] = [python, "-m", "pip", "download", "-qq"]
        command += ["--no-deps"]
        command += ["--no-binary", ":all:", "--dest", SDISTS, *missing]
        if _venv.run(command) != 0:
            raise SystemExit(f"pip could not download {', '.join(missing)} (see above).")
    result = {}
    for project, version in versions.items():
        path = _cached_sdist(project, version)
        if path is None:
            raise SystemExit(f"pip did not leave the sdist of {project}=={version} in {SDISTS}.")
        result[project] = path
    return result


def _cached_sdist(project: str, version: str) -> Path | None:
    return next(iter(SDISTS.glob(f"{project}-{version}.tar.gz")), None)


def ensure_compat_venv(versions: Mapping[str, str]) -> Path:
    """Create `.cache/compat/venv` with afterward[compat] and the exact upstream versions."""
    pins = sorted(f"{project}=={version}" for project, version in versions.items())
    stamp_text = _venv.pyproject_hash() + "\n" + "\n".join(pins) + "\n"
    stamp = COMPAT_VENV / ".afterward-compat"
    python = _venv.venv_python(COMPAT_VENV)
    if python.exists() and stamp.exists() and stamp.read_text() == stamp_text:
        return python
    if not python.exists():
        print(f"Creating {COMPAT_VENV.relative_to(_venv.ROOT)} ...", flush=True)
        venv.create(COMPAT_VENV, with_pip=True, clear=COMPAT_VENV.exists())
    print(f"Installing afterward[compat] with {', '.join(pins)} ...", flush=True)
    command: list[str | os.PathLike[str]] = [python, "-m", "pip", "install", "-qq"]
    command += ["--editable", ".[compat]", *pins]
    if _venv.run(command) != 0:
        raise SystemExit(
            f"Installing the upstream test dependencies failed (see above); delete {COMPAT_VENV} "
            f"to start from scratch."
        )
    stamp.write_text(stamp_text)
    return python


# --- running and judging -----------------------------------------------------------------------

PLUGIN = '''
"""Record each test's outcome for scripts/compat.py (written into the temporary folder)."""
import json
import os

_results = {}


def _message(report):
    crash = getattr(report.longrepr, "reprcrash", None)
    return crash.message if crash is not None else str(report.longrepr).splitlines()[-1:]


def pytest_collectreport(report):
    if report.failed:
        _results[report.nodeid] = {"outcome": "error", "message": _message(report)}


def pytest_runtest_logreport(report):
    if _results.get(report.nodeid, {}).get("outcome") in ("failed", "error"):
        return
    if report.failed:
        outcome = "failed" if report.when == "call" else "error"
        _results[report.nodeid] = {"outcome": outcome, "message": _message(report)}
    elif report.skipped:
        outcome = "xfailed" if hasattr(report, "wasxfail") else "skipped"
        _results[report.nodeid] = {"outcome": outcome, "message": ""}
    elif report.when == "call":
        _results[report.nodeid] = {"outcome": "passed", "message": ""}


def pytest_sessionfinish(session):
    with open(os.environ["AFTERWARD_COMPAT_RESULTS"], "w", encoding="utf-8") as file:
        json.dump(_results, file)
'''

FAILED = frozenset({"failed", "error"})


@dataclasses.dataclass
class Run:
    """The outcome of one upstream suite."""

    suite: Suite
    status: int
    log: Path
    results: dict[str, dict[str, str]]
    """'<project>:<node id>' -> {"outcome": ..., "message": ...}."""


def run_suite(python: Path, root: Path, suite: Suite, plugin_dir: Path) -> Run:
    """Run the selected files of `suite` (unpacked at `root`) with pytest; return the outcomes."""
    results_file = root / "afterward-compat-results.json"
    log = CACHE / f"{suite.project}.log"
    env = {
        **os.environ,
        "AFTERWARD_COMPAT_RESULTS": str(results_file),
        "PYTHONPATH": os.pathsep.join([str(plugin_dir), os.environ.get("PYTHONPATH", "")]),
        "PYTHONIOENCODING": "utf-8",
    }
    command = [str(python), "-m", "pytest", "-p", "no:cacheprovider", "-p", "_afterward_compat"]
    command += ["-q", "-rfE", *suite.selected]
    with log.open("wb") as output:
        status = subprocess.call(command, cwd=root, env=env, stdout=output, stderr=output)
    try:
        raw: dict[str, dict[str, str]] = json.loads(results_file.read_text(encoding="utf-8"))
    except OSError:
        raw = {}
    results = {f"{suite.project}:{node}": outcome for node, outcome in raw.items()}
    return Run(suite, status, log, results)


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


def report(runs: Sequence[Run], verdict: Verdict, expected: Mapping[str, Expected]) -> None:
    """Print what failed and why, then the one-line summary."""
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
    print(f"\n{', '.join(parts)}; logs in {CACHE.relative_to(_venv.ROOT)}/.")
    print("Compatibility: OK" if verdict.ok else "Compatibility: FAILED")


def _first_line(message: str) -> str:
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[0] if lines else ""


# --- main --------------------------------------------------------------------------------------


def main(argv: Sequence[str]) -> int:
    """Download, rewrite and run the upstream suites; return non-zero on any unexpected result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    started = time.monotonic()
    project_python = _venv.ensure(["test"])
    versions = installed_versions(project_python, [suite.project for suite in SUITES])
    print("Upstream versions: " + ", ".join(f"{p} {v}" for p, v in versions.items()), flush=True)
    sdists = download(project_python, versions)
    python = ensure_compat_venv(versions)
    with tempfile.TemporaryDirectory(prefix="afterward-compat-") as temp:
        plugin_dir = Path(temp) / "plugin"
        plugin_dir.mkdir()
        (plugin_dir / "_afterward_compat.py").write_text(PLUGIN, encoding="utf-8")
        roots = {}
        problems = []
        for suite in SUITES:
            target = Path(temp) / suite.project
            target.mkdir()
            root = roots[suite.project] = unpack(sdists[suite.project], suite, target)
            for name in unclassified(root, suite):
                problems.append(
                    f"{suite.project}:{name} mentions background tasks but is neither selected "
                    f"nor excluded: add it to its Suite in scripts/compat.py."
                )
            try:
                changed = prepare(root, suite)
            except RewriteError as exc:
                raise SystemExit(str(exc)) from exc
            print(f"{suite.project}: imports rewritten in {changed} files.", flush=True)
        print("Running the upstream tests ...", flush=True)
        tests_started = time.monotonic()
        with ThreadPoolExecutor(len(SUITES)) as pool:
            runs = list(
                pool.map(lambda s: run_suite(python, roots[s.project], s, plugin_dir), SUITES)
            )
        tests_took = time.monotonic() - tests_started
    verdict = judge(runs, EXPECTED)
    verdict.problems[:0] = problems
    report(runs, verdict, EXPECTED)
    print(f"Took {time.monotonic() - started:.1f} s, of which the tests {tests_took:.1f} s.")
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
