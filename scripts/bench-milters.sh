#!/usr/bin/env bash
# Side-by-side milter bench. Plays the MTA's side with egress-milter-load
# (full transactions, N connections) against:
#   - null-milter (examples/null-milter.rs: accepts everything; the ceiling),
#     once answering every command and once ("quiet") taking HELO and headers
#     without an answer, as egress-milter does: the same commands and replies,
#   - egress-milter with every check on and the local limiter,
#   - egress-milter signing with an RSA-2048 key,
#   - egress-milter signing with an Ed25519 key,
#   - OpenDKIM (Debian's package) signing with the same RSA key;
# then Postfix end to end (smtp-source into a private Postfix, smtp-sink
# behind it) with no milter, the null milter and egress-milter.
#
#   bash scripts/bench-milters.sh [MESSAGES] [CONNECTIONS]
#
# ROUNDS (default 9) sets how many alternating runs of the two null milters
# and egress-milter with every check the socket comparison takes the median
# of.
#
# Needs root the first time (installs opendkim and postfix when missing).
# On a machine with two cores or more the milters run on CPU 1 and the load
# generator on CPU 0, so that they do not take each other's time.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MESSAGES=${1:-20000}
CONNECTIONS=${2:-32}
PF_MESSAGES=${PF_MESSAGES:-3000}
ROUNDS=${ROUNDS:-9}

need=()
[ -x /usr/sbin/opendkim ] || need+=(opendkim)
[ -x /usr/sbin/postfix ] || need+=(postfix)
if [ ${#need[@]} -gt 0 ]; then
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

cargo build --release --locked --bins --example null-milter >&2
BIN=$ROOT/target/release
mkdir -p "$ROOT/target/bench"
WORK=$(mktemp -d "$ROOT/target/bench/milters.XXXXXX")
chmod 755 "$WORK"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -d "$WORK/postfix" ] && /usr/sbin/postfix -c "$WORK/postfix" stop >/dev/null 2>&1 || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ "$(nproc)" -ge 2 ]; then
  MILTER_CPU=(taskset -c 1)
  LOAD_CPU=(taskset -c 0)
else
  MILTER_CPU=()
  LOAD_CPU=()
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  return 1
}

# Keys: one RSA-2048 key shared by egress-milter and OpenDKIM, one Ed25519.
mkdir -p "$WORK/keys"
"$BIN/egress-milter" dkim-keygen --domain example.com --selector rsa \
  --out "$WORK/keys/rsa.pem" >/dev/null
"$BIN/egress-milter" dkim-keygen --domain example.com --selector ed \
  --algorithm ed25519 --out "$WORK/keys/ed.pem" >/dev/null

egress_config() { # PORT EXTRA
  cat <<EOF
listen: inet:127.0.0.1:$1
local_domains: [example.com]
hostname: out1.example.com
classes:
  - { name: app, clients: [127.0.0.0/8], sender_domains: [example.com] }
internal_networks: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16]
headers: { strip_internal_received: true, remove: [X-Originating-IP] }
rate_limits:
  backend: local
  connections_per_client: 100000000/m
  concurrent_per_client: 100000
  messages_per_client: 100000000/h
  messages_per_sender: 100000000/h
  messages_per_recipient: 100000000/h
  recipients_per_sender: 100000000/h
$2
EOF
}

NULL_PORT=$(free_port)
"${MILTER_CPU[@]}" "$BIN/examples/null-milter" "inet:127.0.0.1:$NULL_PORT" &
PIDS+=($!)
QUIET_PORT=$(free_port)
"${MILTER_CPU[@]}" "$BIN/examples/null-milter" "inet:127.0.0.1:$QUIET_PORT" --quiet &
PIDS+=($!)

ALL_PORT=$(free_port)
egress_config "$ALL_PORT" "" >"$WORK/all.yaml"
"${MILTER_CPU[@]}" "$BIN/egress-milter" run --config "$WORK/all.yaml" 2>"$WORK/all.log" &
PIDS+=($!)

RSA_PORT=$(free_port)
egress_config "$RSA_PORT" "dkim: { keys: [{ domain: example.com, selector: rsa, file: $WORK/keys/rsa.pem }] }" >"$WORK/rsa.yaml"
"${MILTER_CPU[@]}" "$BIN/egress-milter" run --config "$WORK/rsa.yaml" 2>"$WORK/rsa.log" &
PIDS+=($!)

ED_PORT=$(free_port)
egress_config "$ED_PORT" "dkim: { keys: [{ domain: example.com, selector: ed, file: $WORK/keys/ed.pem }] }" >"$WORK/ed.yaml"
"${MILTER_CPU[@]}" "$BIN/egress-milter" run --config "$WORK/ed.yaml" 2>"$WORK/ed.log" &
PIDS+=($!)

# OpenDKIM, signing mail from loopback clients for example.com.
DKIM_PORT=$(free_port)
cp "$WORK/keys/rsa.pem" "$WORK/keys/opendkim.pem"
chown opendkim "$WORK/keys/opendkim.pem"
cat >"$WORK/opendkim.conf" <<EOF
Syslog no
Mode s
Domain example.com
Selector rsa
KeyFile $WORK/keys/opendkim.pem
Canonicalization relaxed/simple
OversignHeaders From
InternalHosts 127.0.0.0/8
Socket inet:$DKIM_PORT@127.0.0.1
UserID opendkim
PidFile $WORK/opendkim.pid
EOF
"${MILTER_CPU[@]}" /usr/sbin/opendkim -f -x "$WORK/opendkim.conf" 2>"$WORK/opendkim.log" &
PIDS+=($!)

for p in $NULL_PORT $QUIET_PORT $ALL_PORT $RSA_PORT $ED_PORT $DKIM_PORT; do wait_port "$p"; done

load() { # NAME PORT SIZE
  "${LOAD_CPU[@]}" "$BIN/egress-milter-load" --milter "inet:127.0.0.1:$2" \
    --connections "$CONNECTIONS" --messages "$MESSAGES" --size "$3" \
    --expect-accept --json | python3 -c '
import json, sys
r = json.load(sys.stdin)
print(json.dumps({"name": sys.argv[1], **r}))' "$1"
}

RESULTS=$WORK/results.jsonl
: >"$RESULTS"
warm() { # PORT SIZE
  "${LOAD_CPU[@]}" "$BIN/egress-milter-load" --milter "inet:127.0.0.1:$1" \
    --connections "$CONNECTIONS" --messages 500 --size "$2" >/dev/null
}
for size in 2048 102400; do
  # The null milter and egress-milter with every check, in ROUNDS
  # alternating runs: a shared machine's speed drifts from one second to
  # the next, and the table keeps the median of each.
  warm "$NULL_PORT" "$size"
  warm "$QUIET_PORT" "$size"
  warm "$ALL_PORT" "$size"
  for _ in $(seq 1 "$ROUNDS"); do
    load "null-milter" "$NULL_PORT" "$size" >>"$RESULTS"
    load "null-milter, quiet" "$QUIET_PORT" "$size" >>"$RESULTS"
    load "egress-milter, all checks" "$ALL_PORT" "$size" >>"$RESULTS"
  done
  # Signing, once each after a warm-up.
  for spec in "egress-milter, RSA-2048 signing:$RSA_PORT" \
              "egress-milter, Ed25519 signing:$ED_PORT" "OpenDKIM, RSA-2048 signing:$DKIM_PORT"; do
    name=${spec%:*}; port=${spec##*:}
    warm "$port" "$size"
    load "$name" "$port" "$size" >>"$RESULTS"
  done
done

# Postfix end to end: smtp-source -> private Postfix -> smtp-sink.
PF=$WORK/postfix
mkdir -p "$PF/queue" "$PF/data"
chown postfix: "$PF/data"
SINK_PORT=$(free_port)
SMTP_PORT=$(free_port)
/usr/sbin/smtp-sink -u nobody "127.0.0.1:$SINK_PORT" 1024 &
PIDS+=($!)
cat >"$PF/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $PF/queue
data_directory = $PF/data
mail_owner = postfix
setgid_group = postdrop
myhostname = gw.example.com
mydomain = example.com
myorigin = example.com
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
local_recipient_maps =
relay_domains =
relayhost = [127.0.0.1]:$SINK_PORT
smtp_host_lookup = native
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_milters =
milter_protocol = 6
milter_default_action = tempfail
maillog_file = $PF/postfix.log
maillog_file_prefixes = $PF
alias_maps =
alias_database =
smtputf8_enable = no
biff = no
EOF
{
  echo "127.0.0.1:$SMTP_PORT inet n - n - - smtpd"
  sed -n '/^const MASTER_CF/,/^";/p' tests/common/postfix.rs | sed '1d;$d'
} >"$PF/master.cf"
/usr/sbin/postfix -c "$PF" check
/usr/sbin/postfix -c "$PF" start
wait_port "$SMTP_PORT"

postfix_run() { # NAME MILTER
  /usr/sbin/postconf -c "$PF" -e "smtpd_milters = $2"
  /usr/sbin/postfix -c "$PF" reload >/dev/null 2>&1
  sleep 2
  # Warm-up, then the measured run.
  "${LOAD_CPU[@]}" /usr/sbin/smtp-source -s 10 -m 200 -l 2048 -f noreply@example.com \
    -t someone@example.net -S "Your order" "127.0.0.1:$SMTP_PORT"
  local start end rejected
  start=$(date +%s.%N)
  "${LOAD_CPU[@]}" /usr/sbin/smtp-source -s 10 -m "$PF_MESSAGES" -l 2048 -f noreply@example.com \
    -t someone@example.net -S "Your order" "127.0.0.1:$SMTP_PORT"
  end=$(date +%s.%N)
  rejected=$(grep -c "milter-reject" "$PF/postfix.log" || true)
  python3 -c '
import json, sys
name, n, start, end, rejected = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
print(json.dumps({"name": name, "postfix": True, "messages": n, "seconds": end - start,
                  "messages_per_second": n / (end - start), "rejected": rejected}))' \
    "$1" "$PF_MESSAGES" "$start" "$end" "$rejected" >>"$RESULTS"
}
postfix_run "Postfix, no milter" ""
postfix_run "Postfix + null-milter" "inet:127.0.0.1:$NULL_PORT"
postfix_run "Postfix + null-milter, quiet" "inet:127.0.0.1:$QUIET_PORT"
postfix_run "Postfix + egress-milter (all checks)" "inet:127.0.0.1:$ALL_PORT"

python3 - "$RESULTS" "$CONNECTIONS" "$MESSAGES" "$PF_MESSAGES" "$ROUNDS" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
# Runs of the same milter and size: keep the run with the median msg/s.
runs = {}
for r in rows:
    if not r.get("postfix"):
        runs.setdefault((r["name"], r["size"]), []).append(r)
def median_run(rs):
    rs = sorted(rs, key=lambda r: r["messages_per_second"])
    return rs[len(rs) // 2]
print(f"\nMilter socket: egress-milter-load, {sys.argv[2]} connections, {sys.argv[3]} messages per run; "
      f"null milters and all checks: median of {sys.argv[5]} alternating runs\n")
print("| milter | message | msg/s | vs null | vs quiet null | MAIL p50/p99 µs | EOM p50/p99/p999 µs | message p50/p99 µs |")
print("|---|---|---|---|---|---|---|---|")
def medians(name):
    return {size: median_run(rs)["messages_per_second"] for (n, size), rs in runs.items() if n == name}
ceiling = medians("null-milter")
quiet = medians("null-milter, quiet")
for (name, size), rs in runs.items():
    r = median_run(rs)
    s = r["stages"]
    ratio = r["messages_per_second"] / ceiling[size] * 100
    qratio = r["messages_per_second"] / quiet[size] * 100
    spread = ""
    if len(rs) > 1:
        lo = min(x["messages_per_second"] for x in rs)
        hi = max(x["messages_per_second"] for x in rs)
        spread = f" ({lo:,.0f}–{hi:,.0f})"
    print(f'| {name} | {size // 1024} KB | {r["messages_per_second"]:,.0f}{spread} | {ratio:.0f}% | {qratio:.0f}% | '
          f'{s["mail"]["p50_us"]:.0f}/{s["mail"]["p99_us"]:.0f} | '
          f'{s["eom"]["p50_us"]:.0f}/{s["eom"]["p99_us"]:.0f}/{s["eom"]["p999_us"]:.0f} | '
          f'{s["message"]["p50_us"]:.0f}/{s["message"]["p99_us"]:.0f} |')
for size in sorted(ceiling):
    alls = [r["messages_per_second"] for r in runs[("egress-milter, all checks", size)]]
    for label, name in (("the null milter", "null-milter"), ("the quiet null milter", "null-milter, quiet")):
        nulls = [r["messages_per_second"] for r in runs[(name, size)]]
        pairs = [a / n * 100 for n, a in zip(nulls, alls)]
        print(f"\n{size // 1024} KB, all checks against {label}, run by run: "
              + " ".join(f"{p:.0f}%" for p in pairs) + f" (median {statistics.median(pairs):.0f}%)")
print(f"\nPostfix end to end: smtp-source, 10 sessions, {sys.argv[4]} messages of 2 KB, smtp-sink behind\n")
print("| set-up | msg/s | vs null milter | milter rejects |")
print("|---|---|---|---|")
base = next((r["messages_per_second"] for r in rows if r.get("postfix") and r["name"].endswith("null-milter")), None)
for r in rows:
    if not r.get("postfix"):
        continue
    ratio = f'{r["messages_per_second"] / base * 100:.0f}%' if base else "-"
    print(f'| {r["name"]} | {r["messages_per_second"]:,.0f} | {ratio} | {r["rejected"]} |')
EOF
