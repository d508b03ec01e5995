#!/bin/bash
# The setup of issue #22 by hand: two banks and a gateway over a cluster
# directory (tls/, setup.json: `minipay history-bench build --payments 0`
# makes one with 1,000 users), `minipay bench --gateway ... --clients 64
# --payments N`, and every server's RssAnon sampled every 0.2 s.
# Usage: benches/serve_by_hand.sh MINIPAY_BINARY DIR PAYMENTS
BIN=$1; D=$2; N=$3
GWPORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
start() { # name args...
  local name=$1; shift
  "$BIN" "$@" > $D/$name.out 2> $D/$name.log &
  echo $! > $D/$name.pid
  for i in $(seq 1 600); do grep -q listening $D/$name.out && break; sleep 0.1; done
}
start bank_a bank --name bank_a --listen 127.0.0.1:0 --data-dir $D/bank_a --setup $D/setup.json --tls-dir $D/tls --gateway https://127.0.0.1:$GWPORT
start bank_b bank --name bank_b --listen 127.0.0.1:0 --data-dir $D/bank_b --setup $D/setup.json --tls-dir $D/tls --gateway https://127.0.0.1:$GWPORT
A=$(sed -n 's/listening //p' $D/bank_a.out); B=$(sed -n 's/listening //p' $D/bank_b.out)
start gateway gateway --listen 127.0.0.1:$GWPORT --data-dir $D/gateway --setup $D/setup.json --tls-dir $D/tls --bank bank_a=https://$A --bank bank_b=https://$B
# Each server's largest RssAnon (KiB) in $D/<name>.peak, and a line a
# minute in $D/<name>.rss (seconds since the start, RssAnon KiB).
sample() { # name
  local pid=$(cat $D/$1.pid) peak=0 ticks=0
  while kill -0 $pid 2>/dev/null; do
    r=$(awk '/RssAnon/{print $2}' /proc/$pid/status 2>/dev/null)
    [ -n "$r" ] && [ "$r" -gt "$peak" ] && peak=$r && echo $peak > $D/$1.peak
    [ $((ticks % 300)) = 0 ] && echo "$((ticks / 5)) $r" >> $D/$1.rss
    ticks=$((ticks + 1)); sleep 0.2
  done
}
for name in bank_a bank_b gateway; do sample $name & done
"$BIN" bench --gateway https://127.0.0.1:$GWPORT --tls-dir $D/tls --clients 64 --payments $N --json 2>/dev/null > $D/bench.json
for name in bank_a bank_b gateway; do
  echo "$name RssAnon peak KiB: $(cat $D/$name.peak); at the end: $(awk '/RssAnon/{print $2}' /proc/$(cat $D/$name.pid)/status)"
done
kill $(cat $D/gateway.pid) $(cat $D/bank_a.pid) $(cat $D/bank_b.pid); wait
