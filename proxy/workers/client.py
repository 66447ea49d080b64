"""A worker's connection to the hub: requests with answers, and the hub's messages to it.

One connection per worker; requests carry ids, so any number may be in flight. Every call has
a deadline (:data:`CALL_TIMEOUT`); a hub that is gone or slow is a
:class:`~proxy.tickets.store.StoreUnavailable` of the caller's choosing (a 503 or a 4503 to the
browser), as with Redis. When the connection ends, :attr:`HubClient.lost` is set: the
supervisor is gone, and the worker drains and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from proxy.consoles.cluster import ClusterUnavailable
from proxy.tickets.store import StoreUnavailable, TicketStoreFull
from proxy.workers.wire import CALL_TIMEOUT, FULL, MAX_LINE, NO_ANSWER, decode, encode

log = logging.getLogger(__name__)

# Answers a broadcast (its result is ignored) or a question (its result is the answer).
Handler = Callable[[Any], Awaitable[Any]]


class HubClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._handlers: dict[str, Handler] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.lost = asyncio.Event()
        self._reading = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, path: str, timeout: float = CALL_TIMEOUT) -> HubClient:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(path, limit=MAX_LINE), timeout
        )
        return cls(reader, writer)

    def tell(self, op: str, args: dict[str, Any]) -> None:
        """Send ``op`` without waiting for (or getting) an answer; nothing if the hub is gone."""
        if not self.lost.is_set() and not self._writer.is_closing():
            self._writer.write(encode({"i": NO_ANSWER, "op": op, "a": args}))

    def on(self, kind: str, handler: Handler) -> None:
        """Handle the hub's messages of ``kind`` (broadcasts and questions)."""
        self._handlers[kind] = handler

    async def call(
        self,
        op: str,
        args: dict[str, Any],
        error: type[StoreUnavailable] = ClusterUnavailable,
    ) -> Any:
        """The hub's answer to ``op``; ``error`` when the hub is gone, slow or refuses."""
        if self.lost.is_set():
            raise error("the worker hub is gone (the supervisor stopped)")
        request_id = next(self._ids)
        loop = asyncio.get_running_loop()
        future = self._waiting[request_id] = loop.create_future()
        # A timer rather than wait_for(): no task per call, on a path every console takes.
        deadline = loop.call_later(CALL_TIMEOUT, _expire, future)
        try:
            self._writer.write(encode({"i": request_id, "op": op, "a": args}))
            answer = await future
        except TimeoutError:
            raise error(f"the worker hub did not answer within {CALL_TIMEOUT:g} s") from None
        except ConnectionError:
            raise error("the worker hub is gone (the supervisor stopped)") from None
        finally:
            deadline.cancel()
            self._waiting.pop(request_id, None)
        if "e" in answer:
            if answer["e"] == FULL:
                raise TicketStoreFull
            raise error(f"the worker hub refused {op}")
        return answer.get("r")

    async def close(self) -> None:
        self._reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reading
        for task in list(self._tasks):
            task.cancel()
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    async def _read(self) -> None:
        try:
            while line := await self._reader.readline():
                self._on_message(decode(line))
        except (ValueError, ConnectionError) as exc:
            log.error("the worker hub connection broke: %s", exc)
        finally:
            self.lost.set()
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(ConnectionResetError("hub connection lost"))

    def _on_message(self, message: dict[str, Any]) -> None:
        if "i" in message:
            future = self._waiting.get(message["i"])
            if future is not None and not future.done():
                future.set_result(message)
            return
        handler = self._handlers.get(str(message.get("ev")))
        if handler is None:
            handler = _nothing  # a question still gets its (empty) answer at once
        task = asyncio.create_task(self._run_handler(handler, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_handler(self, handler: Handler, message: dict[str, Any]) -> None:
        try:
            result = await handler(message.get("b"))
        except Exception:
            log.exception("handling the hub's %r message failed", message.get("ev"))
            result = None
        if "q" in message and not self._writer.is_closing():
            self.tell("reply", {"q": message["q"], "body": result})


async def _nothing(_body: Any) -> None:
    return None


def _expire(future: asyncio.Future[dict[str, Any]]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())
