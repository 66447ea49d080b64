"""Checking an operator's ZStack account name and password by logging in, then out at once.

``PUT zstack/v1/accounts/login`` with ``logInByAccount`` and the SHA-512 hex digest of the
password; a session it opens is deleted right after (``DELETE accounts/sessions/{uuid}``), so the
proxy keeps no ZStack session of its own. The password is never logged and never stored.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import aiohttp

from proxy.zstack.client import MAX_BODY, ZStackError

log = logging.getLogger(__name__)

# ZStack's answer to a wrong name or password (503).
WRONG_CREDENTIALS = "ID.1000"


class ZStackLogin:
    def __init__(self, http: aiohttp.ClientSession, base_url: str, timeout: float) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def check(self, account: str, password: str) -> bool:
        """True when ZStack accepts the name and password; False when it refuses them. Raises
        ZStackError (502/504) when ZStack cannot be asked."""
        body = {
            "logInByAccount": {
                "accountName": account,
                "password": hashlib.sha512(password.encode()).hexdigest(),
            }
        }
        status, answer = await self._call("PUT", "accounts/login", body)
        if status == 200 and isinstance(answer.get("inventory"), dict):
            session = answer["inventory"].get("uuid")
            if isinstance(session, str) and session:
                await self._logout(session)
                return True
        error = answer.get("error")
        if status == 503 and isinstance(error, dict):
            if error.get("code") != WRONG_CREDENTIALS:
                log.warning("ZStack refused an operator login with %s", error.get("code"))
            return False
        raise ZStackError(
            "ZSTACK.BAD_RESPONSE", "The ZStack API sent an answer the proxy does not understand."
        )

    async def _logout(self, session: str) -> None:
        try:
            status, _ = await self._call("DELETE", f"accounts/sessions/{session}", None)
        except ZStackError as exc:
            status = exc.status
        if status != 200:
            # The session then lives until ZStack's own timeout; nothing here holds it.
            log.warning("could not log the operator's check session out of ZStack (%s)", status)

    async def _call(self, method: str, path: str, body: Any) -> tuple[int, dict[str, Any]]:
        try:
            async with self._http.request(
                method,
                f"{self._base}/v1/{path}",
                json=body,
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                raw = await resp.content.read(MAX_BODY)
                status = resp.status
        except TimeoutError:
            raise ZStackError(
                "ZSTACK.TIMEOUT", "The ZStack API did not answer in time.", status=504
            ) from None
        except aiohttp.ClientError as exc:
            # `from None`: the request, password digest included, stays out of tracebacks.
            raise ZStackError(
                "ZSTACK.UNREACHABLE",
                "The ZStack API could not be reached.",
                type(exc).__name__,
                502,
            ) from None
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = None
        return status, parsed if isinstance(parsed, dict) else {}
