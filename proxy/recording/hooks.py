"""What a recorded console's bridge calls: the observer of the host's bytes, the tap on the
browser's, and the timer that asks a VNC server for keyframes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from proxy.recording.keyframes import KeyframeRequests
from proxy.recording.recorder import Recorder
from proxy.relay.bridge import HostTap, Observer


class RecordingHooks:
    def __init__(
        self,
        recorder: Recorder,
        protocol: str,
        keyframe_interval: float,
        write_host: Callable[[bytes], None],
    ) -> None:
        self.recorder = recorder
        wanted = protocol == "vnc" and keyframe_interval > 0
        self.keyframes = KeyframeRequests() if wanted else None
        self.interval = keyframe_interval
        self._write_host = write_host
        self._timer: asyncio.TimerHandle | None = None

    @property
    def observe(self) -> Observer:
        return self._observe if self.keyframes is not None else self.recorder.to_browser

    @property
    def host_tap(self) -> HostTap | None:
        if self.keyframes is None and not self.recorder.include_input:
            return None
        return self._tap

    def start(self) -> None:
        if self.keyframes is not None:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _observe(self, data: bytes) -> None:
        self.recorder.to_browser(data)
        keyframes = self.keyframes
        if keyframes is not None and keyframes.size is None:
            keyframes.server_bytes(data)

    def _tap(self, data: bytes) -> bytes:
        if self.recorder.include_input:
            self.recorder.to_host(data)
        if self.keyframes is None or self.recorder.stopped:
            return b""
        request = self.keyframes.client_bytes(data)
        if request:
            self.recorder.keyframe()
        return request

    def _tick(self) -> None:
        self._timer = None
        if self.keyframes is None or self.recorder.stopped:
            return
        request = self.keyframes.ask()
        if request:
            try:
                self._write_host(request)
            except ConnectionError:
                return
            self.recorder.keyframe()
        self._timer = asyncio.get_running_loop().call_later(self.interval, self._tick)
