#!/bin/sh
# The quickstart's job: counts the words of its input, then "trains" for $STEPS steps,
# checkpointing each one so a replacement VM resumes where the last one stopped.
set -eu
mkdir -p /mnt/output /mnt/checkpoint
if touch /mnt/input/.probe 2>/dev/null; then
  echo "input is WRITABLE" > /mnt/output/input-mode.txt
else
  echo "input is read-only" > /mnt/output/input-mode.txt
fi
for f in /mnt/input/*; do
  [ -f "$f" ] && echo "$(wc -w < "$f") $(basename "$f")"
done > /mnt/output/wordcount.txt
step=0
[ -f /mnt/checkpoint/step ] && step=$(cat /mnt/checkpoint/step)
# What it says goes to its output (`anycloud logs`) and to progress.log in the bucket.
say() { echo "$1"; echo "$1" >> /mnt/output/progress.log; }
say "resumed at step $step"
while [ "$step" -lt "${STEPS:-20}" ]; do
  step=$((step + 1))
  echo "$step" > /mnt/checkpoint/step
  say "step $step done"
  sleep 1
done
echo "finished at step $step" > /mnt/output/done.txt
echo "finished at step $step"
