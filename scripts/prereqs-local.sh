#!/usr/bin/env bash
# Installs and starts what the local cloud needs on this machine, and nothing more: Docker,
# supervisord, rclone and a static busybox for the example images. The quickstart runs this;
# scripts/prereqs.sh (the tests) runs it too, then adds what only the tests need.
# Idempotent: skips what is there. Needs root on Debian (or Ubuntu) to install.
set -euo pipefail

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v supervisord >/dev/null 2>&1 || need+=(supervisor)
[ -x /usr/bin/rclone ] || need+=(rclone)
[ -x /bin/busybox ] || need+=(busybox-static)
command -v pgrep >/dev/null 2>&1 || need+=(procps)
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

# No Docker daemon runs at boot here; start one unless one answers already (without
# iptables: the local cloud's containers use the host's network; the bridge is there for
# jobs on cloud VMs, which are one hop from the instance metadata service).
if ! docker info >/dev/null 2>&1; then
  mkdir -p /var/log/anycloud
  setsid dockerd --iptables=false </dev/null >/var/log/anycloud/dockerd.log 2>&1 &
  for _ in $(seq 1 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start:" >&2; tail -n 30 /var/log/anycloud/dockerd.log >&2; exit 1; }
fi
echo "local cloud ready: docker $(docker version --format '{{.Server.Version}}' 2>/dev/null), $(supervisord --version 2>/dev/null | sed 's/^/supervisord /'), $(/usr/bin/rclone version 2>/dev/null | head -n1)"
