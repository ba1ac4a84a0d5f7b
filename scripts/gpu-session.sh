#!/usr/bin/env bash
# One short, prepared call on a lent GPU machine (no network; its own python3 with torch and triton), run from the
# repository root: the Triton kernels' correctness suite compiled for the GPU, then the `gpu-check` comparison
# (triton, eager, compiled, and softmax_sdpa beside them, against the copy bandwidth measured in the same run).
#
# Each stage runs in its own process under `timeout`, cut to what is left of BUDGET seconds, so a slow or broken
# stage costs its own points only; a sweep stopped by SIGTERM keeps every point it finished, and a later stage
# resumes the same results directory. Everything comes back as one tarball plus the log, in $OUT (or ./gpu-out).
#
#   BUDGET=540 bash scripts/gpu-session.sh       # then, here: tar xzf gpu-results.tar.gz; report ...
#   SKIP_TESTS=1 WORK=results/gpu-check-local BUDGET=280 bash scripts/gpu-session.sh --impl triton --dtype float32
#                                                # resume a carried results folder with one sweep
set -u
BUDGET=${BUDGET:-540}
OUT=${OUT:-$PWD/gpu-out}
PY=${PYTHON:-python3}
WORK=${WORK:-$(mktemp -d)}  # a carried results folder to resume, or a new one
START=$(date +%s)
mkdir -p "$OUT"
exec > >(tee -a "$OUT/session.log") 2>&1
unset TRITON_INTERPRET
export PYTHONUNBUFFERED=1

left() { echo $(( BUDGET - ($(date +%s) - START) )); }

# stage NAME MAX_SECONDS command...: runs the command for at most MAX_SECONDS and at most what is left (keeping
# 20 s to pack the results); SIGTERM first, so a sweep writes what it holds, then SIGKILL 10 s later.
stage() {
    local name=$1 max=$2 room
    shift 2
    room=$(( $(left) - 30 ))
    if (( room < 15 )); then
        echo "== $name: skipped, $(left) s of the budget left"
        return
    fi
    (( max > room )) && max=$room
    echo "== $name: at most $max s, from $(date -u +%T) UTC"
    local t0=$SECONDS
    timeout -s TERM -k 10 "$max" "$@"
    echo "== $name: exit $? after $(( SECONDS - t0 )) s"
}

sweep() {  # sweep STAGE-NAME MAX_SECONDS run-arguments...
    local name=$1 max=$2
    shift 2
    stage "$name" "$max" "$PY" -m fastformer_bench run --preset gpu-check --out "$WORK/gpu-check" --resume \
        --no-progress "$@"
}

nvidia-smi || true
"$PY" -c 'import sys, torch, triton; print(sys.version); print("torch", torch.__version__, "cuda", torch.version.cuda,
"triton", triton.__version__); print(torch.cuda.is_available() and torch.cuda.get_device_properties(0))'
[[ -n ${SKIP_TESTS:-} ]] || stage correctness 110 "$PY" -m pytest -W error suites/correctness/test_triton.py -q -p no:cacheprovider \
    --junitxml "$WORK/correctness.xml"
if (( $# )); then
    sweep "gpu-check $*" "$BUDGET" "$@"  # a follow-up call: one sweep of what the first left unmeasured
else
    sweep "gpu-check triton" 110 --impl triton --dtype bfloat16,float32
    sweep "gpu-check eager" 80 --impl eager --dtype bfloat16,float32
    sweep "gpu-check compiled" 110 --impl compiled --dtype bfloat16,float32
    sweep "gpu-check softmax_sdpa" 70 --impl softmax_sdpa --dtype bfloat16,float32
    sweep "gpu-check triton float16" 60 --impl triton --dtype float16
fi

tar czf "$OUT/gpu-results.tar.gz" -C "$WORK" . && echo "== packed: $(tar tzf "$OUT/gpu-results.tar.gz" | tr '\n' ' ')"
echo "== done after $(( $(date +%s) - START )) s"
