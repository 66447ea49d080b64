"""The operator pages: ``GET <base>/operator/`` (the sign-in form, or the live consoles once
signed in), ``POST <base>/operator/login`` and ``POST <base>/operator/logout``.

A sign-in is checked by logging in to ZStack with the account and password (then out again at
once) and by the account's place in ``[operator] accounts``. More than 5 failures a minute from
one address answer 429.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from proxy import i18n
from proxy.web.keys import AUDIT, CONFIG, OPERATOR_FAILURES, ZSTACK_LOGIN
from proxy.web.operator_session import clear_cookie, same_origin, set_cookie, signed_in
from proxy.web.pages import language_context, page_language
from proxy.zstack.client import ZStackError

log = logging.getLogger(__name__)

FAILURES_PER_MINUTE = 5
MAX_FIELD = 256

# What the sign-in form says; the words live in proxy/languages/ ("login").
WRONG = "wrong"
NOT_OPERATOR = "not-operator"
TOO_MANY = "too-many"
ZSTACK_DOWN = "zstack-down"
FOREIGN = "foreign-origin"
MISSING = "missing"


async def operator_home(request: web.Request) -> web.StreamResponse:
    account = signed_in(request)
    if account is None:
        return login_form(request)
    language = page_language(request)
    context = {
        **language_context(language),
        "root": "../",
        "account": account,
        # operator.js's words: the "operator" section, less the template's own.
        "operator_text": i18n.section(language, "operator"),
    }
    response = aiohttp_jinja2.render_template("operator.html", request, context)
    return own_origin_referrer(response)


async def operator_redirect(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(location="operator/")


def login_form(request: web.Request, problem: str = "", status: int = 200) -> web.Response:
    context: dict[str, Any] = {
        **language_context(page_language(request)),
        "root": "../",
        "problem": problem,
    }
    response = aiohttp_jinja2.render_template(
        "operator_login.html", request, context, status=status
    )
    return own_origin_referrer(response)


def own_origin_referrer(response: web.Response) -> web.Response:
    # With no-referrer (the proxy's default) browsers send "Origin: null" on these pages' POSTs,
    # which the Origin check must refuse; same-origin keeps the real Origin on our own requests.
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response


async def login(request: web.Request) -> web.StreamResponse:
    client = request.remote or ""
    failures = request.app[OPERATOR_FAILURES]
    if not same_origin(request):
        return login_form(request, FOREIGN, 403)
    if await failures.exhausted(client):
        request.app[AUDIT].operator("login_failed", "", client, reason="rate_limited")
        return login_form(request, TOO_MANY, 429)
    form = await request.post()
    account, password = form.get("account"), form.get("password")
    if not isinstance(account, str) or not isinstance(password, str) or not account or not password:
        return login_form(request, MISSING, 400)
    account = account.strip()[:MAX_FIELD]
    try:
        accepted = await request.app[ZSTACK_LOGIN].check(account, password[:1024])
    except ZStackError as exc:
        log.warning("operator sign-in could not ask ZStack: %s", exc.code)
        return login_form(request, ZSTACK_DOWN, 502)
    listed = account in request.app[CONFIG].operator.accounts
    if not accepted or not listed:
        await failures.spend(client)
        reason = "not_operator" if accepted else "wrong_credentials"
        request.app[AUDIT].operator("login_failed", account, client, reason=reason)
        return login_form(request, NOT_OPERATOR if accepted else WRONG, 403 if accepted else 401)
    request.app[AUDIT].operator("login", account, client)
    log.info("operator %s signed in", account)
    response = see_other()
    set_cookie(request, response, account)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    if not same_origin(request):
        return login_form(request, FOREIGN, 403)
    account = signed_in(request)
    if account is not None:
        request.app[AUDIT].operator("logout", account, request.remote or "")
    response = see_other()
    clear_cookie(request, response)
    return response


def see_other() -> web.Response:
    # Relative: <base>/operator/login and /logout lead back to <base>/operator/.
    return web.Response(status=303, headers={"Location": "./"})
