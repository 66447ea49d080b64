"""Waiting for a condition instead of sleeping a fixed time: tests run on loaded 2-core machines.

A fixed sleep is either too short there (a flake) or too long everywhere (a slow suite); a
condition polled up to a generous deadline is neither. Keep fixed sleeps only where time itself
must pass (a ticket must have expired), and bound only what a test is about.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")

DEFAULT_TIMEOUT = 20.0


@overload
async def wait_until(
    condition: Callable[[], Awaitable[T | None]],
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.05,
    message: str | Callable[[], str] = "",
) -> T: ...


@overload
async def wait_until(
    condition: Callable[[], T | None],
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.05,
    message: str | Callable[[], str] = "",
) -> T: ...


async def wait_until(
    condition: Callable[[], Any],
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.05,
    message: str | Callable[[], str] = "",
) -> Any:
    """Poll ``condition`` (a function, or a coroutine function) until it returns something
    truthy, and return that. After ``timeout`` seconds fail the test with ``message`` (a string,
    or a function giving one, called then) and the condition's last value."""
    deadline = time.monotonic() + timeout
    while True:
        value: Any = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            name = getattr(condition, "__qualname__", repr(condition))
            raise AssertionError(
                f"{text or name + ' stayed false'} (after {timeout:g} s; last value {value!r})"
            )
        await asyncio.sleep(interval)
