#!/bin/bash
# A compute node of the multi-node test cluster: munged with the cluster's key, then slurmd
# in the foreground as the node named by $FACTORYHUB_NODE (slurm.conf's NodeName).
# /etc/passwd and /etc/group are the cluster's (mounted), so the munge user's uid is the
# cluster's too: its folders here are made its own first.
set -euo pipefail
: "${FACTORYHUB_NODE:?set FACTORYHUB_NODE to the NodeName of this node}"
mkdir -p /run/munge /var/lib/munge /var/log/munge /var/spool/slurmd /var/log/slurm
chown munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
chmod 0755 /run/munge
runuser -u munge -- /usr/sbin/munged --force
exec /usr/sbin/slurmd -D -N "$FACTORYHUB_NODE" "$@"
