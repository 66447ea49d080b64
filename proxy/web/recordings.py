"""Console recordings for operators (operator cookie or bearer admin token):

- ``GET <base>/api/v1/recordings?vm=&account=&client=&since=&until=&limit=&offset=``: newest
  first, one page at a time (``next`` is the offset of the following page, or null);
- ``GET <base>/api/v1/recordings/{id}``: its metadata, with ``integrity`` (the file's SHA-256
  checked against the metadata's, and what plays);
- ``GET <base>/api/v1/recordings/{id}/file``: the recording file;
- ``DELETE <base>/api/v1/recordings/{id}``: remove it (audited);
- ``GET <base>/operator/recordings/{id}``: the playback page (operator sign-in).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from proxy import i18n
from proxy.recording.store import Filters, RecordingStore, parse_time, valid_id
from proxy.web.errors import ApiError
from proxy.web.keys import AUDIT, RECORDINGS
from proxy.web.operator import own_origin_referrer
from proxy.web.operator_session import require_operator, signed_in
from proxy.web.pages import language_context, page_language

log = logging.getLogger(__name__)

# Would sit in proxy/web/keys.py with the others.
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def store_of(request: web.Request) -> RecordingStore:
    recordings = request.app.get(RECORDINGS)
    if recordings is None or recordings.dir is None:
        raise ApiError(404, "RECORDING.DISABLED", "Recording is off (set recording.dir).")
    return RecordingStore(recordings.dir)


def recording_id(request: web.Request) -> str:
    ident = request.match_info["id"]
    if not valid_id(ident):
        raise ApiError(400, "REQUEST.INVALID_RECORDING_ID", "That is not a recording id.")
    return ident


async def list_recordings(request: web.Request) -> web.Response:
    require_operator(request)
    store = store_of(request)
    query = request.query
    filters = Filters(
        vm=query.get("vm", ""),
        account=query.get("account", ""),
        client=query.get("client", ""),
        since=_time(query, "since"),
        until=_time(query, "until"),
    )
    limit = _count(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _count(query, "offset", 0, 0, 10**9)
    found = await asyncio.to_thread(store.listing, filters)
    page = found[offset : offset + limit]
    following = offset + limit if offset + limit < len(found) else None
    return web.json_response({"recordings": page, "total": len(found), "next": following})


async def get_recording(request: web.Request) -> web.Response:
    require_operator(request)
    store, ident = store_of(request), recording_id(request)
    meta = await asyncio.to_thread(store.get, ident)
    verified = await asyncio.to_thread(store.verify, ident) if meta else None
    if meta is None or verified is None:
        raise ApiError(404, "RECORDING.NOT_FOUND", "No recording has that id.")
    return web.json_response(dict(meta, integrity=verified.to_json()))


async def recording_file(request: web.Request) -> web.StreamResponse:
    require_operator(request)
    store, ident = store_of(request), recording_id(request)
    path = store.rec_path(ident)
    if not await asyncio.to_thread(path.is_file):
        raise ApiError(404, "RECORDING.NOT_FOUND", "No recording has that id.")
    headers = {
        "Content-Type": "application/octet-stream",
        "Content-Disposition": f'attachment; filename="{ident}.rec"',
        "Cache-Control": "no-store",
    }
    return web.FileResponse(path, headers=headers)


async def delete_recording(request: web.Request) -> web.Response:
    operator = require_operator(request)
    store, ident = store_of(request), recording_id(request)
    if not await asyncio.to_thread(store.delete, ident):
        raise ApiError(404, "RECORDING.NOT_FOUND", "No recording has that id.")
    request.app[AUDIT].operator(
        "recording_delete", operator.account, request.remote or "", recording=ident
    )
    log.info("operator %s deleted recording %s", operator.account, ident)
    return web.json_response({"id": ident, "deleted": True})


async def playback_page(request: web.Request) -> web.StreamResponse:
    ident = recording_id(request)
    account = signed_in(request)
    if account is None:
        raise web.HTTPFound(location="../")
    language = page_language(request)
    context: dict[str, Any] = {
        **language_context(language),
        "root": "../../",
        "account": account,
        "recording": ident,
        # playback.js's words: the "playback" section.
        "playback_text": i18n.section(language, "playback"),
    }
    response = aiohttp_jinja2.render_template("operator_playback.html", request, context)
    return own_origin_referrer(response)


def add_recording_routes(app: web.Application, base: str) -> None:
    api = f"{base}/api/v1/recordings"
    app.router.add_get(api, list_recordings)
    app.router.add_get(f"{api}/{{id}}", get_recording)
    app.router.add_delete(f"{api}/{{id}}", delete_recording)
    app.router.add_get(f"{api}/{{id}}/file", recording_file)
    app.router.add_get(f"{base}/operator/recordings/{{id}}", playback_page)


def _time(query: Any, key: str) -> float | None:
    text = query.get(key, "")
    if not text:
        return None
    try:
        return parse_time(text)
    except ValueError:
        raise ApiError(
            400, "REQUEST.INVALID_TIME", f"{key} must be ISO 8601 or seconds since 1970."
        ) from None


def _count(query: Any, key: str, default: int, low: int, high: int) -> int:
    text = query.get(key, "")
    if not text:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise ApiError(400, "REQUEST.INVALID_PAGE", f"{key} must be a number from {low} to {high}.")
    return int(text)
