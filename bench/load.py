"""The load client: plain non-asyncio sockets, one reused receive buffer, pre-masked frames.

Every workload runs for a bounded time and a bounded count, opens its measurement window with
``probe.start()`` after a warm-up and closes it with ``probe.stop()``.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import time
from array import array
from collections import Counter
from collections.abc import Callable
from typing import Any

from bench import wire
from bench.procstat import Probe
from bench.servers import Endpoint

RECV_SIZE = 1 << 20
IO_TIMEOUT = 10.0
RST_LINGER = struct.pack("ii", 1, 0)
MAX_SAMPLES = 2_000_000


class BenchError(Exception):
    pass


def connect(ep: Endpoint, target: str) -> tuple[socket.socket, wire.FrameReader | None]:
    """A blocking connection to ``target`` (upgraded when ``ep`` is a WebSocket server)."""
    sock = socket.create_connection(ep.address(target), timeout=IO_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if not ep.ws:
        return sock, None
    request, accept = ep.handshake(target)
    sock.sendall(request)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk or len(head) > 16384:
            sock.close()
            raise wire.HandshakeError("connection closed during the handshake")
        head += chunk
    head, _, rest = head.partition(b"\r\n\r\n")
    wire.check_response(head, accept)
    reader = wire.FrameReader()
    reader.feed(memoryview(rest))
    return sock, reader


def _summary(samples: array[int]) -> dict[str, float]:
    ordered = sorted(samples)
    if not ordered:
        raise BenchError("no round trips completed")

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] / 1000, 1)

    return {"p50_us": pct(0.50), "p99_us": pct(0.99), "samples": len(ordered)}


def downstream(ep: Endpoint, probe: Probe, warmup: float, duration: float) -> dict[str, Any]:
    """Host -> browser MB/s over one console streaming from ``source``."""
    sock, reader = connect(ep, "source")
    buf = bytearray(RECV_SIZE)
    view = memoryview(buf)
    recv_into = sock.recv_into
    feed = reader.feed if reader is not None else None
    clock = time.perf_counter
    started = 0.0
    total = 0
    now = clock()
    warm_end = now + warmup
    end = warm_end + duration
    with sock:
        while True:
            n = recv_into(buf)
            if not n or (reader is not None and reader.closed):
                raise BenchError(f"the stream ended early ({reader.why if reader else 'EOF'})")
            got = feed(view[:n]) if feed is not None else n
            now = clock()
            if started:
                total += got
                if now >= end:
                    break
            elif now >= warm_end:
                probe.start()
                started = now
        probe.stop()
    return {"MBps": round(total / (now - started) / 1e6, 1)}


def upstream(
    ep: Endpoint, probe: Probe, warmup: float, duration: float, frame_size: int
) -> dict[str, Any]:
    """Browser -> host MB/s over one console into ``sink``; frames are masked once, up front."""
    sock, _ = connect(ep, "sink")
    payload = os.urandom(frame_size)
    frames = 4
    block = (wire.client_frame(payload) if ep.ws else payload) * frames
    per_block = frame_size * frames
    sendall = sock.sendall
    clock = time.perf_counter
    started = 0.0
    total = 0
    now = clock()
    warm_end = now + warmup
    end = warm_end + duration
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST_LINGER)
        while True:
            sendall(block)
            now = clock()
            if started:
                total += per_block
                if now >= end:
                    break
            elif now >= warm_end:
                probe.start()
                started = now
        probe.stop()
    return {"MBps": round(total / (now - started) / 1e6, 1)}


def rtt(
    ep: Endpoint, probe: Probe, consoles: int, warmup: float, duration: float, size: int = 64
) -> dict[str, Any]:
    """Round trips of ``size``-byte messages through ``echo``, one in flight per console."""
    if consoles == 1:
        return _rtt_one(ep, probe, warmup, duration, size)
    return _rtt_many(ep, probe, consoles, warmup, duration, size)


def _rtt_one(
    ep: Endpoint, probe: Probe, warmup: float, duration: float, size: int
) -> dict[str, Any]:
    sock, reader = connect(ep, "echo")
    payload = os.urandom(size)
    message = wire.client_frame(payload) if ep.ws else payload
    buf = bytearray(RECV_SIZE)
    view = memoryview(buf)
    recv_into, sendall = sock.recv_into, sock.sendall
    feed = reader.feed if reader is not None else None
    clock = time.perf_counter_ns
    samples = array("q")
    measuring = False
    warm_end = clock() + int(warmup * 1e9)
    end = warm_end + int(duration * 1e9)
    with sock:
        while len(samples) < MAX_SAMPLES:
            sent = clock()
            sendall(message)
            got = 0
            while got < size:
                n = recv_into(buf)
                if not n:
                    raise BenchError("the echo connection closed")
                got += feed(view[:n]) if feed is not None else n
            now = clock()
            if measuring:
                samples.append(now - sent)
                if now >= end:
                    break
            elif now >= warm_end:
                probe.start()
                measuring = True
        probe.stop()
    return {**_summary(samples), "msgs_per_s": round(len(samples) / (duration or 1))}


def _rtt_many(
    ep: Endpoint, probe: Probe, consoles: int, warmup: float, duration: float, size: int
) -> dict[str, Any]:
    conns = [connect(ep, "echo") for _ in range(consoles)]
    payload = os.urandom(size)
    message = wire.client_frame(payload) if ep.ws else payload
    buf = bytearray(RECV_SIZE)
    view = memoryview(buf)
    poller = select.epoll(consoles)
    by_fd = {}
    for index, (sock, _) in enumerate(conns):
        sock.setblocking(False)
        poller.register(sock.fileno(), select.EPOLLIN)
        by_fd[sock.fileno()] = index
    sent = [0] * consoles
    got = [0] * consoles
    clock = time.perf_counter_ns
    samples = array("q")
    measuring = False
    started = measured_from = clock()
    warm_end = started + int(warmup * 1e9)
    end = warm_end + int(duration * 1e9)
    try:
        for index, (sock, _) in enumerate(conns):
            sent[index] = clock()
            sock.send(message)
        now = clock()
        while now < end and len(samples) < MAX_SAMPLES:
            events = poller.poll(IO_TIMEOUT)
            if not events:
                raise BenchError("no echo for 10 s")
            for fd, _ in events:
                index = by_fd[fd]
                sock, reader = conns[index]
                try:
                    n = sock.recv_into(buf)
                except BlockingIOError:
                    continue
                if not n:
                    raise BenchError("an echo connection closed")
                got[index] += reader.feed(view[:n]) if reader is not None else n
                if got[index] < size:
                    continue
                got[index] -= size
                now = clock()
                if measuring:
                    samples.append(now - sent[index])
                sent[index] = now
                if sock.send(message) != len(message):
                    raise BenchError("a 64-byte send did not fit the socket buffer")
            now = clock()
            if not measuring and now >= warm_end:
                probe.start()
                measuring = True
                measured_from = now
        probe.stop()
    finally:
        poller.close()
        for sock, _ in conns:
            sock.close()
    rate = len(samples) / max(1e-9, (now - measured_from) / 1e9)
    return {**_summary(samples), "msgs_per_s": round(rate)}


# -- many consoles on one epoll loop: setup rate and concurrency ---------------------------

CONNECTING, UPGRADING, FIRST_BYTE, OPEN = range(4)


class _Console:
    __slots__ = ("sock", "state", "head", "accept", "reader", "since", "echoed")

    def __init__(self, sock: socket.socket, since: float) -> None:
        self.sock = sock
        self.state = CONNECTING
        self.head = b""
        self.accept = b""
        self.reader: wire.FrameReader | None = None
        self.since = since
        self.echoed = 0


class Consoles:
    """Opens consoles without blocking: connect, upgrade, wait for the target's first byte.

    ``pending`` consoles are on their way, ``open`` ones have seen their first byte and are
    held (pings answered). Failures before the first byte and losses after it are counted by
    reason in ``failures``.
    """

    def __init__(self, ep: Endpoint, target: str, handshake_timeout: float = IO_TIMEOUT) -> None:
        self.ep = ep
        self.target = target
        self.timeout = handshake_timeout
        self.poller = select.epoll()
        self.consoles: dict[int, _Console] = {}
        self.pending = 0
        self.open = 0
        self.opened = 0
        self.failures: Counter[str] = Counter()
        self.on_open: Callable[[_Console], None] | None = None
        self.buf = bytearray(64 * 1024)
        self.view = memoryview(self.buf)
        self._pong_cache: dict[bytes, bytes] = {}

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Closing sends RST: no TIME_WAIT pile-up on the client across tens of thousands.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST_LINGER)
        code = sock.connect_ex(self.ep.address(self.target))
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self.failures[f"connect: {os.strerror(code)}"] += 1
            return
        console = _Console(sock, time.monotonic())
        self.consoles[sock.fileno()] = console
        self.poller.register(sock.fileno(), select.EPOLLOUT)
        self.pending += 1

    def poll(self, timeout: float) -> None:
        for fd, events in self.poller.poll(timeout):
            console = self.consoles.get(fd)
            if console is not None:
                self._event(console, events)

    def run_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.poll(min(left, 0.1))
        self.expire()

    def drain(self, limit: float) -> None:
        """Wait until no console is on its way (or ``limit`` seconds)."""
        end = time.monotonic() + limit
        while self.pending and time.monotonic() < end:
            self.poll(0.05)
            self.expire()

    def expire(self) -> None:
        cutoff = time.monotonic() - self.timeout
        for console in list(self.consoles.values()):
            if console.state != OPEN and console.since < cutoff:
                self._fail(console, "timeout before the first byte")

    def close(self, console: _Console) -> None:
        fd = console.sock.fileno()
        self.poller.unregister(fd)
        del self.consoles[fd]
        console.sock.close()
        if console.state == OPEN:
            self.open -= 1
        else:
            self.pending -= 1

    def close_all(self) -> None:
        for console in list(self.consoles.values()):
            self.close(console)
        self.poller.close()

    def send_all(self, payload: bytes) -> None:
        """Send ``payload`` on every open console (to check they are alive)."""
        message = wire.client_frame(payload) if self.ep.ws else payload
        for console in list(self.consoles.values()):
            if console.state == OPEN:
                console.echoed = 0
                console.sock.send(message)

    def _fail(self, console: _Console, reason: str) -> None:
        self.failures[reason] += 1
        self.close(console)

    def _event(self, console: _Console, events: int) -> None:
        if console.state == CONNECTING:
            self._connected(console)
            return
        try:
            n = console.sock.recv_into(self.buf)
        except BlockingIOError:
            return
        except OSError as exc:
            n = 0
            reason = exc.strerror or str(exc)
        else:
            reason = "closed by the server"
        if console.state == UPGRADING:
            if n:
                self._upgrade(console, self.view[:n])
            else:
                self._fail(console, f"handshake: {reason}")
            return
        reader = console.reader
        got = n if reader is None else reader.feed(self.view[:n])
        if not n or (reader is not None and reader.closed):
            where = "after opening" if console.state == OPEN else "before the first byte"
            reason = reader.why if reader is not None and reader.why else reason
            self._fail(console, f"{where}: {reason}")
            return
        if reader is not None and reader.controls:
            self._answer_pings(console, reader)
        console.echoed += got
        if console.state == FIRST_BYTE and got:
            self._opened(console)

    def _connected(self, console: _Console) -> None:
        code = console.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._fail(console, f"connect: {os.strerror(code)}")
            return
        self.poller.modify(console.sock.fileno(), select.EPOLLIN)
        if not self.ep.ws:
            console.state = FIRST_BYTE
            return
        request, console.accept = self.ep.handshake(self.target)
        console.sock.send(request)
        console.state = UPGRADING

    def _upgrade(self, console: _Console, data: memoryview) -> None:
        console.head += data
        if b"\r\n\r\n" not in console.head:
            if len(console.head) > 16384:
                self._fail(console, "handshake: response too long")
            return
        head, _, rest = console.head.partition(b"\r\n\r\n")
        try:
            wire.check_response(head, console.accept)
        except wire.HandshakeError as exc:
            self._fail(console, f"handshake: {exc}")
            return
        console.head = b""
        console.reader = wire.FrameReader()
        console.state = FIRST_BYTE
        if console.reader.feed(memoryview(rest)):
            self._opened(console)

    def _opened(self, console: _Console) -> None:
        console.state = OPEN
        console.echoed = 0
        self.pending -= 1
        self.open += 1
        self.opened += 1
        if self.on_open is not None:
            self.on_open(console)

    def _answer_pings(self, console: _Console, reader: wire.FrameReader) -> None:
        for _, payload in reader.controls:
            pong = self._pong_cache.get(payload)
            if pong is None:
                pong = self._pong_cache[payload] = wire.client_frame(payload, wire.OP_PONG)
            console.sock.send(pong)
        reader.controls.clear()


def setup_rate(
    ep: Endpoint, probe: Probe, warmup: float, duration: float, window: int
) -> dict[str, Any]:
    """Consoles opened per second: TCP connect, WebSocket upgrade, target's first byte, close.

    ``window`` consoles are on their way at any time; each is closed (RST) once open.
    """
    consoles = Consoles(ep, "hello")
    consoles.on_open = consoles.close
    measuring = False
    counted_from = 0
    started = measured_from = now = time.monotonic()
    end = started + warmup + duration
    try:
        while now < end:
            for _ in range(window - consoles.pending):
                consoles.start()
            consoles.poll(0.05)
            consoles.expire()
            now = time.monotonic()
            if not measuring and now >= started + warmup:
                probe.start()
                measuring, counted_from, measured_from = True, consoles.opened, now
        probe.stop()
    finally:
        consoles.close_all()
    return {
        "per_s": round((consoles.opened - counted_from) / (now - measured_from)),
        "failures": sum(consoles.failures.values()),
        "failure_reasons": dict(consoles.failures.most_common(5)),
    }


def hold(
    ep: Endpoint,
    target_count: int,
    checkpoint: int,
    window: int,
    memory: Callable[[], dict[str, int]],
    max_failures: int,
) -> dict[str, Any]:
    """Open up to ``target_count`` idle consoles to ``hello`` and keep them open.

    Memory is sampled before, at ``checkpoint`` consoles and at the end; then every console
    still open is asked for an echo, and those that answer count as held.
    """
    consoles = Consoles(ep, "hello")
    result: dict[str, Any] = {}
    try:
        _open(consoles, 20, window, max_failures)  # warm the server's code paths
        consoles.drain(IO_TIMEOUT)
        for console in list(consoles.consoles.values()):
            consoles.close(console)
        consoles.run_for(0.5)
        result["memory_before"] = memory()
        attempted = 0
        opening = 0.0
        opened_before = consoles.opened
        for goal in sorted({min(checkpoint, target_count), target_count}):
            started = time.monotonic()
            attempted += _open(consoles, goal - attempted, window, max_failures)
            consoles.drain(IO_TIMEOUT)
            opening += time.monotonic() - started
            consoles.run_for(1.0)
            result[f"at_{goal}"] = {"open": consoles.open, "memory": memory()}
        result["attempted"] = attempted
        result["opened"] = consoles.opened - opened_before
        result["open_rate_per_s"] = round(result["opened"] / opening) if opening else 0
        result["held"] = _verify(consoles)
        result["failures"] = dict(consoles.failures.most_common(5))
    finally:
        consoles.close_all()
    return result


def _open(consoles: Consoles, count: int, window: int, max_failures: int) -> int:
    """Start ``count`` consoles, ``window`` at a time; stop early after too many failures."""
    started = 0
    while started < count and sum(consoles.failures.values()) < max_failures:
        while consoles.pending < window and started < count:
            consoles.start()
            started += 1
        consoles.poll(0.05)
        consoles.expire()
    return started


def _verify(consoles: Consoles, size: int = 8) -> int:
    consoles.send_all(os.urandom(size))
    end = time.monotonic() + 3 * IO_TIMEOUT
    while time.monotonic() < end:
        alive = [c for c in consoles.consoles.values() if c.state == OPEN]
        if all(c.echoed >= size for c in alive):
            break
        consoles.poll(0.1)
    return sum(1 for c in consoles.consoles.values() if c.state == OPEN and c.echoed >= size)


# For bench.spread, which runs the same steps in several client processes.
open_consoles = _open
verify_consoles = _verify
