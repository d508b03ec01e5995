#!/usr/bin/env bash
# Compares WAL settings under the same load, interleaving runs so that machine
# noise hits every setting alike, and prints each setting's median appends/s.
# Usage: benches/wal_settings.sh [REPS]   (builds the release binary first)
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-5}
cargo build --release --bin minipay >/dev/null 2>&1
bin=target/release/minipay
dir=target/wal-settings
settings=(
  "16 threads, 1 sync, no delay|--writers 16 --records 60000 --syncs-in-flight 1 --max-batch-delay-us 0"
  "16 threads, 2 syncs, 200us (default)|--writers 16 --records 60000"
  "16 threads, 2 syncs, no delay|--writers 16 --records 60000 --max-batch-delay-us 0"
  "256 async, 1 sync, no delay|--writers 256 --records 600000 --async --syncs-in-flight 1 --max-batch-delay-us 0"
  "256 async, 2 syncs, 200us (default)|--writers 256 --records 600000 --async"
  "256 async, default, no background zero-fill, 1 GiB segment|--writers 256 --records 600000 --async --no-prepare-ahead --segment-size 1073741824"
  "256 async, default, 1 GiB segment|--writers 256 --records 600000 --async --segment-size 1073741824"
)
declare -A results
for _ in $(seq "$reps"); do
  for setting in "${settings[@]}"; do
    label=${setting%%|*}
    rm -rf "$dir"
    # shellcheck disable=SC2086
    rate=$($bin wal bench "$dir" ${setting#*|} --size 256 --json | sed -E 's/.*"appends_per_sec":([0-9]+).*/\1/')
    results[$label]="${results[$label]:-} $rate"
  done
done
rm -rf "$dir"
for setting in "${settings[@]}"; do
  label=${setting%%|*}
  sorted=$(echo ${results[$label]} | tr ' ' '\n' | sort -n)
  median=$(echo "$sorted" | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')
  printf '%-62s median %8s appends/s  (runs: %s)\n' "$label" "$median" "$(echo $sorted | tr '\n' ' ')"
done
