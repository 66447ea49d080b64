"""``console-proxy --version`` and ``console-proxy check-config``: the effective config, with
file < environment < flags, printed as TOML or JSON with every secret redacted."""

from __future__ import annotations

import importlib.metadata
import json
import os
import tomllib
from pathlib import Path
from typing import Any

import pytest

import proxy
from proxy.cli import main, package_version
from proxy.config import load_config
from proxy.configdump import REDACTED, is_secret

SECRETS = {
    "admin-token-value",
    "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
    "hunter2",
    "redispass",
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CONSOLE_PROXY_"):
            monkeypatch.delenv(name)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return str(path)


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"console-proxy {package_version()}\n"
    try:
        installed = importlib.metadata.version("zstack-console-proxy")
    except importlib.metadata.PackageNotFoundError:
        installed = proxy.__version__
    assert package_version() == installed == proxy.__version__


def test_check_config_merges_file_environment_and_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(
        tmp_path,
        '[server]\nlisten = "127.0.0.1:7001"\nbase_path = "/file"\n'
        '[limits]\nidle_timeout = 60\n[zstack]\nurl = "http://file.example:8080/zstack"\n',
    )
    monkeypatch.setenv("CONSOLE_PROXY_SERVER_BASE_PATH", "/env")
    monkeypatch.setenv("CONSOLE_PROXY_ZSTACK_URL", "http://env.example:8080/zstack")
    monkeypatch.setenv("CONSOLE_PROXY_TARGETS_ALLOW", "10.0.0.0/8,192.168.0.0/16:5900-5999")
    code, out, err = run(
        capsys, "check-config", "--config", config, "--zstack-url", "http://flag:8080/zstack"
    )
    assert (code, err) == (0, "")
    assert out.startswith("# console pages and static files from ")
    printed = tomllib.loads(out)
    assert printed["server"]["listen"] == "127.0.0.1:7001"  # file
    assert printed["server"]["base_path"] == "/env"  # environment over file
    assert printed["zstack"]["url"] == "http://flag:8080/zstack"  # flag over both
    assert printed["targets"]["allow"] == ["10.0.0.0/8", "192.168.0.0/16:5900-5999"]
    assert printed["limits"]["idle_timeout"] == 60.0
    assert printed["limits"]["max_per_vm"] == 8  # default
    # The printed TOML is a config file that loads to the same configuration.
    again = load_config(write_config(tmp_path, out.split("\n", 1)[1]), env={})
    assert again == load_config(
        config,
        env=dict(os.environ),
        overrides={"zstack.url": "http://flag:8080/zstack"},
    )


def test_check_config_redacts_every_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
    config = write_config(
        tmp_path,
        f'[server]\nadmin_token = "admin-token-value"\n'
        f'[tickets]\nstore = "redis"\nredis_url = "redis://proxy:hunter2@redis.example:6379/0"\n'
        f'encrypt_key = "{key}"\nsigning_keys = ["{key}", "{key}"]\n',
    )
    for form in ("toml", "json"):
        code, out, err = run(capsys, "check-config", "--config", config, "--format", form)
        assert (code, err) == (0, ""), err
        for secret in SECRETS:
            assert secret not in out, f"{secret} printed in {form}"
        printed: dict[str, Any] = tomllib.loads(out) if form == "toml" else json.loads(out)
        assert printed["server"]["admin_token"] == REDACTED
        assert printed["tickets"]["encrypt_key"] == REDACTED
        assert printed["tickets"]["signing_keys"] == [REDACTED, REDACTED]
        assert printed["tickets"]["redis_url"] == f"redis://proxy:{REDACTED}@redis.example:6379/0"
        assert printed["tickets"]["redis_prefix"] == "console-proxy:"
        # An unset secret shows as unset; a path to a key file (test_not_secret_names) as itself.
        assert printed["tls"]["key_file"] == ""


def test_check_config_redacts_a_token_redis_password(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONSOLE_PROXY_TICKETS_TOKEN_PLUGIN", "TokenRedis")
    monkeypatch.setenv("CONSOLE_PROXY_TICKETS_TOKEN_SOURCE", "redis.example:6380:1:redispass:ns")
    monkeypatch.setenv("CONSOLE_PROXY_TICKETS_STORE", "redis://:hunter2@127.0.0.1:6379/0")
    code, out, _ = run(capsys, "check-config", "--format", "json")
    assert code == 0
    tickets = json.loads(out)["tickets"]
    assert tickets["token_source"] == f"redis.example:6380:1:{REDACTED}:ns"
    assert tickets["store"] == f"redis://:{REDACTED}@127.0.0.1:6379/0"
    assert not SECRETS & set(out.split('"'))


@pytest.mark.parametrize(
    "name",
    ["admin_token", "metrics_token", "cookie_key", "signing_keys", "encrypt_key", "db_password"],
)
def test_secret_names(name: str) -> None:
    assert is_secret(name)


@pytest.mark.parametrize("name", ["token_file", "key_file", "cert_file", "token_plugin", "ttl"])
def test_not_secret_names(name: str) -> None:
    assert not is_secret(name)


@pytest.mark.parametrize(
    ("argv", "environment", "key"),
    [
        (["--listen", "nowhere"], {}, "server.listen"),
        ([], {"CONSOLE_PROXY_LIMITS_IDLE_TIMEOUT": "-1"}, "limits.idle_timeout"),
        # (An unknown CONSOLE_PROXY_* variable is only a warning: Kubernetes injects some.)
        ([], {"CONSOLE_PROXY_SERVER_LISTEN": "nowhere"}, "server.listen"),
        ([], {"CONSOLE_PROXY_TLS_CA_FILE": "/nonexistent/ca.pem"}, "tls.ca_file"),
        (["--config", "/nonexistent/config.toml"], {}, "--config"),
    ],
)
def test_check_config_names_the_bad_key(
    argv: list[str],
    environment: dict[str, str],
    key: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    code, out, err = run(capsys, "check-config", *argv)
    assert code == 2
    assert out == ""
    assert err.startswith(f"console-proxy: config key {key}:")
