"""Fixtures of the recording tests (they live with their helpers in support.py)."""

from tests.recording.support import recording_proxy, vnc_server

__all__ = ["recording_proxy", "vnc_server"]
