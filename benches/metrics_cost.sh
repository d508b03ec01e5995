#!/usr/bin/env bash
# What recording metrics costs end to end: `minipay bench --local` (64
# clients, 30,000 payments, 100 payee accounts) with the servers' metrics
# off and on (MINIPAY_METRICS_LISTEN=127.0.0.1:0, which every server of the
# local cluster inherits), alternating round by round so machine noise hits
# both alike; prints every run and each side's median payments/s and the
# on/off ratio of the medians.
# Usage: benches/metrics_cost.sh ROUNDS BINARY
set -euo pipefail
rounds=$1 bin=$2
off="" on=""
run() {
  "$@" "$bin" bench --local --clients 64 --payments 30000 --accounts 100 2>/dev/null |
    awk '/payments\/s/ {print $1}'
}
for round in $(seq "$rounds"); do
  rate=$(run env -u MINIPAY_METRICS_LISTEN); off="$off $rate"; echo "round $round off: $rate payments/s"
  rate=$(run env MINIPAY_METRICS_LISTEN=127.0.0.1:0); on="$on $rate"; echo "round $round on:  $rate payments/s"
done
median() { tr ' ' '\n' <<<"$1" | grep . | sort -n |
  awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
m_off=$(median "$off") m_on=$(median "$on")
echo "off: median $m_off (runs:$off)"
echo "on:  median $m_on (runs:$on)"
awk -v a="$m_on" -v b="$m_off" 'BEGIN {printf "on/off: %.3f\n", a / b}'
