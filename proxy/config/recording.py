"""The ``[recording]`` section: where console recordings go, what they hold, how long they stay.

Kept apart from :mod:`proxy.config.sections` (which only names the section) so that module stays
small. Recording is off while ``dir`` is empty.
"""

from __future__ import annotations

from dataclasses import dataclass

MODES = ("best_effort", "required")
GIB = 1024**3


class RecordingConfigError(ValueError):
    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem)
        self.key = f"recording.{key}"
        self.problem = problem


@dataclass(frozen=True)
class RecordingConfig:
    # A directory (may be a volume shared by several instances); empty: recording is off.
    dir: str = ""
    # Also record what the browser sends the VM (keys, pointer): off by default, it holds typing.
    include_input: bool = False
    # Recordings older than this many days are removed by pruning (0: kept until max_total_bytes).
    retention_days: float = 30.0
    # A console's recording stops here (marked incomplete; "required" closes the console).
    max_bytes_per_console: int = GIB
    # All recordings together; the oldest are removed first when pruning. 0: no limit.
    max_total_bytes: int = 0
    # "best_effort": a recording that cannot keep up is marked incomplete and the console goes on;
    # "required": that console is closed (4507) and new consoles are refused while the directory
    # is unwritable.
    mode: str = "best_effort"
    # Seconds between keyframe markers (a full-screen update asked of a VNC server); 0: none.
    keyframe_interval: float = 10.0


def check_recording(config: RecordingConfig) -> None:
    """Raise RecordingConfigError naming the key of a value that makes no sense."""
    if config.mode not in MODES:
        raise RecordingConfigError(
            "mode", f"must be 'best_effort' or 'required', got {config.mode!r}"
        )
    if config.retention_days < 0:
        raise RecordingConfigError("retention_days", "must be 0 or more days")
    if config.max_bytes_per_console < 4096:
        raise RecordingConfigError("max_bytes_per_console", "must be at least 4096 bytes")
    if config.max_total_bytes < 0:
        raise RecordingConfigError("max_total_bytes", "must be 0 (no limit) or more bytes")
    if config.keyframe_interval < 0:
        raise RecordingConfigError("keyframe_interval", "must be 0 (none) or more seconds")
