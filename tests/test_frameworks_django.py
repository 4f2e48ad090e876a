"""Django (ASGI) under BackgroundTasksMiddleware (asyncio only).

Django's `ASGIHandler` raises on a lifespan scope, so the middleware answers the lifespan itself:
the supervisor still starts and drains. The settings are those of `examples/django_app.py` (Django
is configured once per process); these tests route to their own views with `override_settings`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import anyio
import pytest
from django.core.asgi import get_asgi_application
from django.http import Http404, HttpRequest, HttpResponse
from django.test import override_settings
from django.urls import path
from examples import django_app
from starlette.types import ASGIApp

from _frameworks import (
    AfterwardLog,
    FrameworkContract,
    LifespanDriver,
    Probe,
    ServedByUvicorn,
    asyncio_only,
    check_signup_example,
    client,
)
from afterward import BackgroundTasksMiddleware

pytestmark = pytest.mark.anyio

_probes: list[Probe] = []  # the probe of the app being tested (module-level views reach it)


@pytest.fixture(params=asyncio_only("Django's ASGI handler runs on asyncio only"))
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def answer(request: HttpRequest, action: str) -> HttpResponse:
    status = _probes[-1].handle(action, request.GET.get("id", ""))
    if status == 404:
        raise Http404("no such thing")
    return HttpResponse("ok", status=status, content_type="text/plain")


async def async_view(request: HttpRequest, action: str) -> HttpResponse:
    return answer(request, action)


def sync_view(request: HttpRequest, action: str) -> HttpResponse:  # Django runs it in a thread
    return answer(request, action)


urlpatterns = [path("async/<str:action>", async_view), path("sync/<str:action>", sync_view)]


class TestDjango(FrameworkContract, ServedByUvicorn):
    """`app = BackgroundTasksMiddleware(get_asgi_application())`."""

    # Django has no startup or shutdown hooks: only the task, drained before shutdown completes.
    lifespan_events: ClassVar[list[str]] = ["task done"]

    @pytest.fixture(autouse=True)
    def _routes(self) -> Iterator[None]:
        assert django_app.app is not None  # configures Django (settings, setup) on import
        with override_settings(ROOT_URLCONF=__name__):
            yield
        _probes.clear()

    def build(self, probe: Probe) -> ASGIApp:
        _probes.append(probe)
        return BackgroundTasksMiddleware(get_asgi_application())

    async def test_the_example_runs_its_tasks_after_a_signup_and_not_after_a_409(
        self, afterward_log: AfterwardLog
    ) -> None:
        with override_settings(ROOT_URLCONF="examples.django_app"):
            await check_signup_example(django_app, afterward_log)

    async def test_the_examples_async_view_runs_its_tasks_too(
        self, afterward_log: AfterwardLog
    ) -> None:
        with override_settings(ROOT_URLCONF="examples.django_app"):
            await check_signup_example(django_app, afterward_log, path="/async/signup")

    async def test_django_refuses_lifespan_yet_the_supervisor_runs(self) -> None:
        probe = Probe()
        app = BackgroundTasksMiddleware(get_asgi_application())
        with pytest.raises(ValueError, match="lifespan"):  # what Django itself does
            await get_asgi_application()({"type": "lifespan"}, _never, _never)
        async with LifespanDriver(app, probe).running(), client(app) as http:
            assert app.supervisor is not None
            assert app.supervisor.running
            _probes.append(probe)
            assert (await http.get("/async/ordered?id=d-1")).text == "ok"
            with anyio.fail_after(5):
                await probe.blocked.wait()
            probe.release.set()
            await probe.done.wait()
        assert [seen_id for _, seen_id, _ in probe.seen] == ["d-1"] * 4


async def _never(*args: object) -> object:
    raise AssertionError("Django must refuse the lifespan before it receives or sends")
