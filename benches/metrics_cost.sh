#!/usr/bin/env bash
# What recording metrics costs end to end: `minipay bench --local` (64
# clients, 30,000 payments, 100 payee accounts) with the servers' metrics
# off and on (MINIPAY_METRICS_LISTEN=127.0.0.1:0, which every server of the
# local cluster inherits), alternating round by round so machine noise hits
# both alike. Prints every run's payments/s and the CPU the whole run took
# per payment (user + system of the bench and its servers, which it waits
# for), then each side's medians and the on/off ratios of the medians.
# Usage: benches/metrics_cost.sh ROUNDS BINARY
set -euo pipefail
rounds=$1 bin=$2
payments=30000
off="" on="" off_cpu="" on_cpu=""
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# One run: "payments/s cpu-µs-per-payment".
run() {
  local TIMEFORMAT='%U %S'
  { time "$@" "$bin" bench --local --clients 64 --payments $payments --accounts 100 \
      >"$scratch/out" 2>/dev/null; } 2>"$scratch/time"
  local rate cpu
  rate=$(awk '/payments\/s/ {print $1; exit}' "$scratch/out")
  cpu=$(awk -v n=$payments '{printf "%.1f", ($1 + $2) * 1e6 / n}' "$scratch/time")
  echo "$rate $cpu"
}
for round in $(seq "$rounds"); do
  read -r rate cpu < <(run env -u MINIPAY_METRICS_LISTEN)
  off="$off $rate" off_cpu="$off_cpu $cpu"
  echo "round $round off: $rate payments/s, $cpu µs CPU/payment"
  read -r rate cpu < <(run env MINIPAY_METRICS_LISTEN=127.0.0.1:0)
  on="$on $rate" on_cpu="$on_cpu $cpu"
  echo "round $round on:  $rate payments/s, $cpu µs CPU/payment"
done
median() { tr ' ' '\n' <<<"$1" | grep . | sort -n |
  awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
echo "off: median $(median "$off") payments/s, $(median "$off_cpu") µs CPU/payment"
echo "on:  median $(median "$on") payments/s, $(median "$on_cpu") µs CPU/payment"
awk -v a="$(median "$on")" -v b="$(median "$off")" -v c="$(median "$on_cpu")" -v d="$(median "$off_cpu")" \
  'BEGIN {printf "on/off: payments/s %.3f, CPU per payment %.3f\n", a / b, c / d}'
