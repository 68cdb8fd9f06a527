#!/usr/bin/env bash
# The fuzz targets (cargo-fuzz, libFuzzer; see fuzz/README.md): replays the
# saved regressions, then fuzzes each target for SECONDS (default 15, the
# short run of the test suite) from the kept corpus. New inputs go to a
# scratch directory, so the corpus in the repository stays as committed;
# any crash, hang, or assertion failure exits non-zero with the input
# saved in fuzz/artifacts/.
#
#   bash scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECS=${1:-15}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --version 0.13.2 --locked
# Stable Rust: no sanitizer. -O: optimised; panics and the targets'
# assertions are caught (debug assertions and overflow checks are off).
FUZZ=(cargo fuzz run --sanitizer none -O)
cargo fuzz build --sanitizer none -O
declare -A OPTS=(
  [mailbox]="-dict=mailbox.dict -max_len=4096"
  [mime]="-dict=mime.dict -max_len=16384"
  [config]="-dict=config.dict -max_len=8192"
  [config_schema]="-max_len=4096"
  [session]="-max_len=4096"
)
# Seconds added for reading the kept corpus before mutation starts: the
# config seeds (1,800 inputs) take a few seconds to replay.
declare -A READ=([config]=5)
for target in mailbox mime config config_schema session; do
  if [ -d "regressions/$target" ]; then
    "${FUZZ[@]}" "$target" "regressions/$target" -- -runs=0
  fi
  scratch=$(mktemp -d)
  log=$scratch.log
  status=0
  # shellcheck disable=SC2086
  "${FUZZ[@]}" "$target" "$scratch" "corpus/$target" -- \
    ${OPTS[$target]} -max_total_time="$((SECS + ${READ[$target]:-0}))" -timeout=10 -rss_limit_mb=2048 \
    >"$log" 2>&1 || status=$?
  echo "fuzz $target: $(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1)"
  if [ "$status" != 0 ]; then
    tail -40 "$log" >&2
  fi
  rm -f "$log"
  rm -rf "$scratch"
  if [ "$status" != 0 ]; then
    echo "fuzz target $target failed (input in fuzz/artifacts/$target/)" >&2
    exit 1
  fi
done
