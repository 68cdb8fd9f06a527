#!/usr/bin/env bash
# The whole test suite: installs what the tests need when it is missing
# (Postfix, swaks, redis-server, redis-sentinel, python3-dkim, rspamd, nmap, systemd-analyze,
# slapd, clamd, python3-jsonschema, bind9,
# from Debian's packages; cargo-deb and mdbook from crates.io), then checks formatting, runs
# clippy with warnings as errors, runs every test (one build for all) and
# builds the manual.
# Postfix, swaks and redis-server are run by the tests themselves, on
# loopback ports; no system service is started.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[ -x /usr/sbin/postfix ] || need+=(postfix)
command -v swaks >/dev/null 2>&1 || need+=(swaks)
[ -x /usr/bin/redis-server ] || need+=(redis-server)
# Sentinel (one master, one replica, three sentinels on loopback ports,
# started by the failover test).
[ -x /usr/bin/redis-sentinel ] || need+=(redis-sentinel)
# python3-dkim (with python3-nacl for Ed25519) verifies our DKIM signatures
# independently of the library that makes them.
/usr/bin/python3 -c 'import dkim, nacl' 2>/dev/null || need+=(python3-dkim python3-nacl)
[ -x /usr/bin/rspamd ] || need+=(rspamd)
# A standard JSON Schema validator checks milter.schema.json against the
# shipped configuration, read as YAML 1.2 (ruamel.yaml), as editors do.
/usr/bin/python3 -c 'import jsonschema, ruamel.yaml' 2>/dev/null || need+=(python3-jsonschema python3-ruamel.yaml)
# The package test renders the man pages (man-db), looks at the daemon's
# user (ps), and the package depends on adduser; libFuzzer is C++.
command -v man >/dev/null 2>&1 || need+=(man-db)
command -v ps >/dev/null 2>&1 || need+=(procps)
command -v adduser >/dev/null 2>&1 || need+=(adduser)
# systemd-analyze verifies the package's unit (nothing is started by it).
[ -x /usr/bin/systemd-analyze ] || need+=(systemd)
command -v c++ >/dev/null 2>&1 || need+=(g++)
# nmap's smtp-open-relay script probes an open Postfix guarded by the milter.
command -v nmap >/dev/null 2>&1 || need+=(nmap)
# Sendmail is unpacked from its packages into target/sendmail-root, never
# installed (it would take over port 25 and /usr/sbin/sendmail); it needs
# m4 for its .cf and libwrap0 to run.
command -v m4 >/dev/null 2>&1 || need+=(m4)
# clamd, started by the tests with a database of their own (no freshclam).
[ -x /usr/sbin/clamd ] || need+=(clamav-daemon)
# SASL logins for the private Postfix (a login that sprays): Cyrus SASL's
# sasldb, made with saslpasswd2.
command -v saslpasswd2 >/dev/null 2>&1 || need+=(sasl2-bin libsasl2-modules)
# OpenLDAP's slapd (started by the tests on loopback ports with a
# directory of their own; no system instance) and openssl for its
# test certificates.
[ -x /usr/sbin/slapd ] || need+=(slapd ldap-utils)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# BIND 9 (started by the DKIM rotation tests on a loopback port with a zone
# of its own and a TSIG key; no system instance), dig and nsupdate.
[ -x /usr/sbin/named ] || need+=(bind9)
command -v nsupdate >/dev/null 2>&1 || need+=(bind9-dnsutils)
# Headless Chromium and its WebDriver: the console is tested in a real
# browser.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# curl reaches the console over HTTPS and its unix socket.
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
[ -e /usr/lib/x86_64-linux-gnu/libwrap.so.0 ] || [ -e /lib/x86_64-linux-gnu/libwrap.so.0 ] || need+=(libwrap0)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "the tests need: ${need[*]}; run this script as root to install them" >&2
    exit 1
  fi
  echo "installing ${need[*]}"
  # "No configuration": install Postfix without configuring or starting a
  # system instance; the tests run their own on loopback ports.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  # Nor a system slapd: the tests run their own.
  echo "slapd slapd/no_configuration boolean true" | debconf-set-selections
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The test Postfix instances log through postlogd (maillog_file). Its
# socket is a unix datagram socket; with the kernel's default queue of 10,
# a burst of log lines before postlogd starts blocks the master process
# on its own log write, and the instance hangs. A longer queue avoids it.
if [ "$(sysctl -n net.unix.max_dgram_qlen 2>/dev/null || echo 0)" -lt 1024 ]; then
  sysctl -qw net.unix.max_dgram_qlen=1024 2>/dev/null ||
    echo "warning: cannot raise net.unix.max_dgram_qlen (not root?): the Postfix tests may hang on a burst of log lines" >&2
fi

# promtool (from Debian's prometheus package), which checks the shipped
# alert rules: unpacked, not installed, so that no Prometheus server is
# set up on this machine.
PROMETHEUS_ROOT=target/prometheus-root
if [ ! -x "$PROMETHEUS_ROOT/usr/bin/promtool" ] && ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "the tests need promtool unpacked in $PROMETHEUS_ROOT; run this script as root" >&2
    exit 1
  fi
  echo "unpacking promtool into $PROMETHEUS_ROOT"
  debs=$(mktemp -d)
  chmod 755 "$debs"
  chown _apt "$debs" 2>/dev/null || true
  [ -n "$(ls /var/lib/apt/lists/ 2>/dev/null | grep -v -e lock -e partial)" ] || apt-get update -qq
  (cd "$debs" && apt-get download -qq prometheus)
  mkdir -p "$PROMETHEUS_ROOT"
  for deb in "$debs"/*.deb; do dpkg -x "$deb" "$PROMETHEUS_ROOT"; done
  rm -rf "$debs"
fi

SENDMAIL_ROOT=target/sendmail-root
if [ ! -x "$SENDMAIL_ROOT/usr/libexec/sendmail/sendmail" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "the tests need Sendmail unpacked in $SENDMAIL_ROOT; run this script as root" >&2
    exit 1
  fi
  echo "unpacking Sendmail into $SENDMAIL_ROOT"
  debs=$(mktemp -d)
  chmod 755 "$debs"
  chown _apt "$debs" 2>/dev/null || true
  [ -n "$(ls /var/lib/apt/lists/ 2>/dev/null | grep -v -e lock -e partial)" ] || apt-get update -qq
  (cd "$debs" && apt-get download -qq sendmail-bin sendmail-base sendmail-cf)
  mkdir -p "$SENDMAIL_ROOT"
  for deb in "$debs"/*.deb; do dpkg -x "$deb" "$SENDMAIL_ROOT"; done
  rm -rf "$debs"
fi

# cargo-deb builds the Debian package the packaging test installs.
command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --version 3.8.0 --locked
# mdbook builds the manual (docs/); the tests check its links and snippets.
command -v mdbook >/dev/null 2>&1 || cargo install mdbook --version 0.5.4 --locked

# No incremental cache in CI: a clean build gains nothing from it, and it
# is as large again as the build itself.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi

cargo fmt --check
# No import circle between source files, nor between top-level modules.
python3 scripts/modgraph.py src
# No source file over 600 lines; a longer one is two things.
long=$(find src -name '*.rs' -exec awk 'END { if (NR > 600) print FILENAME ": " NR " lines" }' {} \;)
if [ -n "$long" ]; then
    echo "split these files (600 lines at most):" >&2
    echo "$long" >&2
    exit 1
fi
# clippy compiles every target, the benches with them; they are
# measurements, run with `cargo bench`, not here.
cargo clippy --all-targets --locked -- -D warnings
cargo test --lib --bins --tests --locked
# The manual builds (into target/book).
mdbook build docs
# A short fuzz run of every target (see fuzz/README.md).
bash scripts/fuzz.sh 15
