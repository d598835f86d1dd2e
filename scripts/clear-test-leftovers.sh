#!/usr/bin/env bash
# Removes what an earlier test run killed mid-way (CI cancelled, a machine restarted) left
# behind: the SSH test hosts' network namespaces, their processes, links and /etc/netns
# files, their sudo users, the Azure tests' Azurite and the GCP tests' emulators. Only the tests' own prefixes are
# touched (acns*, acmd*, acv*, ac<digits>, anycloud-azurite-*); run it when no test is running.
set -uo pipefail

for ns in $(ip netns list 2>/dev/null | awk '$1 ~ /^acns[0-9]+$/ {print $1}'); do
  pids=$(ip netns pids "$ns" 2>/dev/null)
  [ -n "$pids" ] && kill -9 $pids 2>/dev/null
  ip netns del "$ns" && echo "removed the test host namespace $ns left by an earlier run"
done
# The metadata test's "VM" (providers/host/tests/on_a_machine.rs): its namespace, its own
# dockerd (started with nsenter, so not among the namespace's pids by name alone) and the
# containers and metadata stand-in in it.
for ns in $(ip netns list 2>/dev/null | awk '$1 ~ /^acmd[0-9]+$/ {print $1}'); do
  pids=$(ip netns pids "$ns" 2>/dev/null)
  [ -n "$pids" ] && kill -9 $pids 2>/dev/null
  ip netns del "$ns" && echo "removed the metadata test's namespace $ns left by an earlier run"
done
pkill -f -- 'dockerd --data-root=/tmp/anycloud-md-' 2>/dev/null
pkill -f -- 'containerd --config /tmp/anycloud-md-' 2>/dev/null
# What the Azure and GCP tests give a test host (its name resolution and trusted CA).
rm -rf /etc/netns/acns[0-9]*
pkill -f -- '--location /tmp/anycloud-azurite-' 2>/dev/null
# The GCP tests' fake-gcs-server.
pkill -f -- '^/var/cache/anycloud/fake-gcs/fake-gcs-server ' 2>/dev/null
pkill -f -- 'gcp-storage-emulator start' 2>/dev/null
for link in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -E '^acv[0-9]+$'); do
  ip link del "$link" 2>/dev/null
done
for user in $(awk -F: '$1 ~ /^ac[0-9]+$/ {print $1}' /etc/passwd); do
  pkill -9 -u "$user" 2>/dev/null
  userdel -r "$user" 2>/dev/null
  rm -f "/etc/sudoers.d/$user"
  echo "removed the test user $user left by an earlier run"
done
exit 0
