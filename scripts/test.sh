#!/usr/bin/env bash
# The whole test suite: installs what the tests need when it is missing
# (Postfix, swaks, redis-server, python3-dkim, rspamd, from Debian's packages;
# cargo-deb from crates.io), then checks formatting, runs
# clippy with warnings as errors, and runs every test (one build for all).
# Postfix, swaks and redis-server are run by the tests themselves, on
# loopback ports; no system service is started.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[ -x /usr/sbin/postfix ] || need+=(postfix)
command -v swaks >/dev/null 2>&1 || need+=(swaks)
[ -x /usr/bin/redis-server ] || need+=(redis-server)
# python3-dkim (with python3-nacl for Ed25519) verifies our DKIM signatures
# independently of the library that makes them.
/usr/bin/python3 -c 'import dkim, nacl' 2>/dev/null || need+=(python3-dkim python3-nacl)
[ -x /usr/bin/rspamd ] || need+=(rspamd)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "the tests need: ${need[*]}; run this script as root to install them" >&2
    exit 1
  fi
  echo "installing ${need[*]}"
  # "No configuration": install Postfix without configuring or starting a
  # system instance; the tests run their own on loopback ports.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# cargo-deb builds the Debian package the packaging test installs.
command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --version 3.8.0 --locked

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
# The benches are built (they must compile) but not run: they are
# measurements, run with `cargo bench`.
cargo build --benches --locked
cargo test --lib --bins --tests --locked
