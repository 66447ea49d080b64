"""Configuration errors name the key but never echo a secret value (keys, tokens, passwords)."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.cli import main
from proxy.config import ConfigError, load_config

SECRET = "c2VjcmV0LXNpZ25pbmcta2V5LXRoYXQtbXVzdC1uZXZlci1sZWFr"
PASSWORD = "hunter2-redis-pass"


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        (f'[tickets]\nsigning_keys = "{SECRET}"\n', "tickets.signing_keys"),
        (f'[tickets]\nsigning_keys = [["{SECRET}"]]\n', "tickets.signing_keys"),
        (f'[server]\nadmin_token = ["{SECRET}"]\n', "server.admin_token"),
        (f'[tickets]\nencrypt_key = ["{SECRET}"]\n', "tickets.encrypt_key"),
        (f'[tickets]\nencrypt_key = {{k = "{SECRET}"}}\n', "tickets.encrypt_key"),
        (f'[tickets]\nredis_url = ["redis://:{PASSWORD}@r:6379/0"]\n', "tickets.redis_url"),
        (f'[tickets]\nstore = "http://:{PASSWORD}@r:6379/0"\n', "tickets.store"),
        (f'[tickets]\nstore = "redis://user:{PASSWORD}@r:6379/0"\nmax_tickets = "x"\n',
         "tickets.max_tickets"),
        (f'[zstack]\nurl = ["http://admin:{PASSWORD}@zs:8080/zstack"]\n', "zstack.url"),
    ],
)  # fmt: skip
def test_errors_name_the_key_without_the_secret(tmp_path: Path, toml: str, key: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as raised:
        load_config(path, {})
    assert raised.value.key == key
    text = f"{raised.value} {raised.value!r} {raised.value.problem}"
    assert SECRET not in text and PASSWORD not in text


@pytest.mark.parametrize(
    "env",
    [
        {"CONSOLE_PROXY_SERVER_ADMIN_TOKEN": "x", "CONSOLE_PROXY_TICKETS_STORE": f"ftp://:{PASSWORD}@h"},
        {"CONSOLE_PROXY_TICKETS_SIGNING_KEYS": f'["{SECRET}", 5]'},
        {"CONSOLE_PROXY_TICKETS_SIGNING_KEYS": SECRET[:20]},
        {"CONSOLE_PROXY_TICKETS_ENCRYPT_KEY": SECRET},
    ],
)  # fmt: skip
def test_cli_exit_2_without_the_secret(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "config key tickets." in err
    assert SECRET not in err and SECRET[:20] not in err and PASSWORD not in err


@pytest.mark.parametrize(
    "url",
    [
        f"redis://:{PASSWORD}@redis:notaport/0",
        f"redis://:{PASSWORD}@[::1/0",
        f"unix://:{PASSWORD}@/run/redis.sock?db=zero",
    ],
)
def test_unparsable_redis_url_is_a_config_error_without_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(
            env={"CONSOLE_PROXY_TICKETS_STORE": "redis", "CONSOLE_PROXY_TICKETS_REDIS_URL": url}
        )
    assert raised.value.key == "tickets.redis_url"
    assert "Redis URL" in str(raised.value)
    assert PASSWORD not in str(raised.value)


@pytest.mark.parametrize(
    ("plugin", "words"),
    [
        ("os.system", "not a websockify token plugin"),
        ("builtins.print", "not a websockify token plugin"),
        ("no_such_module_here.Plugin", "cannot import"),
        ("NoSuchPlugin", "no token plugin"),
    ],
)
def test_token_plugin_must_be_a_plugin_class(
    plugin: str, words: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from proxy.app import create_app

    marker = tmp_path / "ran"
    config = load_config(
        env={
            "CONSOLE_PROXY_TICKETS_TOKEN_PLUGIN": plugin,
            "CONSOLE_PROXY_TICKETS_TOKEN_SOURCE": f"touch {marker}",
        }
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as raised:
        create_app(config)
    assert raised.value.key == "tickets.token_plugin"
    assert words in str(raised.value)
    assert not marker.exists()


def test_websockify_plugins_still_load(tmp_path: Path) -> None:
    from proxy.app import create_app

    (tmp_path / "tokens").write_text("abc: 127.0.0.1:5900\n")
    for plugin in ("ReadOnlyTokenFile", "websockify.token_plugins.TokenFile"):
        env = {
            "CONSOLE_PROXY_TICKETS_TOKEN_PLUGIN": plugin,
            "CONSOLE_PROXY_TICKETS_TOKEN_SOURCE": str(tmp_path / "tokens"),
        }
        create_app(load_config(env=env))
