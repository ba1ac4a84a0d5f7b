#!/usr/bin/env bash
# Bring up a single-node Slurm cluster on this machine, for the cluster test suite (tox -e cluster) and for trying
# `fastformer-bench run --executor slurm` without a cluster. Debian's packages, no systemd: every daemon is
# started directly (in the foreground, under setsid, so its PID is the one we record), as root.
#
#   scripts/slurm-up.sh            start (idempotent: a daemon already up is left running)
#   export SLURM_CONF=/tmp/ffb-slurm/slurm.conf      what sbatch, sacct and fastformer-bench then need
#   scripts/slurm-down.sh [--wipe] stop every daemon by its PID (--wipe: also forget its jobs and database)
#
# Accounting (slurmdbd + MariaDB) is on because submitit reads job states through sacct: without it, a job that
# dies before writing its result leaves submitit waiting forever. The state (job ids, database) is kept between
# up and down: job ids restart at 1 only after --wipe, and then the database is wiped with them.
# Needs: apt-get install slurmctld slurmd slurm-client slurmdbd munge mariadb-server
set -euo pipefail
source "$(dirname "$0")/env-prefix.sh"
STATE=$(setting SLURM_DIR /tmp/ffb-slurm)
DB_PORT=$(setting SLURM_DB_PORT 33061)
# CPUs the node offers Slurm: this machine's by default; more (FASTFORMER_BENCH_SLURM_CPUS) lets tests run more jobs at once
# on few cores, at the price of sharing them (set it only where no timing matters)
CPUS=$(setting SLURM_CPUS "$(nproc)")
host=$(hostname -s)
mkdir -p "$STATE"/{ctld,spool,db,log,run}
t0=$(date +%s%N)
step() { local ms=$((($(date +%s%N) - t0) / 1000000)); printf 'slurm-up: %-9s up at %d.%01d s\n' "$1" $((ms / 1000)) $((ms % 1000 / 100)); }

for tool in munged mariadbd slurmdbd slurmctld slurmd sacctmgr sbatch; do
    command -v "$tool" >/dev/null || { echo "slurm-up: $tool is missing: apt-get install slurmctld slurmd slurm-client slurmdbd munge mariadb-server" >&2; exit 2; }
done

alive() {  # a PID file naming a live process (a zombie is not alive: this machine's PID 1 reaps slowly)
    local pid
    [ -s "$1" ] || return 1
    pid=$(cat "$1")
    [ -r "/proc/$pid/stat" ] || return 1
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != "Z" ]
}

start() {  # start NAME CMD...: run CMD in the foreground of its own session; record its PID
    local name=$1; shift
    if alive "$STATE/run/$name.pid"; then return 0; fi
    setsid "$@" >"$STATE/log/$name.out" 2>&1 < /dev/null &
    echo $! > "$STATE/run/$name.pid"
}

wait_for() {  # wait_for WHAT SECONDS CMD...: until CMD succeeds
    local what=$1 limit=$2; shift 2
    for _ in $(seq $((limit * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "slurm-up: $what did not come up within $limit s; see $STATE/log/" >&2
    exit 1
}

# --- munge: Slurm's authentication (its key comes with the Debian package)
mkdir -p /run/munge && chown munge:munge /run/munge 2>/dev/null || true
# a munged of the system (started by the package's service) serves Slurm as well as ours would: keep it
munge -n 2>/dev/null | unmunge >/dev/null 2>&1 || start munged setpriv --reuid=munge --regid=munge --clear-groups munged --foreground --pid-file=/run/munge/munged.pid
wait_for munge 10 sh -c 'munge -n | unmunge'
step munge

# --- MariaDB on a private port and data directory, then slurmdbd on it
if [ ! -d "$STATE/db/mysql" ]; then
    mariadb-install-db --user=root --datadir="$STATE/db" --auth-root-authentication-method=socket >"$STATE/log/install-db.out" 2>&1
fi
start mariadbd mariadbd --user=root --datadir="$STATE/db" --socket="$STATE/run/mysql.sock" --port="$DB_PORT" \
    --bind-address=127.0.0.1 --pid-file="$STATE/run/mariadbd.own.pid" --log-error="$STATE/log/mariadb.log" \
    --innodb-buffer-pool-size=32M --skip-log-bin
wait_for mariadb 30 mariadb --socket="$STATE/run/mysql.sock" -e 'select 1'
mariadb --socket="$STATE/run/mysql.sock" -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'ffb';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"
step mariadb

cat > "$STATE/slurmdbd.conf" <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$STATE/run/slurmdbd.own.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=ffb
StorageLoc=slurm_acct_db
CONF
chmod 600 "$STATE/slurmdbd.conf"
# slurmdbd reads slurmdbd.conf beside $SLURM_CONF
start slurmdbd env SLURM_CONF="$STATE/slurm.conf" slurmdbd -D

mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
cat > "$STATE/slurm.conf" <<CONF
ClusterName=ffb
# the loopback address: this machine's name need not resolve (CI machines often lack it in DNS)
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.own.pid
SlurmdPidFile=$STATE/run/slurmd.own.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
# no cgroups in a container: processes are tracked through /proc, tasks are not confined
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# Slurm waits about 3 s per scheduling wave by default; tests submit many small arrays
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
# scancel: SIGTERM, then SIGKILL after KillWait s (submitit ignores SIGTERM, so this is how long a cancel takes)
KillWait=2
InactiveLimit=0
MinJobAge=300
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none
# config_overrides: the node takes the CPU count given here even where it has fewer cores (FASTFORMER_BENCH_SLURM_CPUS)
SlurmdParameters=config_overrides
NodeName=$host NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$STATE/slurm.conf"
wait_for slurmdbd 20 sacctmgr -n show cluster
sacctmgr -i -Q add cluster ffb >/dev/null 2>&1 || true
step slurmdbd

start slurmctld slurmctld -D -f "$STATE/slurm.conf"
wait_for slurmctld 20 scontrol ping
start slurmd slurmd -D -f "$STATE/slurm.conf"
wait_for slurmd 20 sh -c "sinfo -h -N -o %T | grep -Eq '^(idle|mixed|allocated)'"
step slurm
echo "slurm-up: single-node cluster ffb up on $host (partition debug); export SLURM_CONF=$SLURM_CONF"
