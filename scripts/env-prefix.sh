# Sourced by the scripts here: reads a FASTFORMER_BENCH_* setting, accepting its old FFB_* name for one release.
#   value=$(setting SLURM_DIR /tmp/ffb-slurm)
setting() {
    local new="FASTFORMER_BENCH_$1" old="FFB_$1"
    if [ -n "${!new:-}" ]; then
        printf '%s\n' "${!new}"
    elif [ -n "${!old:-}" ]; then
        echo "$(basename "$0"): $old is deprecated and will be ignored after the next release; set $new" >&2
        printf '%s\n' "${!old}"
    else
        printf '%s\n' "$2"
    fi
}
