"""Retention and pruning (also from the command line), integrity, and the recordings API:
filters, pages, authentication, ids, deletion; the playback page's sign-in and languages."""

from __future__ import annotations

import json
import time
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest

from proxy import i18n
from proxy.cli import main
from proxy.recording.format import MAGIC, Kind, encode_record
from proxy.recording.store import RecordingStore
from proxy.web.operator_session import COOKIE
from tests.recording.support import StartProxy, audit_lines

DAY = 86400.0


def fake(directory: Path, started: float, console: str, size: int = 100, **meta: Any) -> str:
    """A closed recording as the proxy leaves one."""
    ident = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started)) + f"-{console}"
    body = MAGIC + encode_record(Kind.TO_BROWSER, 0, bytes(size))
    (directory / f"{ident}.rec").write_bytes(body)
    import hashlib

    full = {
        "version": 1,
        "id": ident,
        "console": console,
        "vmUuid": meta.pop("vm", "vm-1"),
        "protocol": "vnc",
        "client": meta.pop("client", "127.0.0.1"),
        "account": meta.pop("account", "admin"),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(started)),
        "duration": 1.0,
        "bytes": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
        "complete": True,
        "closed": True,
        "playable": True,
        **meta,
    }
    (directory / f"{ident}.json").write_text(json.dumps(full))
    return ident


def test_prune_removes_the_old_then_the_oldest_beyond_the_total(tmp_path: Path) -> None:
    now = time.time()
    old = fake(tmp_path, now - 40 * DAY, "aaaaaaaaaaaa")
    older_kept = fake(tmp_path, now - 3 * DAY, "bbbbbbbbbbbb", size=1000)
    newer = fake(tmp_path, now - 2 * DAY, "cccccccccccc", size=1000)
    newest = fake(tmp_path, now - 1 * DAY, "dddddddddddd", size=1000)
    store = RecordingStore(tmp_path)
    assert store.prune(30, 0, now) == [old]
    assert store.prune(30, 2100, now) == [older_kept]
    assert sorted(p.stem for p in tmp_path.glob("*.rec")) == [newer, newest]
    assert not list(tmp_path.glob(f"{old}*"))


def test_prune_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "recordings"
    directory.mkdir()
    old = fake(directory, time.time() - 10 * DAY, "aaaaaaaaaaaa")
    kept = fake(directory, time.time(), "bbbbbbbbbbbb")
    config = tmp_path / "proxy.toml"
    config.write_text(f'[recording]\ndir = "{directory}"\nretention_days = 7\n')
    assert main(["recordings", "prune", "--config", str(config)]) == 0
    assert f"removed {old}" in capsys.readouterr().out
    assert [p.stem for p in directory.glob("*.rec")] == [kept]
    config.write_text("[recording]\n")
    assert main(["recordings", "prune", "--config", str(config)]) == 2


def test_a_tampered_file_is_detected(tmp_path: Path) -> None:
    ident = fake(tmp_path, time.time(), "aaaaaaaaaaaa")
    store = RecordingStore(tmp_path)
    check = store.verify(ident)
    assert check is not None and check.matches is True and check.records == 1
    path = tmp_path / f"{ident}.rec"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    check = store.verify(ident)
    assert check is not None and check.matches is False


def test_a_recording_that_never_closed_is_measured_and_plays_to_its_last_record(
    tmp_path: Path,
) -> None:
    ident = fake(tmp_path, time.time(), "aaaaaaaaaaaa", closed=False, sha256=None)
    path = tmp_path / f"{ident}.rec"
    with path.open("ab") as fh:
        fh.write(encode_record(Kind.TO_BROWSER, 5, b"x" * 50)[:20])  # torn by a kill
    meta = RecordingStore(tmp_path).get(ident)
    assert meta is not None and meta["complete"] is False and meta["bytes"] == path.stat().st_size
    check = RecordingStore(tmp_path).verify(ident)
    assert check is not None and check.matches is None
    assert (check.records, check.torn_bytes) == (1, 20)


async def test_the_api_lists_filters_and_pages(recording_proxy: StartProxy) -> None:
    proxy = await recording_proxy()
    proxy.dir.mkdir(parents=True)
    now = time.time()
    first = fake(proxy.dir, now - 300, "aaaaaaaaaaaa", vm="vm-a", account="alice")
    second = fake(proxy.dir, now - 200, "bbbbbbbbbbbb", vm="vm-b", client="10.0.0.9")
    third = fake(proxy.dir, now - 100, "cccccccccccc", vm="vm-a")
    status, body = await proxy.get("/api/v1/recordings")
    assert status == 200
    assert [r["id"] for r in body["recordings"]] == [third, second, first]
    assert set(body["recordings"][0]) == {
        "id", "console", "vmUuid", "protocol", "channel", "client", "account", "started",
        "duration", "bytes", "sha256", "complete", "playable",
    }  # fmt: skip
    for query, expected in [
        ("vm=vm-a", [third, first]),
        ("account=alice", [first]),
        ("client=10.0.0.9", [second]),
        (f"since={now - 250:.0f}", [third, second]),
        (f"until={time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(now - 150))}", [second, first]),
    ]:
        _, body = await proxy.get(f"/api/v1/recordings?{query}")
        assert [r["id"] for r in body["recordings"]] == expected, query
    _, page = await proxy.get("/api/v1/recordings?limit=2")
    assert [r["id"] for r in page["recordings"]] == [third, second] and page["next"] == 2
    _, page = await proxy.get("/api/v1/recordings?limit=2&offset=2")
    assert [r["id"] for r in page["recordings"]] == [first] and page["next"] is None
    status, body = await proxy.get("/api/v1/recordings?since=yesterday")
    assert (status, body["error"]["code"]) == (400, "REQUEST.INVALID_TIME")


async def test_one_recording_its_file_and_deleting_it(
    recording_proxy: StartProxy, tmp_path: Path
) -> None:
    proxy = await recording_proxy()
    proxy.dir.mkdir(parents=True)
    ident = fake(proxy.dir, time.time(), "aaaaaaaaaaaa")
    status, body = await proxy.get(f"/api/v1/recordings/{ident}")
    assert status == 200 and body["integrity"]["matches"] is True
    status, data = await proxy.get(f"/api/v1/recordings/{ident}/file")
    assert status == 200 and data == (proxy.dir / f"{ident}.rec").read_bytes()
    async with proxy.http.delete(
        proxy.url(f"/api/v1/recordings/{ident}"),
        headers={"Authorization": "Bearer recording-admin-token"},
    ) as r:
        assert r.status == 200
    assert not list(proxy.dir.iterdir())
    status, _ = await proxy.get(f"/api/v1/recordings/{ident}")
    assert status == 404
    deleted = [e for e in audit_lines(tmp_path) if e["event"] == "operator.recording_delete"]
    assert deleted[0]["recording"] == ident and deleted[0]["operator"] == "admin-token"


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/recordings",
        "/api/v1/recordings/20260101T000000Z-aaaaaaaaaaaa",
        "/api/v1/recordings/20260101T000000Z-aaaaaaaaaaaa/file",
    ],
)
async def test_no_credentials_no_recordings(recording_proxy: StartProxy, path: str) -> None:
    proxy = await recording_proxy()
    status, body = await proxy.get(path, headers={})
    assert (status, body["error"]["code"]) == (401, "ADMIN.UNAUTHORIZED")
    status, _ = await proxy.get(path, headers={"Authorization": "Bearer wrong"})
    assert status == 401


@pytest.mark.parametrize("ident", ["..", "..%2F..%2Fetc%2Fpasswd", "x.json", "20260101T000000Z-ZZ"])
async def test_ids_are_validated(recording_proxy: StartProxy, ident: str) -> None:
    proxy = await recording_proxy()
    status, _ = await proxy.get(f"/api/v1/recordings/{ident}/file")
    assert status in (400, 404)
    if status == 400:
        status, body = await proxy.get(f"/api/v1/recordings/{ident}")
        assert body["error"]["code"] == "REQUEST.INVALID_RECORDING_ID"


async def test_the_playback_page_needs_a_sign_in(recording_proxy: StartProxy) -> None:
    proxy = await recording_proxy()
    async with proxy.http.get(
        proxy.url("/operator/recordings/20260101T000000Z-aaaaaaaaaaaa"), allow_redirects=False
    ) as r:
        assert r.status == 302 and r.headers["Location"] == "../"


async def test_the_playback_page_speaks_the_operators_language(recording_proxy: StartProxy) -> None:
    proxy = await recording_proxy()
    origin = str(proxy.server.make_url("/").origin())
    async with proxy.http.post(
        proxy.url("/operator/login"),
        data={"account": "admin", "password": "password"},
        headers={"Origin": origin},
        allow_redirects=False,
    ) as r:
        assert r.status in (302, 303), await r.text()
        session = SimpleCookie(r.headers["Set-Cookie"])[COOKIE].value
    page = proxy.url("/operator/recordings/20260101T000000Z-aaaaaaaaaaaa")
    for language, words in (("zh-CN", ["录像", "速度", "下载"]), ("en", ["Recording", "Speed"])):
        headers = {"Accept-Language": language, "Cookie": f"{COOKIE}={session}"}
        async with proxy.http.get(page, headers=headers) as r:
            html = await r.text()
        assert f'<html lang="{language}">' in html
        assert all(word in html for word in words), language
        text = json.loads(html.split('id="playback-text">', 1)[1].split("</script>", 1)[0])
        assert text["seeking"] == i18n.text(language, "playback.seeking")
