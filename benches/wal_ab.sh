#!/usr/bin/env bash
# Before/after for a WAL change: runs two minipay binaries in turn, round by
# round, so machine noise hits both alike; prints each run and, per writer
# count, the median of the per-round ratios (after / before).
# Usage: benches/wal_ab.sh BEFORE_BIN AFTER_BIN [ROUNDS]
set -euo pipefail
before=$1 after=$2 rounds=${3:-5}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
declare -A rate
for round in $(seq "$rounds"); do
  for side in before after; do
    bin=${!side}
    for writers in "256 --async" "16"; do
      rm -rf "$dir/log"
      # shellcheck disable=SC2086
      value=$("$bin" wal bench "$dir/log" --writers $writers --records 1000000 --size 256 --json |
        sed -E 's/.*"appends_per_sec":([0-9]+).*/\1/')
      rate[$round,$side,${writers%% *}]=$value
      echo "round $round $side writers ${writers%% *}: $value appends/s"
    done
  done
done
for writers in 256 16; do
  ratios=$(for round in $(seq "$rounds"); do
    echo "${rate[$round,after,$writers]} ${rate[$round,before,$writers]}" | awk '{printf "%.3f\n", $1 / $2}'
  done | sort -n)
  median=$(echo "$ratios" | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}')
  echo "writers $writers: after/before per round: $(echo $ratios) median ${median}x"
done
