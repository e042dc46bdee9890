#!/usr/bin/env bash
# Stop the daemons that tests/slurm/start.sh started in DIR and remove DIR (its slurm.conf with it).
# Usage: tests/slurm/stop.sh DIR [--keep]   (--keep leaves DIR's files, e.g. the logs, in place)
set -uo pipefail
DIR="${1:?usage: stop.sh DIR [--keep]}"
[ -d "$DIR" ] || exit 0
export SLURM_CONF="$DIR/slurm.conf"

# Cancel leftover jobs first, so slurmd's job steps do not outlive the test.
[ -f "$SLURM_CONF" ] && scancel --full --user="$(id -un)" >/dev/null 2>&1

stop_pid() {  # the daemon's own pid from its pid file: never a broad kill by name
    local pidfile="$1" pid
    [ -f "$pidfile" ] || return 0
    pid="$(cat "$pidfile" 2>/dev/null)"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
    kill -KILL "$pid" 2>/dev/null
}
stop_pid "$DIR/slurmd.pid"
stop_pid "$DIR/slurmctld.pid"
stop_pid "$DIR/munge/munged.pid"

[ "${2:-}" = "--keep" ] || rm -rf "$DIR"
