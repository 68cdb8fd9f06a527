#!/usr/bin/env bash
# Milters as the MTA sees them: smtp-source sends messages into a private
# Postfix and a private Sendmail on loopback, each relaying to smtp-sink, with
# in turn each of these in the MTA's milter list:
#   - no milter at all,
#   - a null milter on Sendmail's libmilter (benches/mta/null-milter.c: every
#     stage registered, continue to each, accept at end of message), the
#     reference ceiling; and the same without a DATA callback, as most
#     libmilter milters are written,
#   - egress-milter with every default check (sender policy, From: strict
#     relay, local rate limits, content rules, header scrubbing, one log
#     line per message),
#   - the same with the rate limits counted in Redis (a redis-server on a
#     loopback port, as gateways sharing limits use it),
#   - the same with two incident signals, in process and in Redis,
#   - the same with the reputation watch and bounce suppression, and with
#     the console served,
#   - egress-milter signing with an RSA-2048 key, and with an Ed25519 key,
#   - OpenDKIM (Debian's package) signing with the same RSA key,
# each over TCP and over a unix socket, with 2 KB and 100 KB messages, 10 and
# 50 concurrent SMTP sessions. The set-ups of one MTA, size and concurrency
# run in alternating rounds; the tables give the median of the rounds with
# the slowest and fastest in brackets, and ratios of medians.
#
#   bash scripts/bench-mta.sh [MESSAGES]
#
# MESSAGES per run (default 1000); ROUNDS (default 3); MTAS (default
# "postfix sendmail"); SIZES (default "2048 102400"); SESSIONS (default
# "10 50"); ONLY, a regular expression over set-up names, runs a subset;
# COMPARE, the path of another egress-milter binary (an older build), adds
# its "all checks" set-ups as "egress-milter COMPARE, all checks, ..." to the
# same alternating rounds.
# A message that is not accepted fails the run (the bench is a correctness
# check too). Needs root the first time: it installs postfix, libmilter-dev,
# opendkim, redis-server, m4 and libwrap0 when missing and unpacks Sendmail into
# target/sendmail-root, as scripts/test.sh does.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MESSAGES=${1:-1000}
ROUNDS=${ROUNDS:-3}
MTAS=${MTAS:-postfix sendmail}
SIZES=${SIZES:-2048 102400}
SESSIONS=${SESSIONS:-10 50}
ONLY=${ONLY:-.}

need=()
[ -x /usr/sbin/postfix ] || need+=(postfix)
[ -e /usr/include/libmilter/mfapi.h ] || need+=(libmilter-dev)
[ -x /usr/sbin/opendkim ] || need+=(opendkim)
[ -x /usr/bin/redis-server ] || need+=(redis-server)
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
command -v m4 >/dev/null 2>&1 || need+=(m4)
[ -e /usr/lib/x86_64-linux-gnu/libwrap.so.0 ] || [ -e /lib/x86_64-linux-gnu/libwrap.so.0 ] || need+=(libwrap0)
if [ ${#need[@]} -gt 0 ]; then
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
SENDMAIL_ROOT=$ROOT/target/sendmail-root
if [[ " $MTAS " == *" sendmail "* ]] && [ ! -x "$SENDMAIL_ROOT/usr/libexec/sendmail/sendmail" ]; then
  debs=$(mktemp -d)
  chmod 755 "$debs"
  chown _apt "$debs" 2>/dev/null || true
  (cd "$debs" && apt-get download -qq sendmail-bin sendmail-base sendmail-cf)
  mkdir -p "$SENDMAIL_ROOT"
  for deb in "$debs"/*.deb; do dpkg -x "$deb" "$SENDMAIL_ROOT"; done
  rm -rf "$debs"
fi

cargo build --release --locked --bin egress-milter >&2
BIN=$ROOT/target/release
mkdir -p "$ROOT/target/bench"
WORK=$(mktemp -d "$ROOT/target/bench/mta.XXXXXX")
chmod 755 "$WORK"
PIDS=()
SENDMAILS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${SENDMAILS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -d "$WORK/postfix" ] && /usr/sbin/postfix -c "$WORK/postfix" stop >/dev/null 2>&1 || true
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

cc -O2 -o "$WORK/null-milter" benches/mta/null-milter.c -lmilter -pthread

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  return 1
}
wait_socket() {
  for _ in $(seq 1 100); do
    [ -S "$1" ] && return 0
    sleep 0.1
  done
  echo "no socket at $1" >&2
  return 1
}

# The milters. Each set-up is NAME, then the milter's address for Postfix
# (inet:HOST:PORT or unix:PATH) and for Sendmail (inet:PORT@HOST or
# local:PATH); "none" for no milter.
# Sendmail refuses a socket in a world-writable directory; OpenDKIM, which
# drops to its own user, gets a directory of its own.
SOCK=$WORK/sockets
mkdir -p "$SOCK/opendkim"
chmod 755 "$SOCK" "$SOCK/opendkim"
chown opendkim "$SOCK/opendkim"
SETUPS=("no milter|none|none")
add_setup() { SETUPS+=("$1|$2|$3"); }

mkdir -p "$WORK/keys"
"$BIN/egress-milter" dkim-keygen --domain example.com --selector rsa \
  --out "$WORK/keys/rsa.pem" >/dev/null 2>&1
"$BIN/egress-milter" dkim-keygen --domain example.com --selector ed \
  --algorithm ed25519 --out "$WORK/keys/ed.pem" >/dev/null 2>&1

for transport in tcp unix; do
  if [ "$transport" = tcp ]; then
    port=$(free_port)
    "$WORK/null-milter" "inet:$port@127.0.0.1" 2>"$WORK/null-$transport.log" &
    PIDS+=($!)
    wait_port "$port"
    add_setup "libmilter null, tcp" "inet:127.0.0.1:$port" "inet:$port@127.0.0.1"
    port=$(free_port)
    "$WORK/null-milter" --no-data "inet:$port@127.0.0.1" 2>"$WORK/null-nodata.log" &
    PIDS+=($!)
    wait_port "$port"
    add_setup "libmilter null without DATA, tcp" "inet:127.0.0.1:$port" "inet:$port@127.0.0.1"
  else
    "$WORK/null-milter" "unix:$SOCK/null" 2>"$WORK/null-$transport.log" &
    PIDS+=($!)
    wait_socket "$SOCK/null"
    chmod 666 "$SOCK/null"
    add_setup "libmilter null, unix" "unix:$SOCK/null" "local:$SOCK/null"
  fi
done

# A Redis for the set-up whose limits are shared.
REDIS_PORT=$(free_port)
/usr/bin/redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
REDIS_PID=$!
wait_port "$REDIS_PORT"

egress() { # NAME TRANSPORT EXTRA [BACKEND]
  local listen pf sm backend=${4:-"backend: local"}
  if [ "$2" = tcp ]; then
    local port
    port=$(free_port)
    listen="inet:127.0.0.1:$port"; pf=$listen; sm="inet:$port@127.0.0.1"
  else
    listen="unix:$SOCK/egress-$1"; pf=$listen; sm="local:$SOCK/egress-$1"
  fi
  cat >"$WORK/egress-$1-$2.yaml" <<EOF
listen: $listen
socket_mode: "0666"
local_domains: [example.com]
hostname: out1.example.com
classes:
  - { name: app, clients: [127.0.0.0/8], sender_domains: [example.com] }
internal_networks: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16]
headers: { strip_internal_received: true, remove: [X-Originating-IP] }
rate_limits:
  $backend
  connections_per_client: 100000000/m
  concurrent_per_client: 100000
  messages_per_client: 100000000/h
  messages_per_sender: 100000000/h
  messages_per_recipient: 100000000/h
  recipients_per_sender: 100000000/h
$3
EOF
  "${EGRESS_BINARY:-$BIN/egress-milter}" run --config "$WORK/egress-$1-$2.yaml" 2>"$WORK/egress-$1-$2.log" &
  PIDS+=($!)
  echo "$! $1-$2" >>"$WORK/egress-pids"
  if [ "$2" = tcp ]; then wait_port "${listen##*:}"; else wait_socket "$SOCK/egress-$1"; fi
  EGRESS_PF=$pf; EGRESS_SM=$sm
}
for transport in tcp unix; do
  egress all "$transport" ""
  add_setup "egress-milter, all checks, $transport" "$EGRESS_PF" "$EGRESS_SM"
  if [ -n "${COMPARE:-}" ]; then
    EGRESS_BINARY=$COMPARE egress compare "$transport" ""
    add_setup "egress-milter COMPARE, all checks, $transport" "$EGRESS_PF" "$EGRESS_SM"
  fi
  egress redis "$transport" "" "backend: redis
  redis: { url: \"redis://127.0.0.1:$REDIS_PORT\", on_failure: tempfail }"
  add_setup "egress-milter, limits in Redis, $transport" "$EGRESS_PF" "$EGRESS_SM"
  signals="incidents:
  signals:
    - { name: spray, key: sender, count: distinct_recipient_domains, above: 100000000/h }
    - { name: volume, key: client, count: messages, above: 100000000/h }"
  egress signals "$transport" "$signals"
  add_setup "egress-milter, incident signals, $transport" "$EGRESS_PF" "$EGRESS_SM"
  egress redis-signals "$transport" "$signals" "backend: redis
  redis: { url: \"redis://127.0.0.1:$REDIS_PORT\", on_failure: tempfail }"
  add_setup "egress-milter, limits and incident signals in Redis, $transport" "$EGRESS_PF" "$EGRESS_SM"
  # The reputation watch (its per-message part: the pause check and the
  # count of senders) and the suppression check at each recipient.
  egress watch "$transport" "reputation: { every: 15m, addresses: [192.0.2.10], ip_lists: [list.invalid], domain_lists: [], on_listed: { action: tempfail } }
bounces: { suppress: { after: 1, for: 30d } }"
  add_setup "egress-milter + reputation watch and bounces, $transport" "$EGRESS_PF" "$EGRESS_SM"
  # The console served by the daemon (its per-message part: the decision
  # kept for the recent-decisions page).
  [ -f "$WORK/console.users" ] ||
    printf 'bench-password\nbench-password\n' |
    "$BIN/egress-milter" console-user add bench --role admin --file "$WORK/console.users" >/dev/null
  egress console "$transport" "console: { listen: \"127.0.0.1:$(free_port)\", users_file: $WORK/console.users }"
  add_setup "egress-milter + console, $transport" "$EGRESS_PF" "$EGRESS_SM"
  egress rsa "$transport" "dkim: { keys: [{ domain: example.com, selector: rsa, file: $WORK/keys/rsa.pem }] }"
  add_setup "egress-milter + RSA-2048 signing, $transport" "$EGRESS_PF" "$EGRESS_SM"
  egress ed "$transport" "dkim: { keys: [{ domain: example.com, selector: ed, file: $WORK/keys/ed.pem }] }"
  add_setup "egress-milter + Ed25519 signing, $transport" "$EGRESS_PF" "$EGRESS_SM"
done

# OpenDKIM, signing mail from loopback clients for example.com with the
# same RSA key.
cp "$WORK/keys/rsa.pem" "$WORK/keys/opendkim.pem"
chown opendkim "$WORK/keys/opendkim.pem"
for transport in tcp unix; do
  if [ "$transport" = tcp ]; then
    port=$(free_port); sock="inet:$port@127.0.0.1"
  else
    sock="local:$SOCK/opendkim/socket"
  fi
  cat >"$WORK/opendkim-$transport.conf" <<EOF
Syslog no
Mode s
Domain example.com
Selector rsa
KeyFile $WORK/keys/opendkim.pem
Canonicalization relaxed/simple
OversignHeaders From
InternalHosts 127.0.0.0/8
Socket $sock
UMask 000
UserID opendkim
PidFile $WORK/opendkim-$transport.pid
EOF
  /usr/sbin/opendkim -f -x "$WORK/opendkim-$transport.conf" 2>"$WORK/opendkim-$transport.log" &
  PIDS+=($!)
  if [ "$transport" = tcp ]; then
    wait_port "$port"
    add_setup "OpenDKIM, RSA-2048 signing, tcp" "inet:127.0.0.1:$port" "$sock"
  else
    wait_socket "$SOCK/opendkim/socket"
    add_setup "OpenDKIM, RSA-2048 signing, unix" "unix:$SOCK/opendkim/socket" "$sock"
  fi
done

SINK_PORT=$(free_port)
/usr/sbin/smtp-sink -u nobody "127.0.0.1:$SINK_PORT" 1024 &
PIDS+=($!)
wait_port "$SINK_PORT"

# A private Postfix: the tests' master.cf, no chroot, relaying everything to
# the sink; the milter is switched with postconf and a reload.
PF=$WORK/postfix
PF_PORT=$(free_port)
start_postfix() {
  mkdir -p "$PF/queue" "$PF/data"
  chown postfix: "$PF/data"
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
default_process_limit = 200
EOF
  {
    echo "127.0.0.1:$PF_PORT inet n - n - - smtpd"
    sed -n '/^const MASTER_CF/,/^";/p' tests/it/common/postfix.rs | sed '1d;$d'
  } >"$PF/master.cf"
  /usr/sbin/postfix -c "$PF" check
  /usr/sbin/postfix -c "$PF" start
  wait_port "$PF_PORT"
}

# One private Sendmail per set-up (its milter is fixed in sendmail.cf),
# each on its own port, started once. Sendmail's default listen backlog
# (10) would drop the SYNs of 50 sessions at once.
declare -A SM_PORT
start_sendmail() { # INDEX MILTER
  local d=$WORK/sendmail-$1 port
  port=$(free_port)
  mkdir -p "$d/queue"
  chmod 700 "$d/queue"
  local filter=""
  if [ "$2" != none ]; then
    filter="INPUT_MAIL_FILTER(\`bench', \`S=$2, F=T, T=C:30s;S:5m;R:5m;E:10m')dnl
define(\`confMILTER_MACROS_ENVFROM', \`i, {auth_type}, {auth_authen}, {auth_author}, {mail_addr}')dnl"
  fi
  cat >"$d/sendmail.mc" <<EOF
divert(-1)
divert(0)dnl
include(\`$SENDMAIL_ROOT/usr/share/sendmail/cf/m4/cf.m4')dnl
OSTYPE(\`linux')dnl
define(\`confDONT_PROBE_INTERFACES', \`True')dnl
define(\`QUEUE_DIR', \`$d/queue')dnl
define(\`ALIAS_FILE', \`')dnl
define(\`STATUS_FILE', \`$d/statistics')dnl
define(\`confPID_FILE', \`$d/sendmail.pid')dnl
define(\`confDELIVERY_MODE', \`background')dnl
define(\`confMAX_DAEMON_CHILDREN', \`200')dnl
define(\`confREFUSE_LA', \`100')dnl
define(\`confQUEUE_LA', \`100')dnl
define(\`SMART_HOST', \`[127.0.0.1]')dnl
define(\`RELAY_MAILER_ARGS', \`TCP \$h $SINK_PORT')dnl
define(\`ESMTP_MAILER_ARGS', \`TCP \$h $SINK_PORT')dnl
FEATURE(\`accept_unresolvable_domains')dnl
FEATURE(\`nocanonify')dnl
FEATURE(\`no_default_msa')dnl
DAEMON_OPTIONS(\`Port=$port, Addr=127.0.0.1, Name=MTA, Listen=1024')dnl
$filter
MAILER(\`smtp')dnl
EOF
  m4 "$d/sendmail.mc" >"$d/sendmail.cf"
  # Sendmail hangs at start unless its host name is qualified.
  unshare -u sh -c "hostname gw.example.com && exec $SENDMAIL_ROOT/usr/libexec/sendmail/sendmail -C $d/sendmail.cf -bD" \
    >"$d/sendmail.err" 2>&1 &
  SENDMAILS+=($!)
  wait_port "$port" || { cat "$d/sendmail.err" >&2; exit 1; }
  SM_PORT[$1]=$port
}

RESULTS=$WORK/results.jsonl
: >"$RESULTS"

# One run: MESSAGES messages of SIZE bytes over SESSIONS sessions.
run() { # MTA SETUP-NAME PORT SIZE SESSIONS
  local start end out
  # A short warm-up: new smtpd processes, milter connections, caches.
  /usr/sbin/smtp-source -s "$5" -m "$5" -l "$4" -f noreply@example.com \
    -t someone@example.net -S "Your order" "127.0.0.1:$3" >/dev/null 2>&1 || true
  start=$(date +%s.%N)
  out=$(/usr/sbin/smtp-source -s "$5" -m "$MESSAGES" -l "$4" -f noreply@example.com \
    -t someone@example.net -S "Your order" "127.0.0.1:$3" 2>&1) || true
  end=$(date +%s.%N)
  if [ -n "$out" ]; then
    echo "$1, $2: smtp-source reported: $out" >&2
    exit 1
  fi
  python3 -c '
import json, sys
mta, name, size, sessions, n, start, end = sys.argv[1:]
print(json.dumps({"mta": mta, "name": name, "size": int(size), "sessions": int(sessions),
                  "messages": int(n), "seconds": float(end) - float(start),
                  "msg_s": int(n) / (float(end) - float(start))}))' \
    "$1" "$2" "$4" "$5" "$MESSAGES" "$start" "$end" >>"$RESULTS"
}

for mta in $MTAS; do
  if [ "$mta" = postfix ]; then
    start_postfix
  else
    for i in "${!SETUPS[@]}"; do
      IFS='|' read -r name _ sm <<<"${SETUPS[$i]}"
      [[ "$name" =~ $ONLY ]] || continue
      start_sendmail "$i" "$sm"
    done
  fi
  for size in $SIZES; do
    for sessions in $SESSIONS; do
      for round in $(seq 1 "$ROUNDS"); do
        for i in "${!SETUPS[@]}"; do
          IFS='|' read -r name pf sm <<<"${SETUPS[$i]}"
          [[ "$name" =~ $ONLY ]] || continue
          if [ "$mta" = postfix ]; then
            [ "$pf" = none ] && pf=""
            /usr/sbin/postconf -c "$PF" -e "smtpd_milters = $pf"
            /usr/sbin/postfix -c "$PF" reload >/dev/null 2>&1
            sleep 1
            port=$PF_PORT
          else
            port=${SM_PORT[$i]}
          fi
          echo "$mta $((size / 1024)) KB, $sessions sessions, round $round: $name" >&2
          run "$mta" "$name" "$port" "$size" "$sessions"
        done
      done
    done
  done
  if [ "$mta" = postfix ]; then
    rejected=$(grep -c "milter-reject" "$PF/postfix.log" || true)
    [ "$rejected" = 0 ] || { echo "postfix: $rejected milter rejections" >&2; exit 1; }
  fi
done

# Over TCP, a message that waited for a delayed ACK shows as elapsed_ms of
# 40 or more in egress-milter's summary line.
for log in "$WORK"/egress-*-tcp.log; do
  python3 - "$log" <<'EOF'
import re, sys
ms = [float(m) for m in re.findall(r'elapsed_ms=([0-9.]+)', open(sys.argv[1]).read())]
if ms:
    ms.sort()
    slow = sum(1 for m in ms if m >= 40)
    print(f"{sys.argv[1].rsplit('/', 1)[-1]}: {len(ms)} messages, elapsed_ms median {ms[len(ms)//2]:.1f}, "
          f"p99 {ms[int(len(ms)*0.99)]:.1f}, {slow} at 40 ms or more", file=sys.stderr)
EOF
done

# CPU per message: each egress-milter process's user and system time over
# the messages its log summarised (warm-ups included), and Redis's, with the
# commands it ran per message of the set-ups that use it.
cpu_s() { awk '{ print ($14 + $15) / 100 }' "/proc/$1/stat"; }
{
  echo
  echo "| process | messages | CPU µs per message |"
  echo "|---|---|---|"
  redis_msgs=0
  while read -r pid name; do
    n=$(grep -c 'elapsed_ms=' "$WORK/egress-$name.log" || true)
    [ "$n" -gt 0 ] || continue
    [[ "$name" == redis-* ]] && redis_msgs=$((redis_msgs + n))
    echo "| egress-milter $name | $n | $(python3 -c "print(round($(cpu_s "$pid") * 1e6 / $n))") |"
  done <"$WORK/egress-pids"
  if [ "$redis_msgs" -gt 0 ]; then
    echo "| redis-server | $redis_msgs | $(python3 -c "print(round($(cpu_s "$REDIS_PID") * 1e6 / $redis_msgs))") |"
    echo
    echo "Redis commands per message (INFO commandstats):"
    /usr/bin/redis-cli -p "$REDIS_PORT" info commandstats | tr -d '\r' |
      python3 -c '
import re, sys
n = int(sys.argv[1])
for line in sys.stdin:
    m = re.match(r"cmdstat_(\w+):calls=(\d+),usec=(\d+)", line)
    if m and m.group(1) not in ("info", "ping", "client", "hello", "script"):
        print(f"  {m.group(1)}: {int(m.group(2)) / n:.2f} calls, {int(m.group(3)) / n:.1f} µs")' "$redis_msgs"
  fi
} >"$WORK/cpu.txt"

python3 - "$RESULTS" "$MESSAGES" "$ROUNDS" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
runs = {}
for r in rows:
    runs.setdefault((r["mta"], r["size"], r["sessions"], r["name"]), []).append(r["msg_s"])
def med(key):
    v = runs.get(key)
    return statistics.median(v) if v else None
print(f"\nsmtp-source into the MTA, {sys.argv[2]} messages per run, median of {sys.argv[3]} alternating rounds "
      "(slowest-fastest); ratios of medians\n")
groups = sorted({(m, s, c) for (m, s, c, _) in runs}, key=lambda g: (g[0] != "postfix", g[1], g[2]))
for (mta, size, sessions) in groups:
    print(f"\n{mta.capitalize()}, {size // 1024} KB, {sessions} sessions\n")
    print("| set-up | msg/s | vs libmilter null (same socket) | vs no milter |")
    print("|---|---|---|---|")
    none = med((mta, size, sessions, "no milter"))
    for (m, s, c, name), v in runs.items():
        if (m, s, c) != (mta, size, sessions):
            continue
        mid = statistics.median(v)
        transport = name.rsplit(", ", 1)[-1] if ", " in name else ""
        ref = med((mta, size, sessions, f"libmilter null, {transport}")) if transport in ("tcp", "unix") else None
        vs_null = f"{mid / ref:.2f}" if ref else "-"
        vs_none = f"{mid / none:.2f}" if none else "-"
        print(f"| {name} | {mid:,.0f} ({min(v):,.0f}-{max(v):,.0f}) | {vs_null} | {vs_none} |")
    def ratio(a, b):
        x, y = med((mta, size, sessions, a)), med((mta, size, sessions, b))
        return f"{x / y:.2f}" if x and y else "-"
    print(f"\nall checks, tcp / unix: {ratio('egress-milter, all checks, tcp', 'egress-milter, all checks, unix')}; "
          f"RSA signing vs OpenDKIM: tcp {ratio('egress-milter + RSA-2048 signing, tcp', 'OpenDKIM, RSA-2048 signing, tcp')}, "
          f"unix {ratio('egress-milter + RSA-2048 signing, unix', 'OpenDKIM, RSA-2048 signing, unix')}")
EOF
cat "$WORK/cpu.txt"
