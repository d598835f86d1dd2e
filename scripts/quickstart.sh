#!/usr/bin/env bash
# The main job: bring the quickstart up on the local cloud, offline, from a fresh clone.
# Installs the prerequisites, builds anycloud and the job's image, fills the input bucket,
# applies, and shows what the job wrote to its output bucket.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/prereqs-local.sh
cargo build --locked --quiet
target=${CARGO_TARGET_DIR:-target}
case "$target" in /*) ;; *) target="$(pwd)/$target" ;; esac
anycloud="$target/debug/anycloud"

cd examples/quickstart
./build-image.sh
"$anycloud" bucket upload quickstart-input input
"$anycloud" apply --auto-approve
echo
echo "Waiting for the job's output to reach the output bucket…"
for _ in $(seq 1 60); do
  [ -f .anycloud/local/buckets/quickstart-results/wordcount.txt ] && break
  sleep 1
done
"$anycloud" bucket ls quickstart-results
echo
echo "wordcount.txt in bucket quickstart-results:"
cat .anycloud/local/buckets/quickstart-results/wordcount.txt
echo
echo "The job keeps training for about a minute; watch it with:"
echo "  cd examples/quickstart && $anycloud status && $anycloud bucket ls quickstart-results"
echo "Tear it down (the buckets are kept) with:"
echo "  cd examples/quickstart && $anycloud destroy --auto-approve"
