"""Config: defaults, TOML file, environment, CLI overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.cli import main
from proxy.config import ConfigError, load_config


def test_defaults_allow_no_targets_and_frame_only_self() -> None:
    config = load_config(env={})
    assert config.targets.allow == ()
    assert config.server.frame_ancestors == ("'self'",)
    assert config.tickets.ttl == 30.0


def test_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text(
        '[server]\nlisten = "127.0.0.1:7000"\nallowed_origins = ["https://a.example"]\n'
        '[zstack]\nurl = "http://zs:8080/zstack"\ntimeout = 3\n'
        '[targets]\nallow = ["10.0.0.0/8:5900-6000"]\n'
    )
    env = {"CONSOLE_PROXY_ZSTACK_TIMEOUT": "4.5", "CONSOLE_PROXY_SERVER_LISTEN": "0.0.0.0:7001"}
    config = load_config(path, env, {"server.listen": "127.0.0.1:7002"})
    assert config.server.listen == "127.0.0.1:7002"
    assert config.zstack.timeout == 4.5
    assert config.zstack.url == "http://zs:8080/zstack"
    assert config.server.allowed_origins == ("https://a.example",)
    assert config.targets.allow == ("10.0.0.0/8:5900-6000",)


def test_env_lists_as_commas_or_json() -> None:
    config = load_config(env={"CONSOLE_PROXY_TARGETS_ALLOW": "10.0.0.0/8, 192.168.0.0/16:5900"})
    assert config.targets.allow == ("10.0.0.0/8", "192.168.0.0/16:5900")
    config = load_config(env={"CONSOLE_PROXY_SERVER_FRAME_ANCESTORS": '["\'self\'", "https://p"]'})
    assert config.server.frame_ancestors == ("'self'", "https://p")


def test_unknown_environment_variables_are_named_once_and_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # What Kubernetes injects for a Service named console-proxy, and a typo of a known key.
    env = {
        "CONSOLE_PROXY_PORT": "tcp://10.96.0.10:6080",
        "CONSOLE_PROXY_PORT_6080_TCP_ADDR": "10.96.0.10",
        "CONSOLE_PROXY_SERVICE_HOST": "10.96.0.10",
        "CONSOLE_PROXY_SERVICE_PORT": "6080",
        "CONSOLE_PROXY_ZSTACK_TIMOUT": "s3cret-value",
        "CONSOLE_PROXY_ZSTACK_TIMEOUT": "3",
    }
    with caplog.at_level("WARNING", logger="proxy.config.loading"):
        config = load_config(env=env)
    assert config.zstack.timeout == 3.0
    [record] = [r for r in caplog.records if r.name == "proxy.config.loading"]
    for name in env:
        assert (name in record.getMessage()) is (name != "CONSOLE_PROXY_ZSTACK_TIMEOUT")
    assert "s3cret-value" not in caplog.text and "10.96.0.10" not in caplog.text


@pytest.mark.parametrize(
    ("env", "key", "words"),
    [
        ({"CONSOLE_PROXY_ZSTACK_TIMEOUT": "soon"}, "zstack.timeout", "number"),
        ({"CONSOLE_PROXY_ZSTACK_TIMEOUT": "-1"}, "zstack.timeout", "greater than 0"),
        ({"CONSOLE_PROXY_SERVER_LISTEN": "6080"}, "server.listen", "HOST:PORT"),
        ({"CONSOLE_PROXY_SERVER_BASE_PATH": "console/"}, "server.base_path", "start with '/'"),
        ({"CONSOLE_PROXY_TARGETS_ALLOW": "10.0.0.0/33"}, "targets.allow", "not a network"),
        ({"CONSOLE_PROXY_TARGETS_ALLOW": "10.0.0.1:70000"}, "targets.allow", "ports"),
        ({"CONSOLE_PROXY_LIMITS_MAX_CONNECTIONS": "1.5"}, "limits.max_connections", "whole"),
        ({"CONSOLE_PROXY_SERVER_ALLOWED_ORIGINS": "portal"}, "server.allowed_origins", "origin"),
        ({"CONSOLE_PROXY_ZSTACK_URL": "zs:8080"}, "zstack.url", "http"),
        ({"CONSOLE_PROXY_TICKETS_STORE": "etcd://x"}, "tickets.store", "unsupported"),
    ],
)
def test_bad_values_name_the_key(env: dict[str, str], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(env=env)
    assert raised.value.key == key
    assert words in str(raised.value)


def test_bad_toml_types_and_sections(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[limits]\nidle_timeout = "long"\n')
    with pytest.raises(ConfigError, match="limits.idle_timeout"):
        load_config(path, {})
    path.write_text("[serverr]\nlisten = 1\n")
    with pytest.raises(ConfigError, match="serverr: unknown section"):
        load_config(path, {})
    path.write_text("[server\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path, {})


def test_cli_reports_config_errors_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONSOLE_PROXY_LIMITS_IDLE_TIMEOUT", "0")
    assert main(["serve"]) == 2
    assert "limits.idle_timeout: must be greater than 0" in capsys.readouterr().err


def test_a_token_file_that_does_not_exist_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(env={"CONSOLE_PROXY_TICKETS_TOKEN_FILE": str(tmp_path / "missing")})
    assert raised.value.key == "tickets.token_file" and "does not exist" in str(raised.value)
    empty = tmp_path / "tokens.d"
    empty.mkdir()  # ZStack's agent fills it later
    assert load_config(env={"CONSOLE_PROXY_TICKETS_TOKEN_FILE": str(empty)}).tickets.token_file
