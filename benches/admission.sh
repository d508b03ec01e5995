#!/usr/bin/env bash
# Admission control under load, three runs a round, interleaved so the
# machine's swings hit all alike:
#   plain     64 clients;
#   herd      64 clients while 400 connections (each from its own loopback
#             address) send failing logins, 3 at a time each, waiting as
#             each refusal's retry-after hint asks;
#   flood     the same flood resending every call at once (hostile);
#   overload  1,024 concurrent payers (refused payments resent after the
#             gateway's retry-after hint).
# Each run starts its own cluster (`minipay bench --local`). Prints one JSON
# line per run and, per kind, the medians of payments/s, p99, refusals and
# the gateway's peak RssAnon.
# Usage: benches/admission.sh ROUNDS [MINIPAY_BINARY] [PAYMENTS]
set -euo pipefail
rounds=$1
bin=${2:-target/release/minipay}
payments=${3:-20000}
out=$(mktemp)
field() { grep -o "\"$1\":[0-9.e+-]*" | cut -d: -f2; }
for round in $(seq "$rounds"); do
  for kind in plain herd flood overload; do
    case $kind in
      plain) flags=(--clients 64) ;;
      herd) flags=(--clients 64 --login-flood 400 --flood-honours-retry-after) ;;
      flood) flags=(--clients 64 --login-flood 400) ;;
      overload) flags=(--clients 1024) ;;
    esac
    line=$("$bin" bench --local --accounts 100 --payments "$payments" --json "${flags[@]}" 2>/dev/null)
    echo "$kind $line" | tee -a "$out"
  done
done
median() { sort -n | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
for kind in plain herd flood overload; do
  runs=$(grep "^$kind " "$out")
  printf '%s: median %s payments/s, p99 %s ms, refused %s (p99 %s ms), peak RssAnon %s MiB\n' "$kind" \
    "$(field payments_per_sec <<<"$runs" | median)" \
    "$(field p99_ms <<<"$runs" | median)" \
    "$(field refused <<<"$runs" | median)" \
    "$(field refused_p99_ms <<<"$runs" | median)" \
    "$(field gateway_rss_anon_peak_bytes <<<"$runs" | awk '{print $1 / 1048576}' | median)"
done
rm -f "$out"
