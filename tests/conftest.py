"""Fixtures and hooks shared by every test; the helpers themselves live in tests/support/."""

from __future__ import annotations

from typing import Any

# Shared fixtures, each defined once beside its helper in tests/support/.
pytest_plugins = [
    # In dependency order: a module is registered before another one imports it.
    "tests.support.fake_servers",  # server_failures, and the hook that raises them
    "tests.support.net",  # tcp_target
    "tests.support.stack",  # stack
    "tests.support.browser",  # browser, new_page, start_console_stack, demo_inventory
    "tests.support.services",  # redis_server
    "tests.support.certs",  # pki
    "tests.support.reverse_proxies",  # tls
]


def pytest_asyncio_loop_factories(config: Any, item: Any) -> dict[str, Any]:
    """Tests run on uvloop, as `console-proxy serve` does in production."""
    import uvloop

    return {"uvloop": uvloop.new_event_loop}
