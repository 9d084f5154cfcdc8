#!/usr/bin/env bash
# Install the Debian packages the SLURM integration test (tests/test_slurm.py) needs:
# a single-node SLURM (controller + compute daemon + client tools) and munge for auth.
# Idempotent and quiet: does nothing when everything is already installed.
# Needs root (CI runs as root on a fresh Debian machine).
set -euo pipefail

pkgs=(slurmctld slurmd slurm-client munge)

missing=()
for p in "${pkgs[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "slurm-setup: ${pkgs[*]} already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

echo "slurm-setup: installing ${missing[*]}"
$SUDO apt-get update -qq
# The test starts its own daemons (own munged on a private socket, own state/pid paths).  A
# munged a postinst may start is left alone; Debian's slurmctld/slurmd units do not start
# without /etc/slurm/slurm.conf, and if some slurmctld/slurmd does run, the test refuses to.
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
echo "slurm-setup: done ($(slurmctld -V 2>/dev/null || echo 'slurmctld ?'))"
