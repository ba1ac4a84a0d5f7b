#!/usr/bin/env bash
# Stop the single-node Slurm cluster of slurm-up.sh by the PIDs it recorded, newest daemon first (idempotent).
#   scripts/slurm-down.sh          stop; the job ids and accounting database are kept for the next slurm-up.sh
#   scripts/slurm-down.sh --wipe   stop and delete the state directory (job ids restart at 1 with a fresh database)
set -euo pipefail
source "$(dirname "$0")/env-prefix.sh"
STATE=$(setting SLURM_DIR /tmp/ffb-slurm)

running() {  # a process that exists and is not a zombie: this machine's PID 1 reaps slowly, so kill -0 lies
    [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != "Z" ]
}

stop() {  # stop NAME: SIGTERM its session, wait up to 15 s, then SIGKILL
    local file="$STATE/run/$1.pid" pid
    [ -s "$file" ] || return 0
    pid=$(cat "$file")
    if running "$pid"; then
        # the daemon leads its own session (setsid in slurm-up.sh): signal it and anything it started
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 150); do running "$pid" || break; sleep 0.1; done
        if running "$pid"; then
            echo "slurm-down: $1 (pid $pid) ignored SIGTERM for 15 s; killing it" >&2
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$file"
}

if [ -d "$STATE/run" ]; then
    for name in slurmd slurmctld slurmdbd mariadbd munged; do stop "$name"; done
fi
if [ "${1:-}" = "--wipe" ]; then
    rm -rf "$STATE"
fi
echo "slurm-down: stopped${1:+ and wiped} ($STATE)"
