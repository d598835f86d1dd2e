#!/usr/bin/env bash
# Builds the quickstart image from local files only (no registry): a static busybox and
# the job script, imported as anycloud-quickstart:latest.
# Usage: build-image.sh [IMAGE [JOB_SCRIPT]]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
image=${1:-anycloud-quickstart:latest}
job=${2:-$here/job.sh}
busybox=/bin/busybox   # Debian's busybox-static: no libraries needed inside the image
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/mnt"
cp "$busybox" "$rootfs/bin/busybox"
for tool in sh cat echo mkdir touch wc basename sleep ls date rm mv; do
  ln -s busybox "$rootfs/bin/$tool"
done
cp "$job" "$rootfs/job.sh"
tar -C "$rootfs" -c . | docker import -c 'CMD ["/bin/sh", "/job.sh"]' -c 'ENV PATH=/bin' - "$image" >/dev/null
echo "built $image"
