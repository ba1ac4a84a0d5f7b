#!/usr/bin/env bash
# One unattended call on a lent GPU machine (an H100 or H200 with its own python3, torch and triton; no network),
# run from the repository root, in phases that each stop at a time limit so that what finished always comes back:
#
#   setup        nvidia-smi -q, the versions, and the plan of the sweep (`run --dry-run`) beside what it will measure
#   correctness  the GPU correctness tests with the Triton kernels compiled for the GPU (TRITON_INTERPRET unset)
#   preset       `run --preset gpu --resume` into results/gpu: stopped at its limit, it keeps every finished point
#   report       `report` of those results into reports/gpu
#   pack         $OUT/gpu-session.tar.gz laid out as the repository (results/gpu, reports/gpu: `tar xzf` it in the
#                repository's root and commit both), beside session.log and REPORT.md; then what came back
#
#   bash scripts/gpu-session.sh                 # on the GPU machine, within BUDGET seconds (default 510)
#   bash scripts/gpu-session.sh --dry-run       # anywhere: every point's predicted time and peak memory and the
#                                               # phases' limits and predictions; exit 1 if over BUDGET
#   RESUME=1 SKIP_TESTS=1 bash scripts/gpu-session.sh   # a later call: what the committed results/gpu still lacks
#   bash scripts/gpu-session.sh --impl triton --dtype float32   # extra arguments go to `run` (and to --dry-run)
#
# Variables: BUDGET (s), OUT (default ./gpu-out), PYTHON (default python3), PRESET (gpu), NAME (the results and
# reports folder name, gpu), CORRECTNESS (the test paths; default suites/correctness/test_triton.py, the tests that
# run on the GPU), DEVICE_MODEL (h100 or h200 for the plan; on a GPU read from nvidia-smi), RESUME, SKIP_TESTS.
# docs/gpu.md §2 says how long each phase takes and how to commit what comes back.
set -u -o pipefail

BUDGET=${BUDGET:-510}
OUT=${OUT:-$PWD/gpu-out}
PY=${PYTHON:-python3}
PRESET=${PRESET:-gpu}
NAME=${NAME:-gpu}
CORRECTNESS=${CORRECTNESS:-suites/correctness/test_triton.py}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

# Each phase's limit and predicted seconds (the preset's prediction is its dry run's); the preset phase gets what
# the budget leaves after the phases before it, less the report's and the pack's limits.
SETUP_S=70 SETUP_PREDICTED=15  # its four commands' limits; in practice torch's import and CUDA's start
CORRECTNESS_S=120 CORRECTNESS_PREDICTED=50
REPORT_S=75 REPORT_PREDICTED=30
PACK_S=20 PACK_PREDICTED=5

DRY=
if [[ ${1:-} == --dry-run ]]; then
    DRY=1
    shift
fi

if [[ -n $DRY ]]; then
    model=${DEVICE_MODEL:-h100}
    echo "== dry run: the $PRESET preset and this session's phases on the $model model (nothing is measured)"
    plan=$("$PY" -m fastformer_bench run --preset "$PRESET" --dry-run "$model" "$@")
    rc=$?
    echo "$plan"
    preset_predicted=$(sed -n 's/^predicted run time: \([0-9.]*\) s.*/\1/p' <<<"$plan")
    if [[ -z $preset_predicted ]]; then
        echo "== the dry run of the preset printed no prediction (exit $rc)"
        exit 2
    fi
    preset_predicted=${preset_predicted%.*}
    tests_predicted=$CORRECTNESS_PREDICTED
    [[ -n ${SKIP_TESTS:-} ]] && tests_predicted=0
    preset_s=$((BUDGET - SETUP_PREDICTED - tests_predicted - REPORT_S - PACK_S))
    total=$((SETUP_PREDICTED + tests_predicted + preset_predicted + REPORT_PREDICTED + PACK_PREDICTED))
    printf '== phases (seconds; BUDGET=%s)\n%-12s %6s %10s\n' "$BUDGET" phase limit predicted
    printf '%-12s %6s %10s\n' setup "$SETUP_S" "$SETUP_PREDICTED" correctness "$CORRECTNESS_S" "$tests_predicted" \
        preset "$preset_s" "$preset_predicted" report "$REPORT_S" "$REPORT_PREDICTED" pack "$PACK_S" \
        "$PACK_PREDICTED" session "$BUDGET" "$total"
    if ((rc != 0)); then
        echo "== the preset's plan has points above the GPU's memory or past the point time limit (exit $rc)"
        exit 1
    fi
    if ((total > BUDGET || preset_predicted > preset_s)); then
        echo "== predicted over the budget: $total s of $BUDGET s (the preset $preset_predicted s of $preset_s s)"
        exit 1
    fi
    echo "== predicted: $total s of the $BUDGET s budget"
    exit 0
fi

START=$(date +%s)
STAGE=$(mktemp -d)
RESULTS=$STAGE/results/$NAME
REPORT=$STAGE/reports/$NAME
mkdir -p "$OUT" "$RESULTS"
if [[ -n ${RESUME:-} && -d results/$NAME ]]; then
    cp -a "results/$NAME/." "$RESULTS/"  # a carried, committed run: its points are kept and the rest measured
fi
exec > >(tee -a "$OUT/session.log") 2>&1
unset TRITON_INTERPRET

left() { echo $((BUDGET - ($(date +%s) - START))); }
SUMMARY=()

# phase NAME LIMIT LOG command...: the command under `timeout` (SIGTERM first, so a sweep stores what it holds and
# exits; SIGKILL 15 s later), its output also appended to LOG where LOG is not "-".
phase() {
    local name=$1 limit=$2 log=$3 t0=$SECONDS rc
    shift 3
    if ((limit < 10)); then
        echo "== $name: skipped, $(left) s of the budget left"
        SUMMARY+=("$name: skipped")
        return
    fi
    echo "== $name: at most $limit s, from $(date -u +%T) UTC"
    if [[ $log == - ]]; then
        timeout -s TERM -k 15 "$limit" "$@"
        rc=$?
    else
        timeout -s TERM -k 15 "$limit" "$@" 2>&1 | tee -a "$log"
        rc=${PIPESTATUS[0]}
    fi
    local took=$((SECONDS - t0)) how=
    ((rc == 124 || rc == 137)) && how=" (stopped at its limit)"
    echo "== $name: exit $rc after $took s$how"
    SUMMARY+=("$name: exit $rc after $took s$how")
}

model=${DEVICE_MODEL:-}
if [[ -z $model ]]; then
    model=h100
    nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | grep -qi h200 && model=h200
fi
# setup: each command under its own short limit (a hung nvidia-smi must not take the session with it)
echo "== setup, from $(date -u +%T) UTC"
timeout 10 nvidia-smi
timeout 10 nvidia-smi -q >"$RESULTS/nvidia-smi-q.txt" 2>&1
timeout 20 "$PY" -c 'import sys, torch, triton; print("python", sys.version.split()[0], "torch", torch.__version__,
"cuda", torch.version.cuda, "triton", triton.__version__); print(torch.cuda.get_device_properties(0))'
# the prediction beside what is measured: each point's line in the sweep's progress says how long it took
timeout 30 "$PY" -m fastformer_bench run --preset "$PRESET" --dry-run "$model" "$@"
SUMMARY+=("setup: $(($(date +%s) - START)) s")

if [[ -z ${SKIP_TESTS:-} ]]; then
    limit=$(($(left) - REPORT_S - PACK_S - 60))
    ((limit > CORRECTNESS_S)) && limit=$CORRECTNESS_S
    # shellcheck disable=SC2086  # CORRECTNESS is a list of test paths
    phase correctness "$limit" "$RESULTS/correctness.log" env -u TRITON_INTERPRET "$PY" -m pytest -W error -q \
        -p no:cacheprovider --junitxml "$RESULTS/correctness.xml" $CORRECTNESS
fi

phase preset "$(($(left) - REPORT_S - PACK_S))" - \
    "$PY" -m fastformer_bench run --preset "$PRESET" --out "$RESULTS" --resume "$@"

limit=$(($(left) - PACK_S))
((limit > REPORT_S)) && limit=$REPORT_S
if compgen -G "$RESULTS/points*.jsonl" >/dev/null; then
    phase report "$limit" - "$PY" -m fastformer_bench report "$RESULTS" --out "$REPORT"
else
    echo "== report: skipped, no points were stored"
    SUMMARY+=("report: skipped, no points")
fi

nvidia-smi -q >"$RESULTS/nvidia-smi-q-end.txt" 2>&1
echo "== done after $(($(date +%s) - START)) s of the $BUDGET s budget:"
printf '   %s\n' "${SUMMARY[@]}"
"$PY" - "$RESULTS" <<'EOF'
import collections, json, pathlib, sys

# what the store holds, by implementation and status (a line that cannot be read is counted, not fatal)
counts, bad = collections.Counter(), 0
for path in sorted(pathlib.Path(sys.argv[1]).glob("points*.jsonl")):
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            bad += 1
            continue
        counts[record.get("impl"), record.get("status")] += 1
print(f"== points stored: {sum(counts.values())}" + (f" ({bad} unreadable lines)" if bad else ""))
for (impl, status), n in sorted(counts.items()):
    print(f"   {impl:14s} {status:12s} {n}")
EOF
cp "$OUT/session.log" "$RESULTS/session.log"
tar czf "$OUT/gpu-session.tar.gz" -C "$STAGE" "results/$NAME" $([[ -d $REPORT ]] && echo "reports/$NAME")
[[ -f $REPORT/REPORT.md ]] && cp "$REPORT/REPORT.md" "$OUT/REPORT.md"
echo "== came back in $OUT (tar xzf gpu-session.tar.gz in the repository's root, then commit results/$NAME and" \
    "reports/$NAME):"
ls -l "$OUT"
tar tzf "$OUT/gpu-session.tar.gz" | sed 's/^/   /'
too_big=$(find "$OUT" -maxdepth 1 -type f -size +16M)
[[ -z $too_big ]] || echo "== WARNING: over the 16 MiB a file that comes back: $too_big"
echo "== session over after $(($(date +%s) - START)) s"
