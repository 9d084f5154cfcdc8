#!/usr/bin/env bash
# Usage: apt-packages.sh LABEL PACKAGE...  Installs the Debian packages that are missing, quietly;
# does nothing (one line) when all are installed. Needs root or sudo (CI runs as root on a fresh
# Debian machine). Shared by the setup scripts of the tests that need system packages.
set -euo pipefail

label=$1
shift
missing=()
for p in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "$label: $* already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

echo "$label: installing ${missing[*]}"
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
