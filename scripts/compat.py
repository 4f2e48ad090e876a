"""Run Starlette's and FastAPI's background-task tests on afterward: `python scripts/compat.py`.

The versions are the ones installed in the project's `.venv`. Their sdists are downloaded once
(`pip download --no-deps --no-binary :all:`) into `.cache/compat/sdists/`; the upstream suites'
test dependencies go into a separate environment, `.cache/compat/venv/`, so that their pins
(FastAPI's tests want `pytest<9.2`, for example) never touch `.venv`. Each run unpacks the
tests into a temporary folder, changes only the imports of `BackgroundTask(s)` to afterward's
(each `Suite`'s `rewrites`, done by `_upstream.py`), and runs the selected files with the
upstream pytest configuration; `_verdict.py` judges the outcomes.

Every failure must be listed in `EXPECTED` with the reason and the section of
`docs/compatibility.md` that explains it. The exit code is non-zero if any other test fails, if a
selected file collects no test, if an expected difference passes or is not collected (the list must
stay honest, as with `xfail_strict`), or if a file of the sdist that mentions background tasks is
neither selected nor excluded with a reason (its `excluded`): a new upstream test is never ignored
silently.

Only the standard library is used here, as in the other scripts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import venv
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Found through the path entry above, on every platform.
import _venv
from _upstream import RewriteError, Suite, prepare, rewrite_imports, unclassified, unpack
from _verdict import Expected, Run, judge, report

CACHE = _venv.ROOT / ".cache" / "compat"
SDISTS = CACHE / "sdists"
COMPAT_VENV = CACHE / "venv"

__all__ = ["EXPECTED", "SUITES", "RewriteError", "main", "rewrite_imports", "unclassified"]

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
    report(runs, verdict, EXPECTED, logs=CACHE.relative_to(_venv.ROOT))
    print(f"Took {time.monotonic() - started:.1f} s, of which the tests {tests_took:.1f} s.")
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
