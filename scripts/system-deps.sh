#!/usr/bin/env bash
# Installs the Debian packages the demo or the tests use when one is missing (root only).
# Without root it prints what to install and carries on: the tests then skip locally with the
# same advice, and fail under CI.
set -euo pipefail

# `system-deps.sh demo` installs only what `make demo` needs; no argument, what the tests need.
need=()
command -v npm >/dev/null || need+=(npm)
python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
if [ "${1:-}" != demo ]; then
  command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
  command -v chromium >/dev/null || need+=(chromium)
  command -v redis-server >/dev/null || need+=(redis-server)
  command -v nginx >/dev/null || need+=(nginx)
  command -v haproxy >/dev/null || need+=(haproxy)
  command -v ip >/dev/null || need+=(iproute2)
  command -v systemd-analyze >/dev/null || need+=(systemd)
fi

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "missing Debian packages: ${need[*]} (run: sudo apt-get install ${need[*]})" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${need[@]}"
