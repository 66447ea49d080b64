"""Real QEMU for integration tests: a VM with a VNC (and optionally SPICE) console on loopback.

QEMU runs on software emulation (TCG) with no disk, so it shows SeaBIOS's "No bootable device"
screen (720x400, desktop name "QEMU"). QEMU cannot bind port 0, so the VNC server gets a range of
display numbers (``-vnc 127.0.0.1:N,to=N+200``) and the port it took is read back over QMP; the
SPICE port is picked free beforehand and the launch retried when another process took it first.
Several VMs may run at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.support.binaries import require_binary
from tests.support.net import free_port

VNC_BASE_PORT = 5900
# Display numbers N..N+DISPLAY_SPAN are tried; N is random, below Linux's ephemeral port range
# (32768+), so the first one tried is usually free even with many VMs starting in parallel.
DISPLAY_SPAN = 200
DISPLAY_FIRST = range(100, 26000)
SPICE_ATTEMPTS = 5
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
QMP_TIMEOUT = 5.0
MAX_EVENTS = 10_000


class QemuError(Exception):
    """QEMU did not start, or a QMP command failed."""


class QmpClient:
    """A tiny QMP client over a UNIX socket. Every read has a timeout; events are skipped."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._lock = asyncio.Lock()
        # Events QEMU sent while we waited for answers (VNC_CONNECTED, ...), oldest first.
        self.events: list[dict[str, Any]] = []

    @classmethod
    async def connect(cls, path: str | Path, timeout: float = QMP_TIMEOUT) -> QmpClient:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(str(path))
        client = cls(reader, writer)
        try:
            greeting = await client._read_message(timeout)
            if "QMP" not in greeting:
                raise QemuError(f"not a QMP greeting: {greeting!r}")
            await client.execute("qmp_capabilities", timeout=timeout)
        except BaseException:
            await client.close()
            raise
        return client

    async def execute(
        self, command: str, arguments: dict[str, Any] | None = None, timeout: float = QMP_TIMEOUT
    ) -> Any:
        """Run one command and return its ``return`` value; raise QemuError on an ``error``."""
        request: dict[str, Any] = {"execute": command}
        if arguments is not None:
            request["arguments"] = arguments
        async with self._lock:
            self._writer.write(json.dumps(request).encode() + b"\n")
            await asyncio.wait_for(self._writer.drain(), timeout)
            deadline = time.monotonic() + timeout
            while True:
                message = await self._read_message(max(0.0, deadline - time.monotonic()))
                if "event" in message:
                    if len(self.events) < MAX_EVENTS:
                        self.events.append(message)
                    continue
                if "error" in message:
                    error = message["error"]
                    raise QemuError(f"QMP {command} failed: {error.get('desc', error)}")
                if "return" in message:
                    return message["return"]
                raise QemuError(f"unexpected QMP answer to {command}: {message!r}")

    async def _read_message(self, timeout: float) -> dict[str, Any]:
        try:
            line = await asyncio.wait_for(self._reader.readline(), timeout)
        except TimeoutError:
            raise QemuError(f"QMP did not answer within {timeout:.1f} s") from None
        if not line:
            raise QemuError("QMP connection closed (did QEMU exit?)")
        message = json.loads(line)
        if not isinstance(message, dict):
            raise QemuError(f"unexpected QMP message: {message!r}")
        return message

    async def set_password(self, protocol: str, password: str) -> None:
        """Set the VNC (``"vnc"``) or SPICE (``"spice"``) password."""
        await self.execute("set_password", {"protocol": protocol, "password": password})

    async def query_vnc(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.execute("query-vnc")
        return result

    async def query_spice(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.execute("query-spice")
        return result

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(self._writer.wait_closed(), 1.0)


class QemuVm:
    """A running QEMU VM; use ``async with QemuVm(...) as vm`` and read ``vm.vnc_port``.

    ``vnc_password``: start VNC with ``password=on`` (refuses every login until
    :meth:`set_password`). ``vnc_tls_creds``: the id of a ``tls-creds-x509`` object given in
    ``extra_args``. ``spice``: also start SPICE on a free port, with ticketing disabled unless
    ``spice_ticketing`` is true.

    TLS (see tests/support/certs.py for a matching directory): ``vnc_x509_dir`` creates a
    ``tls-creds-x509`` object ``tls0`` from that directory (checking client certificates when
    ``vnc_verify_peer``) and gives it to VNC, which then offers VeNCrypt only.
    ``spice_x509_dir`` makes SPICE listen on a TLS port only: ``spice_tls_port`` (and
    ``spice_port`` stays None).
    """

    def __init__(
        self,
        *,
        vnc_password: bool = False,
        vnc_tls_creds: str | None = None,
        spice: bool = False,
        spice_ticketing: bool = False,
        extra_args: tuple[str, ...] | list[str] = (),
        start_timeout: float = START_TIMEOUT,
        vnc_x509_dir: str | Path | None = None,
        vnc_verify_peer: bool = False,
        spice_x509_dir: str | Path | None = None,
    ) -> None:
        self.vnc_password = vnc_password
        self.vnc_x509_dir = vnc_x509_dir
        self.vnc_verify_peer = vnc_verify_peer
        self.vnc_tls_creds = vnc_tls_creds or ("tls0" if vnc_x509_dir is not None else None)
        self.spice_x509_dir = spice_x509_dir
        self.spice = spice or spice_x509_dir is not None
        self.spice_ticketing = spice_ticketing
        self.extra_args = tuple(extra_args)
        self.start_timeout = start_timeout
        self.host = "127.0.0.1"
        self.vnc_port = 0
        self.spice_port: int | None = None
        self.spice_tls_port: int | None = None
        self._binary = ""
        self._dir: Path | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._qmp: QmpClient | None = None

    @property
    def qmp(self) -> QmpClient:
        if self._qmp is None:
            raise QemuError("QEMU is not running")
        return self._qmp

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def __aenter__(self) -> QemuVm:
        self._binary = require_binary("qemu-system-x86_64", "qemu-system-x86")
        # A short directory: UNIX socket paths are limited to 108 bytes.
        self._dir = Path(tempfile.mkdtemp(prefix="qemu-"))
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _start(self) -> None:
        attempts = SPICE_ATTEMPTS if self.spice else 1
        for attempt in range(1, attempts + 1):
            spice_port = free_port() if self.spice else None
            try:
                await self._launch(spice_port)
            except QemuError as exc:
                clash = "spice" in str(exc).lower() or "address already in use" in str(exc)
                if spice_port is None or not clash or attempt == attempts:
                    raise
                continue
            if self.spice_x509_dir is not None:
                self.spice_tls_port = spice_port
            else:
                self.spice_port = spice_port
            return

    def _command(self, spice_port: int | None) -> list[str]:
        assert self._dir is not None
        display = random.choice(DISPLAY_FIRST)
        vnc = f"{self.host}:{display},to={display + DISPLAY_SPAN}"
        if self.vnc_password:
            vnc += ",password=on"
        if self.vnc_tls_creds:
            vnc += f",tls-creds={self.vnc_tls_creds}"
        command = [
            self._binary,
            "-display", "none",
            "-nodefaults",
            "-vga", "std",
            "-m", "64",
            "-vnc", vnc,
            "-qmp", f"unix:{self._dir / 'qmp.sock'},server,wait=off",
        ]  # fmt: skip
        if self.vnc_x509_dir is not None:
            verify = "on" if self.vnc_verify_peer else "off"
            command += [
                "-object",
                f"tls-creds-x509,id=tls0,dir={self.vnc_x509_dir},endpoint=server,"
                f"verify-peer={verify}",
            ]
        if spice_port is not None:
            spice = f"port={spice_port},addr={self.host}"
            if self.spice_x509_dir is not None:
                spice = f"tls-port={spice_port},addr={self.host},x509-dir={self.spice_x509_dir}"
            if not self.spice_ticketing:
                spice += ",disable-ticketing=on"
            command += ["-spice", spice]
        return command + list(self.extra_args)

    async def _launch(self, spice_port: int | None) -> None:
        assert self._dir is not None
        socket_path = self._dir / "qmp.sock"
        log_path = self._dir / "qemu.log"
        with contextlib.suppress(FileNotFoundError):
            socket_path.unlink()
        with log_path.open("wb") as log:
            self._process = await asyncio.create_subprocess_exec(
                *self._command(spice_port),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout
        while not socket_path.exists():
            if self._process.returncode is not None or time.monotonic() > deadline:
                await self._kill()
                output = log_path.read_text(errors="replace").strip()
                raise QemuError(f"QEMU did not start: {output or 'no QMP socket in time'}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._process.wait(), 0.02)
        try:
            self._qmp = await self._connect_qmp(socket_path, deadline)
            vnc = await self._qmp.query_vnc()
            self.vnc_port = int(vnc["service"])
        except (QemuError, OSError, TimeoutError, KeyError, ValueError) as exc:
            await self.stop()
            raise QemuError(f"QEMU started but QMP failed: {exc!r}") from exc

    async def _connect_qmp(self, socket_path: Path, deadline: float) -> QmpClient:
        # The socket file appears at bind(), a moment before QEMU listens on it.
        while True:
            try:
                return await QmpClient.connect(socket_path, max(0.5, deadline - time.monotonic()))
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.01)

    async def set_password(self, password: str, protocol: str = "vnc") -> None:
        await self.qmp.set_password(protocol, password)

    async def vnc_clients(self) -> list[dict[str, Any]]:
        """The VNC clients QEMU has accepted and not yet dropped."""
        clients: list[dict[str, Any]] = (await self.qmp.query_vnc()).get("clients", [])
        return clients

    async def vnc_connections(self) -> int:
        """How many VNC connections QEMU has accepted since it started.

        QEMU emits VNC_CONNECTED on its single main loop when it accepts, so every connection
        accepted before this call's query has been reported by the time the answer arrives.
        """
        await self.qmp.query_vnc()
        return sum(event["event"] == "VNC_CONNECTED" for event in self.qmp.events)

    async def screen(self) -> tuple[int, int, bytes]:
        """The guest's screen now, as (width, height, RGB bytes), via QMP ``screendump``."""
        assert self._dir is not None
        path = self._dir / "screen.ppm"
        await self.qmp.execute("screendump", {"filename": str(path)})
        magic, size, depth, pixels = path.read_bytes().split(b"\n", 3)
        if magic != b"P6" or depth != b"255":
            raise QemuError(f"unexpected screendump header {magic!r} {depth!r}")
        width, height = (int(n) for n in size.split())
        return width, height, pixels

    async def wait_for_screen(self, width: int, height: int, timeout: float = 10.0) -> None:
        """Wait until the guest shows a non-blank screen of this size.

        A fresh VM first shows a 640x480 "not initialized" screen; SeaBIOS switches to 720x400
        text mode ~0.3 s later. A VNC client connecting in between is told 640x480.
        """
        deadline = time.monotonic() + timeout
        while True:
            got_width, got_height, pixels = await self.screen()
            # n non-overlapping copies of one pixel fill n pixels only when all pixels are equal
            uniform = pixels.count(pixels[:3]) * 3 == len(pixels)
            if (got_width, got_height) == (width, height) and not uniform:
                return
            if time.monotonic() > deadline:
                raise QemuError(
                    f"screen is {got_width}x{got_height}, not {width}x{height}, after {timeout:g} s"
                )
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        """Stop QEMU (terminate, then kill) and remove its directory; safe to call twice."""
        if self._qmp is not None:
            await self._qmp.close()
            self._qmp = None
        await self._kill()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    async def _kill(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        try:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
                try:
                    await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        finally:
            # Even when cancelled mid-wait, QEMU must not outlive the test.
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
