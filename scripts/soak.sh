#!/usr/bin/env bash
# Soak run: egress-milter with every default check, DKIM signing (Ed25519)
# and local rate limits, under a steady load for a long time, sampling its
# memory (RSS) and open file descriptors every 10 seconds.
#
#   bash scripts/soak.sh [SECONDS] [MESSAGES_PER_SECOND]
#
# Defaults: 1800 s at 300 msg/s over 16 connections of 10 messages each (so
# milter connections open and close all the time). Prints the samples as
# CSV, then a summary: RSS and fd count at the start (after 60 s of warm-up),
# at the end and at their highest, and what the load generator counted.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TOTAL=${1:-1800}
RATE=${2:-300}
cargo build --release --locked --bins >&2
BIN=$PWD/target/release
WORK=$(mktemp -d)
trap 'kill $PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN/egress-milter" dkim-keygen --domain example.com --selector ed --algorithm ed25519 \
  --out "$WORK/ed.pem" >/dev/null
cat >"$WORK/soak.yaml" <<EOF2
listen: inet:127.0.0.1:$PORT
local_domains: [example.com]
classes:
  - { name: app, clients: [127.0.0.0/8], sender_domains: [example.com] }
internal_networks: [10.0.0.0/8]
headers: { strip_internal_received: true, remove: [X-Originating-IP] }
rate_limits:
  connections_per_client: 100000000/m
  messages_per_client: 100000000/h
  messages_per_sender: 100000000/h
  messages_per_recipient: 100000000/h
  recipients_per_sender: 100000000/h
dkim: { keys: [{ domain: example.com, selector: ed, file: $WORK/ed.pem }] }
EOF2
"$BIN/egress-milter" run --config "$WORK/soak.yaml" 2>/dev/null &
PID=$!
sleep 1
"$BIN/egress-milter-load" --milter "inet:127.0.0.1:$PORT" --connections 16 --per-session 10 \
  --rate "$RATE" --duration "$SECONDS_TOTAL" --messages 1000000000 --expect-accept \
  >"$WORK/load.txt" &
LOAD=$!
echo "seconds,rss_kb,fds"
start=$(date +%s)
while kill -0 "$LOAD" 2>/dev/null; do
  now=$(( $(date +%s) - start ))
  rss=$(awk '/^VmRSS:/{print $2}' /proc/$PID/status)
  fds=$(ls /proc/$PID/fd | wc -l)
  echo "$now,$rss,$fds" | tee -a "$WORK/samples.csv"
  sleep 10
done
wait "$LOAD"
cat "$WORK/load.txt"
python3 - "$WORK/samples.csv" <<'EOF2'
import csv, sys
rows = [tuple(map(int, r)) for r in csv.reader(open(sys.argv[1]))]
warm = [r for r in rows if r[0] >= 60] or rows
first, last = warm[0], warm[-1]
print(f"RSS: {first[1]/1024:.1f} MB at {first[0]} s, {last[1]/1024:.1f} MB at {last[0]} s, "
      f"highest {max(r[1] for r in warm)/1024:.1f} MB")
print(f"open fds: {first[2]} at {first[0]} s, {last[2]} at {last[0]} s, highest {max(r[2] for r in warm)}")
EOF2
