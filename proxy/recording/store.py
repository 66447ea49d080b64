"""The recordings on disk: listing, one recording's metadata, integrity, deletion, retention.

Every recording is two files in ``[recording] dir``: ``<id>.rec`` (the format of
:mod:`proxy.recording.format`) and ``<id>.json`` (its metadata, written when it opens and again,
with duration, size and SHA-256, when it closes). There is no shared index, so several instances
may write to one shared volume and each lists them all. Everything here is plain file I/O for a
thread (the web layer calls it through ``asyncio.to_thread``).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.recording.format import Decoder, FormatError, Kind, Record

log = logging.getLogger(__name__)

RECORDING_ID = re.compile(r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8,32}")
# What the listing shows of each recording's metadata.
LISTED = (
    "id",
    "console",
    "vmUuid",
    "protocol",
    "channel",
    "client",
    "account",
    "started",
    "duration",
    "bytes",
    "sha256",
    "complete",
    "playable",
)
READ_CHUNK = 1024 * 1024


def valid_id(ident: str) -> bool:
    """Ids name files: only this shape is ever turned into a path (no traversal)."""
    return RECORDING_ID.fullmatch(ident) is not None


def parse_time(text: str) -> float:
    """Seconds since the epoch from ISO 8601 (``2026-11-27T15:05:00Z``) or a number."""
    try:
        return float(text)
    except ValueError:
        pass
    when = datetime.datetime.fromisoformat(text)
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


@dataclass(frozen=True, slots=True)
class Filters:
    vm: str = ""
    account: str = ""
    client: str = ""
    since: float | None = None
    until: float | None = None

    def match(self, meta: dict[str, Any]) -> bool:
        if self.vm and meta.get("vmUuid") != self.vm:
            return False
        accounts = (meta.get("account"), meta.get("accountUuid"))
        if self.account and self.account not in accounts:
            return False
        if self.client and meta.get("client") != self.client:
            return False
        started = _started(meta)
        if self.since is not None and started < self.since:
            return False
        return self.until is None or started <= self.until


@dataclass(frozen=True, slots=True)
class Verification:
    sha256: str
    # Whether it is the digest the metadata holds (None: the recording never closed).
    matches: bool | None
    records: int
    # Bytes that make complete records; a torn tail (crash) is left out of playback.
    playable_bytes: int
    torn_bytes: int
    duration_ms: int
    keyframes: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256,
            "matches": self.matches,
            "records": self.records,
            "playableBytes": self.playable_bytes,
            "tornBytes": self.torn_bytes,
            "durationMs": self.duration_ms,
            "keyframesMs": list(self.keyframes),
        }


class RecordingStore:
    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def rec_path(self, ident: str) -> Path:
        if not valid_id(ident):
            raise ValueError("not a recording id")
        return self.dir / f"{ident}.rec"

    def listing(self, filters: Filters = Filters()) -> list[dict[str, Any]]:
        """Every recording that matches, newest first, as the API lists it."""
        found = [meta for meta in self._all() if filters.match(meta)]
        found.sort(key=lambda m: (m.get("started") or "", m["id"]), reverse=True)
        return [{key: meta.get(key) for key in LISTED} for meta in found]

    def get(self, ident: str) -> dict[str, Any] | None:
        path = self.rec_path(ident)
        meta = _read_meta(path.with_suffix(".json"))
        if meta is None:
            return None
        return _with_file_facts(meta, path)

    def verify(self, ident: str) -> Verification | None:
        """Read the whole file: its SHA-256 against the metadata's, and what plays."""
        meta = self.get(ident)
        if meta is None:
            return None
        digest, decoder = hashlib.sha256(), Decoder()
        records, last_ms, keyframes = 0, 0, []
        damaged = False
        try:
            with self.rec_path(ident).open("rb") as fh:
                while chunk := fh.read(READ_CHUNK):
                    digest.update(chunk)
                    if damaged:
                        continue
                    decoder.receive_data(chunk)
                    try:
                        while isinstance(record := decoder.next_record(), Record):
                            records += 1
                            last_ms = record.ms
                            if record.kind is Kind.KEYFRAME:
                                keyframes.append(record.ms)
                    except FormatError:
                        damaged = True
        except OSError:
            return None
        actual = digest.hexdigest()
        expected = meta.get("sha256") if meta.get("closed") else None
        return Verification(
            actual,
            None if expected is None else expected == actual,
            records,
            decoder.consumed,
            decoder.pending,
            last_ms,
            tuple(keyframes),
        )

    def delete(self, ident: str) -> bool:
        path = self.rec_path(ident)
        removed = False
        for each in (path, path.with_suffix(".json")):
            with contextlib.suppress(FileNotFoundError):
                each.unlink()
                removed = True
        return removed

    def prune(
        self, retention_days: float, max_total_bytes: int, now: float | None = None
    ) -> list[str]:
        """Remove recordings older than ``retention_days`` (0: no age limit), then the oldest
        until all fit in ``max_total_bytes`` (0: no limit). Returns the ids removed."""
        now = time.time() if now is None else now
        kept = sorted(self._all(), key=lambda m: (_started(m), m["id"]))
        removed: list[str] = []
        if retention_days > 0:
            cutoff = now - retention_days * 86400
            while kept and _started(kept[0]) < cutoff:
                removed.append(kept.pop(0)["id"])
        if max_total_bytes > 0:
            total = sum(int(m.get("bytes") or 0) for m in kept)
            while kept and total > max_total_bytes:
                oldest = kept.pop(0)
                total -= int(oldest.get("bytes") or 0)
                removed.append(oldest["id"])
        for ident in removed:
            self.delete(ident)
        if removed:
            log.info("pruned %d recording(s)", len(removed))
        return removed

    def _all(self) -> list[dict[str, Any]]:
        """Every recording's metadata; a file whose metadata is missing gets what its name and
        the file itself tell (its process died before writing any)."""
        metas: list[dict[str, Any]] = []
        try:
            paths = list(self.dir.iterdir())
        except OSError:
            return metas
        for path in paths:
            if path.suffix != ".rec" or not valid_id(path.stem):
                continue
            meta = _read_meta(path.with_suffix(".json")) or _orphan(path)
            metas.append(_with_file_facts(meta, path))
        return metas


def _read_meta(path: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("id") != path.stem:
        return None
    return meta


def _orphan(path: Path) -> dict[str, Any]:
    stamp = path.stem.split("-")[0]
    started = datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)
    return {
        "id": path.stem,
        "console": path.stem.split("-")[1],
        "started": started.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "complete": False,
        "closed": False,
        "playable": False,
    }


def _with_file_facts(meta: dict[str, Any], path: Path) -> dict[str, Any]:
    """A recording that never closed (still running, or its process died) is measured."""
    if meta.get("closed"):
        return meta
    meta = dict(meta, complete=False, sha256=None)
    with contextlib.suppress(OSError):
        stat = path.stat()
        meta["bytes"] = stat.st_size
        meta["duration"] = round(max(0.0, stat.st_mtime - _started(meta)), 3)
    return meta


def _started(meta: dict[str, Any]) -> float:
    try:
        return parse_time(str(meta.get("started")))
    except ValueError:
        return 0.0
