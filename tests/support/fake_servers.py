"""A fake server's own failure fails its test at once, with the fake server's exception.

Without this, an AssertionError raised in a handler of ``asyncio.start_server`` (or any
exception other than the peer going away) is only logged by asyncio; the test then waits for an
answer that never comes and fails much later as a timeout, with a misleading message.

:class:`ServerFailures` records such an exception and cancels the running test at once; the
``pytest_runtest_call`` hook below then raises the recorded exception in place of
the cancellation, so pytest shows the handler's own message and traceback (and, chained to it,
where the test was waiting). One is made per test by the ``server_failures`` fixture; give
:meth:`ServerFailures.guard` a stream handler, or add :meth:`ServerFailures.middleware` to a fake
aiohttp application.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable, Iterator
from types import CodeType
from typing import Any

import pytest
from aiohttp import web

StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[Any]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The peer going away is a normal end for a fake server, not a failure.
PEER_GONE = (ConnectionError, asyncio.IncompleteReadError)


class ServerFailures:
    """Exceptions raised by the fake servers of one test, oldest first."""

    def __init__(self, test_function: Callable[..., Any] | None = None) -> None:
        """``test_function``: the test that raises what is recorded (the ``server_failures``
        fixture does); without one, :meth:`guard` lets exceptions through to asyncio's log."""
        self._for_a_test = test_function is not None
        # pytest-asyncio runs the test's coroutine in a task of its own (fixtures run in other
        # tasks), so the test's task is recognised by the code object of its coroutine.
        function = inspect.unwrap(test_function) if test_function is not None else None
        self._code: CodeType | None = getattr(function, "__code__", None)
        self.errors: list[BaseException] = []
        self._raised = False

    def record(self, error: BaseException) -> None:
        """Keep ``error``; for the first one, stop the running test."""
        self.errors.append(error)
        if len(self.errors) == 1 and (task := self._test_task()) is not None:
            task.cancel(f"a fake server failed: {error!r}")

    def raise_first(self) -> None:
        """Raise the first recorded exception, once (a later call does nothing)."""
        if self.errors and not self._raised:
            self._raised = True
            raise self.errors[0]

    def guard(self, handler: StreamHandler) -> StreamHandler:
        """``handler`` for ``asyncio.start_server``, whose failures are recorded. It closes the
        writer when it ends, however it ends."""

        @functools.wraps(handler)
        async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await handler(reader, writer)
            except PEER_GONE:
                pass
            except Exception as error:
                if not self._for_a_test:
                    raise
                self.record(error)
            finally:
                writer.close()

        return guarded

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """For a fake aiohttp application: a handler's exception (not an HTTP answer such as
        ``web.HTTPNotFound``) is recorded, and the client still gets the usual 500."""
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception as error:
            self.record(error)
            raise

    def _test_task(self) -> asyncio.Task[Any] | None:
        if self._code is None:
            return None
        try:
            tasks = asyncio.all_tasks()
        except RuntimeError:  # no running loop
            return None
        for task in tasks:
            if getattr(task.get_coro(), "cr_code", None) is self._code and not task.done():
                return task
        return None


SERVER_FAILURES = pytest.StashKey[ServerFailures]()


@pytest.fixture
def server_failures(request: pytest.FixtureRequest) -> Iterator[ServerFailures]:
    """What this test's fake servers raised; the first one stops the test and is raised."""
    failures = ServerFailures(request.function)
    request.node.stash[SERVER_FAILURES] = failures
    yield failures
    failures.raise_first()  # one that came after the test's call, e.g. during teardown


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """A fake server's failure replaces the cancellation (or anything else) it caused."""
    try:
        return (yield)
    finally:
        if (failures := item.stash.get(SERVER_FAILURES, None)) is not None:
            failures.raise_first()
