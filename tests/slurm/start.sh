#!/usr/bin/env bash
# Bring up a throw-away single-node SLURM cluster on localhost inside DIR (default: a new temp dir):
# munged, slurmctld and slurmd with every file (config, key, sockets, spool, state, logs) under DIR.
# Nothing goes to /etc: clients find the cluster through SLURM_CONF, so snakemake calls of other
# users on this machine never see a config whose controller is down (that costs each call ~9 s).
#
# Usage: tests/slurm/start.sh [DIR]   -> prints DIR on success, then
#          export SLURM_CONF=DIR/slurm.conf PATH=DIR/bin:$PATH
#        tests/slurm/stop.sh DIR      -> stops the daemons and removes DIR
# DIR/bin/srun re-exports SLURM_CONF: inside a job, Snakemake's slurm-jobstep executor strips every
# SLURM_* variable before its nested `srun` (a real node finds /etc/slurm/slurm.conf instead).
# Exit status 0: the node is up and accepts jobs; 2: SLURM/munge not installed; 1: start failed.
set -euo pipefail

for bin in munged slurmctld slurmd sinfo sbatch squeue scontrol; do
    command -v "$bin" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin"
    command -v "$bin" >/dev/null 2>&1 || { echo "slurm harness: $bin not installed" >&2; exit 2; }
done

DIR="${1:-$(mktemp -d /tmp/lsqueeze-slurm.XXXXXX)}"
mkdir -p "$DIR"/{munge,spool,state,log}
DIR="$(cd "$DIR" && pwd)"
chmod 700 "$DIR/munge"   # munged refuses a key or socket dir that others can write

fail() {
    echo "slurm harness: $*" >&2
    for f in "$DIR"/log/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }; done
    "$(dirname "$0")/stop.sh" "$DIR" --keep >/dev/null 2>&1 || true
    exit 1
}

# --- munge: a fresh key and a private socket ---
dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$DIR/munge/munge.key"
munged --force --socket="$DIR/munge/munge.socket" --key-file="$DIR/munge/munge.key" \
    --pid-file="$DIR/munge/munged.pid" --seed-file="$DIR/munge/munged.seed" \
    --log-file="$DIR/log/munged.log" || fail "munged did not start"

# --- slurm.conf: one node with this machine's CPUs and (most of) its memory, so jobs never
# oversubscribe the cores; free ports so a second harness or a real cluster does not collide ---
read -r CTL_PORT SLURMD_PORT < <(python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
EOF
)
HOST="$(hostname -s)"
CPUS="$(nproc)"
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10 ))
USER_NAME="$(id -un)"

cat > "$DIR/slurm.conf" <<EOF
# Written by tests/slurm/start.sh: a single-node test cluster; removed by tests/slurm/stop.sh.
ClusterName=lsqueeze-test
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTL_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=$USER_NAME
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/slurmd-%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerType=sched/backfill
# No slurmdbd: accounting off. The Snakemake plugin must poll with squeue, which sees a finished
# job for MinJobAge seconds (the tests also read the records of finished jobs from squeue).
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=3600
MpiDefault=none
ReturnToService=2
# Preempted/requeued jobs: allow requeue, and let a cancelled job's steps get SIGTERM first.
JobRequeue=1
KillWait=10
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF

mkdir -p "$DIR/bin"
cat > "$DIR/bin/srun" <<EOF
#!/bin/sh
export SLURM_CONF="$DIR/slurm.conf"
exec "$(command -v srun)" "\$@"
EOF
chmod +x "$DIR/bin/srun"

export SLURM_CONF="$DIR/slurm.conf"
# -i: ignore old state (there is none, but a reused DIR must not revive old jobs)
slurmctld -i -f "$SLURM_CONF" || fail "slurmctld did not start"
slurmd -f "$SLURM_CONF" -N "$HOST" || fail "slurmd did not start"

# The node is usable once sinfo reports it idle (it starts as unknown/down).
for _ in $(seq 1 60); do
    state="$(sinfo -h -N -o '%t' 2>/dev/null | head -n1 || true)"
    case "$state" in
        idle|mix|alloc) echo "$DIR"; exit 0 ;;
        down*|drain*) scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
done
fail "node did not become idle (state: ${state:-none})"
