#!/usr/bin/env bash
# Install the Debian packages the SLURM integration test (tests/test_slurm.py) needs:
# a single-node SLURM (controller + compute daemon + client tools) and munge for auth.
# The test starts its own daemons (own munged on a private socket, own state/pid paths). A
# munged a postinst may start is left alone; Debian's slurmctld/slurmd units do not start
# without /etc/slurm/slurm.conf, and if some slurmctld/slurmd does run, the test refuses to.
set -euo pipefail
bash "$(dirname "$0")/apt-packages.sh" slurm-setup slurmctld slurmd slurm-client munge
echo "slurm-setup: $(slurmctld -V 2>/dev/null || echo "slurmctld ?")"
