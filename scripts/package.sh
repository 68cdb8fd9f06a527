#!/usr/bin/env bash
# Builds the Debian package (cargo-deb), with the configuration it installs:
# the shipped milter.yaml, changed where a fresh install must differ from a
# run from a checkout. Arguments go to `cargo deb` (e.g. --no-build
# --profile dev, --output DIR).
#
# - listen: a unix socket under Postfix's queue directory, which Debian's
#   chrooted smtpd and cleanup see as /egress-milter/milter.sock, reachable
#   by the egress-milter group (postfix joins it) alone; never TCP, which
#   every local user could reach;
# - mode: monitor, so that installing never refuses real mail before the
#   administrator has written a policy;
# - admin.socket_group: egress-admin, the administrators' group, apart from
#   the MTA's;
# - the schema editors check it against, where the package installs it.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/package
mkdir -p "$out"
edit() { # FILE FROM TO: replace one whole line, which must be there.
  grep -qxF -- "$2" "$1" || { echo "package.sh: no line \"$2\" in milter.yaml" >&2; exit 1; }
  local tmp; tmp=$(mktemp)
  awk -v from="$2" -v to="$3" '$0 == from { print to; next } { print }' "$1" > "$tmp"
  mv "$tmp" "$1"
}
cp milter.yaml "$out/milter.yaml"
edit "$out/milter.yaml" "listen: inet:127.0.0.1:7357" "listen: unix:/var/spool/postfix/egress-milter/milter.sock"
edit "$out/milter.yaml" "mode: enforce" "mode: monitor"
edit "$out/milter.yaml" "  # socket_group: egress-admin" "  socket_group: egress-admin"
edit "$out/milter.yaml" "# yaml-language-server: \$schema=milter.schema.json" "# yaml-language-server: \$schema=/usr/share/egress-milter/milter.schema.json"
# The manual, installed under /usr/share/doc/egress-milter/html/.
command -v mdbook >/dev/null 2>&1 || { echo "package.sh: mdbook builds the manual: cargo install mdbook --version 0.5.4 --locked" >&2; exit 1; }
mdbook build docs
exec cargo deb "$@"
