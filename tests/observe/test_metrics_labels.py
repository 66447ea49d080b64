"""/metrics stays bounded and can be closed: ZStack error codes the proxy does not know are
counted as ``other`` (a ZStack, or anything posing as one, cannot grow the exposition without
end), and ``[server] metrics_token`` puts it behind a bearer token."""

from __future__ import annotations

import itertools
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from proxy.app import create_app
from proxy.observe.metrics import zstack_error_label
from tests.support.configs import make_config

VM = "0123456789abcdef0123456789abcdef"


def zstack_errors(text: str) -> dict[str, float]:
    return {
        sample.labels["code"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "console_proxy_zstack_errors"
        for sample in family.samples
        if sample.name == "console_proxy_zstack_errors_total"
    }


@pytest.fixture
async def failing_zstack(aiohttp_server: Any) -> Any:
    """A ZStack whose every console-address answer fails with the next code from ``codes``."""
    answers: list[tuple[int, str]] = []
    counter = itertools.count()

    async def console_addresses(request: web.Request) -> web.Response:
        status, code = answers[next(counter) % len(answers)]
        if status != 503:
            return web.Response(status=status, text="no")
        return web.json_response({"error": {"code": code, "description": "failed"}}, status=503)

    app = web.Application()
    app.router.add_get("/zstack/v1/vm-instances/{uuid}/console-addresses", console_addresses)
    server = await aiohttp_server(app, access_log=None)
    return answers, str(server.make_url("/zstack"))


async def test_unknown_zstack_codes_do_not_grow_metrics(
    aiohttp_server: Any, failing_zstack: Any
) -> None:
    answers, url = failing_zstack
    answers[:] = [(503, f"EVIL.{n}") for n in range(150)]
    answers += [(503, "ID.1001"), (503, "SYS.1003"), (418, ""), (299, "")]
    config = make_config(zstack={"url": url}, limits={"rate_burst": 1000})
    proxy = await aiohttp_server(create_app(config))
    async with aiohttp.ClientSession() as http:
        for _ in answers:
            async with http.post(
                proxy.make_url("/api/v1/consoles"),
                json={"vmUuid": VM},
                headers={"Authorization": f"OAuth {'0' * 32}"},
            ) as answer:
                assert answer.status in (401, 404, 502), await answer.text()
        async with http.get(proxy.make_url("/metrics")) as answer:
            counted = zstack_errors(await answer.text())
    assert counted == {"other": 151, "ID.1001": 1, "SYS.1003": 1, "ZSTACK.HTTP_418": 1}


@pytest.mark.parametrize(
    ("code", "label"),
    [
        ("ID.1001", "ID.1001"),
        ("ID.1002", "ID.1002"),
        ("SYS.1003", "SYS.1003"),
        ("SYS.1006", "SYS.1006"),
        ("VM.1010", "VM.1010"),
        ("ZSTACK.TIMEOUT", "ZSTACK.TIMEOUT"),
        ("ZSTACK.UNREACHABLE", "ZSTACK.UNREACHABLE"),
        ("ZSTACK.BAD_RESPONSE", "ZSTACK.BAD_RESPONSE"),
        ("ZSTACK.HTTP_500", "ZSTACK.HTTP_500"),
        ("ZSTACK.HTTP_599", "other"),
        ("ZSTACK.ANYTHING", "other"),
        ("ID.1001\nfake 1", "other"),
        ("", "other"),
    ],
)
def test_label_values(code: str, label: str) -> None:
    assert zstack_error_label(code) == label


async def test_metrics_token(aiohttp_server: Any) -> None:
    proxy = await aiohttp_server(create_app(make_config(server={"metrics_token": "m3trics"})))
    url = proxy.make_url("/metrics")
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "m3trics"}):
            async with http.get(url, headers=headers) as answer:
                assert answer.status == 401
                error = (await answer.json())["error"]
                assert error["code"] == "METRICS.UNAUTHORIZED"
                assert "Bearer" in error["description"] and "m3trics" not in str(error)
        async with http.get(url, headers={"Authorization": "Bearer m3trics"}) as answer:
            assert answer.status == 200
            assert "console_proxy_consoles_active" in await answer.text()


async def test_metrics_open_without_a_token(aiohttp_server: Any) -> None:
    proxy = await aiohttp_server(create_app(make_config()))
    async with aiohttp.ClientSession() as http, http.get(proxy.make_url("/metrics")) as answer:
        assert answer.status == 200
