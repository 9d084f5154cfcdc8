#!/usr/bin/env bash
# Install the Debian packages the explorer page's browser test (tests/test_explore_browser.py)
# drives through Selenium: Chromium and its chromedriver. Idempotent and quiet: does nothing when
# both are installed. Needs root (CI runs as root on a fresh Debian machine); under CI the test
# fails, not skips, when they are missing.
set -euo pipefail

pkgs=(chromium chromium-driver)

missing=()
for p in "${pkgs[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "browser-setup: ${pkgs[*]} already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

echo "browser-setup: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
chromium --version
chromedriver --version
