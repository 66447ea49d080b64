"""System binaries the tests run (qemu, redis-server, haproxy, nginx, ...): found or skipped."""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = bool(os.environ.get("CI"))


def require_binary(name: str, package: str, *, how: str = "") -> str:
    """The binary's path; locally a missing one skips with advice, in CI it fails the test.

    ``how`` tells how to install it when that is not ``apt-get install package``.
    """
    path = shutil.which(name)
    if path is None:
        advice = how or f"install it with 'apt-get install {package}'"
        message = f"{name} not found: {advice}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path
