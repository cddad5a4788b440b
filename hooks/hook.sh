#!/bin/sh
# slurmctld PrologSlurmctld/EpilogSlurmctld wrapper for ccsa (drop-in for cc-slurm-adapter).
#
# Installed as /opt/cc-slurm-adapter/hook.sh, next to the adapter (docs/admin-guide.md), by
#   cc-slurm-adapter files --install
# and slurm.conf points at that path (prep/script is Slurm's default PrEp plugin):
#   PrologSlurmctld=/opt/cc-slurm-adapter/hook.sh
#   EpilogSlurmctld=/opt/cc-slurm-adapter/hook.sh
#
# It tells the running daemon about the job, so the job reaches cc-backend within seconds instead
# of at the next poll. It ALWAYS exits 0: a non-zero Prolog/Epilog exit status would make Slurm
# fail or requeue the job, and a stopped daemon must never stop a cluster. A job the hook could not
# report is still picked up by the daemon's next poll.
#
# The hook needs the daemon's socket, never the cc-backend JWT: it does not read config.json
# (readable by the service user only). When prepSockConnectPath is not the default socket, put
# the address alone into /opt/cc-slurm-adapter/hook.json (mode 0644, nothing secret in it):
#   {"prepSockConnectPath": "/run/cc-slurm-adapter/daemon.sock"}
# and the hook passes that file with -config. CCSA_CONFIG names another such file, CCSA_ADAPTER
# the adapter's absolute path (tests). Failures go to syslog (logger) and to stderr (slurmctld's
# log).

ADAPTER="${CCSA_ADAPTER:-/opt/cc-slurm-adapter/cc-slurm-adapter}"
CONFIG="${CCSA_CONFIG:-}"
if [ -z "$CONFIG" ] && [ -e /opt/cc-slurm-adapter/hook.json ]; then
    CONFIG=/opt/cc-slurm-adapter/hook.json
fi

if [ -n "$CONFIG" ]; then
    set -- -config "$CONFIG"
else
    set --
fi

# The adapter bounds its own connect+send by 2 s; timeout(1), where present, also bounds a stuck
# interpreter start (e.g. on a hung file system).
if command -v timeout >/dev/null 2>&1; then
    output=$(timeout 10 "$ADAPTER" "$@" 2>&1)
else
    output=$("$ADAPTER" "$@" 2>&1)
fi
status=$?

if [ "$status" -ne 0 ] || [ -n "$output" ]; then
    [ -n "$output" ] || output="$ADAPTER exited with status $status"
    logger -t cc-slurm-adapter-hook -p daemon.warning -- "$output" >/dev/null 2>&1 || true
    printf '%s\n' "$output" >&2
fi

exit 0
