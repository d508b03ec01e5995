#!/usr/bin/env bash
# Before/after end to end: runs `minipay bench --local` (64 clients, 30,000
# payments, 100 payee accounts) with each given binary in turn, round by
# round, so machine noise hits all alike; prints every run and the median
# payments/s per binary.
# Usage: benches/payments_ab.sh ROUNDS LABEL=BINARY [LABEL=BINARY ...]
set -euo pipefail
rounds=$1; shift
declare -A runs
for _ in $(seq "$rounds"); do
  for spec in "$@"; do
    label=${spec%%=*} bin=${spec#*=}
    rate=$("$bin" bench --local --clients 64 --payments 30000 --accounts 100 2>/dev/null |
      awk '/payments\/s/ {print $1}')
    runs[$label]="${runs[$label]:-} $rate"
    echo "$label: $rate payments/s"
  done
done
for spec in "$@"; do
  label=${spec%%=*}
  median=$(tr ' ' '\n' <<<"${runs[$label]}" | grep . | sort -n |
    awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}')
  echo "$label: median $median (runs:${runs[$label]})"
done
