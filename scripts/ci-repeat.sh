#!/bin/bash
# Repeat CI as it runs: clone a commit into a fresh directory and run `CI=true bash .ci/run` with no terminal,
# N times in a row, then M more times beside a bounded one-core busy loop (started here, ended by its PID).
# usage: scripts/ci-repeat.sh [COMMIT=HEAD] [N=5] [M=2]    (results: one line per run on stdout and in ci-repeat.log)
set -u
repo=$(git rev-parse --show-toplevel)
commit=$(git -C "$repo" rev-parse "${1:-HEAD}")
n=${2:-5}; m=${3:-2}
log=${CI_REPEAT_LOG:-$repo/ci-repeat.log}
for i in $(seq 1 $((n + m))); do
  dir=$(mktemp -d /tmp/wiregate-ci.XXXXXX); chmod 755 "$dir"  # tests drop root to nobody: it must read the clone
  git clone -q "$repo" "$dir/w" && git -C "$dir/w" checkout -q "$commit"
  hog=""
  if [ "$i" -gt "$n" ]; then timeout 3600 python3 -c 'while True: pass' & hog=$!; fi
  start=$(date +%s)
  (cd "$dir/w" && CI=true bash .ci/run < /dev/null > "$dir/out" 2>&1); rc=$?
  secs=$(( $(date +%s) - start ))
  [ -n "$hog" ] && kill "$hog" 2>/dev/null
  line="run $i commit ${commit:0:7} hog=${hog:+yes}${hog:-no} rc=$rc ${secs}s $(date -u +%FT%H:%MZ) :: $(grep -E 'passed|failed|error' "$dir/out" | tail -1)"
  echo "$line" | tee -a "$log"
  if [ "$rc" -eq 0 ]; then rm -rf "$dir"; else echo "  kept $dir (out: $dir/out)" | tee -a "$log"; fi
done
