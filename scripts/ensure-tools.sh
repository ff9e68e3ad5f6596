#!/usr/bin/env bash
# Install the Debian packages whose commands are missing.
#   usage: scripts/ensure-tools.sh COMMAND=PACKAGE...   e.g. initdb=postgresql chromium=chromium
# A command counts as present when it is on PATH or, for PostgreSQL's server tools, under
# Debian's /usr/lib/postgresql/<version>/bin (which is not on PATH).
set -euo pipefail

have() {
    command -v "$1" >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/$1" >/dev/null
}

missing=()
for pair in "$@"; do
    have "${pair%%=*}" || missing+=("${pair#*=}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "need root (or sudo) to apt-get install ${missing[*]}" >&2; exit 1; }
    sudo=(sudo)
fi
echo "ensure-tools: installing ${missing[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
