#!/usr/bin/env bash
# A prepared, time-boxed GPU run in one command: set up, test the Triton kernels, continue training the shipped
# weights for as long as the budget allows, time a restoration, benchmark the kernels, and leave the weights,
# logs, tables and a JSON summary in one results folder.
#
# Usage: bash scripts/gpu_run.sh [--dry-run] [OPTIONS] [-- KEY=VALUE ...]
#
# Phases, each timed, in this order:
#   setup         install the wheels in .whl/ (open_clip_torch, ftfy, wcwidth) into /tmp/site when open_clip
#                 does not import (for a GPU machine without network access), put the checkout first on
#                 PYTHONPATH (nothing is installed into PYTHON's environment), print versions and the GPU
#   kernel_tests  pytest on the GPU, one kernel family at a time: test_model_integration.py (all families),
#                 test_transposed_attention.py (transposed_attention), test_routed.py (routed). A family whose
#                 tests fail runs on its PyTorch reference twin from then on (SLERIR_REFERENCE_KERNELS=<failing
#                 families>); the others keep their Triton kernels
#   train         slerir train --config compact-synthetic --phase <the weights' phase> --init <shipped weights>
#                 --time-budget <what is left>, bf16, --batch crops of 128² a step (phase 1 from scratch when
#                 the weights are missing; resumed from its last checkpoint with every family on its twin if a
#                 run with Triton kernels crashes)
#   pack          the weights (fp16 when fp32 is over --max-file-mib) and the run's CSV logs into the results
#   restore       Restorer.restore of a 4096² RGB uint8 image with the shipped weights, model loaded, after one
#                 warm-up call (512² on the dry run's CPU)
#   bench         python benchmarks/kernel_speed.py, with whatever time is left
# Training gets the budget less the time set-up and tests took and less the reserves for the imports, packing,
# the restore timing and the bench: a slow start shortens training, never the deadline.
#
# Options:
#   --dry-run           the same phases on this machine's CPU: 4 training steps on crops of 32², one torch
#                       thread, no data workers, only the model-integration kernel tests (the whole kernel
#                       suite takes ~30 s on a 2-core CPU), the bench's interpreter sanity check; the results
#                       go to a temporary folder unless --out or $OUT says otherwise
#   --minutes M         minutes the whole run must end within (default 9.5)
#   --batch N           training crops a step (default 128; 2 on a dry run)
#   --max-file-mib N    largest weights file left in the results (default 16): fp32 weights over it are saved
#                       in fp16
#   --init PATH         weights to continue from (default slerir_core/weights/slerir-compact.safetensors)
#   --out DIR           results folder (default $OUT when set)
#   -h, --help          this text
#   -- KEY=VALUE ...    more `slerir train --set` overrides, applied after the built-in ones
#
# Environment: OUT (results folder when --out is not given), PYTHON (default .venv/bin/python when present,
# else python3), BENCH_ARGS (default "--sizes 2048 --dtypes bf16").
#
# Files left in the results folder (8, flat):
#   gpu_run.log  everything printed, the phase table at the end     gpu_run.json  phases, measures and facts
#   train.log    the training's own output (progress bar included)  model.safetensors  the weights
#   train_log.csv, val_log.csv, train_summary.json  the run's logs   bench.json    the kernel tables
# gpu_run.json's "measures": warmup_s (training start to the end of its first step), steady_crops_per_s (median
# of the later rows' rates, each over its 10 steps), gpu_busy_pct (nvidia-smi utilization.gpu, mean during training; null without a GPU),
# restore_mp_per_s, restore_s and restore_image; "reference_kernels" lists the families turned off.
set -uo pipefail
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
cd "$(dirname "$SELF")/.." || exit 2
REPO=$PWD

usage() { sed -n '2,/^set -uo pipefail/{/^set /d;s/^# \{0,1\}//;p}' "$SELF"; }
TEE_PID=""
die() {
    echo "gpu_run.sh: $*" >&2
    if [[ -n $TEE_PID ]]; then
        exec >&- 2>&-
        wait "$TEE_PID"
    fi
    exit 2
}

DRY=0
MINUTES=9.5
BATCH=""
MAX_FILE_MIB=16
INIT="slerir_core/weights/slerir-compact.safetensors"
EXTRA_SETS=()
while (($#)); do
    case $1 in
        --dry-run) DRY=1 ;;
        --minutes) MINUTES=${2:?--minutes needs a number}; shift ;;
        --batch) BATCH=${2:?--batch needs a number}; shift ;;
        --max-file-mib) MAX_FILE_MIB=${2:?--max-file-mib needs a number}; shift ;;
        --init) INIT=${2:?--init needs a path}; shift ;;
        --out) OUT=${2:?--out needs a folder}; shift ;;
        -h | --help) usage; exit 0 ;;
        --) shift; EXTRA_SETS=("$@"); break ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done
[[ $MINUTES =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--minutes expects a number, got '$MINUTES'"
[[ $MAX_FILE_MIB =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--max-file-mib expects a number, got '$MAX_FILE_MIB'"
[[ -z $BATCH || $BATCH =~ ^[1-9][0-9]*$ ]] || die "--batch expects a whole number, got '$BATCH'"
TOTAL=$(awk -v m="$MINUTES" 'BEGIN { printf "%d", m * 60 }')

CONFIG=compact-synthetic
# Every kernel family and the test file that checks it; model integration exercises them all.
FAMILIES=(transposed_attention routed)
declare -A FAMILY_TESTS=([all]=tests/kernels/test_model_integration.py
    [transposed_attention]=tests/kernels/test_transposed_attention.py [routed]=tests/kernels/test_routed.py)
read -r -a BENCH <<<"${BENCH_ARGS:---sizes 2048 --dtypes bf16}"
if ((DRY)); then
    # Hide a GPU, so that a dry run is the CPU path wherever it runs.
    export CUDA_VISIBLE_DEVICES=""
    # One torch thread, as in the tests (tests/conftest.py): on two shared cores a descheduled second thread
    # stalls every op (the dry run took 150 s on two threads and 50 s on one).
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_run_out.XXXXXX")}
    SETS=(train.precision=bf16 data.crop=32 data.workers=0 data.val_images=1 data.val_size=32 train.log_every=1
        train.prototype_batches=1)
    : "${BATCH:=2}"
    TEST_LIMIT=150
    # Four steps, so that three follow the warm-up, each of a fraction of a second after a first one of up to
    # ~40 s on two busy cores; the budget is there to be passed, not to be reached.
    TRAIN_ARGS=(--steps 4)
    TRAIN_FIXED=120
    TRAIN_OVERHEAD=240  # past the budget: start-up on two busy cores
    RESTORE_SIZE=512
    RESTORE_LIMIT=120
    RESTORE_RESERVE=0
    BENCH_MIN=0
else
    [[ -n ${OUT:-} ]] || die "no results folder: give --out DIR (or set OUT), or use --dry-run"
    # 128 crops of 128² fill an H200 far better than the config's 32; the batches are made on the GPU
    # (data.on_device). The first step's row gives the warm-up, and a row every 10 steps the steady rate: the
    # loss is read back to the host only for a row, so rows every step would make the host wait every step.
    # Checkpoints every 250 steps: if the time limit ever has to kill the run, pack_weights.py exports the last.
    SETS=(train.precision=bf16 data.crop=128 train.log_every=10 train.checkpoint_every=250)
    : "${BATCH:=128}"
    TEST_LIMIT=100
    TRAIN_ARGS=()
    TRAIN_FIXED=""
    # The budget covers the run from its data set on (the kernel compiles, a validation and the export
    # included); this covers the imports before, and the hard limit's slack.
    TRAIN_OVERHEAD=60
    RESTORE_SIZE=4096
    RESTORE_LIMIT=60
    RESTORE_RESERVE=$RESTORE_LIMIT
    BENCH_MIN=60
fi
SETS+=("${EXTRA_SETS[@]}")
PACK_RESERVE=25

START=$(date +%s.%N)
DEADLINE=$(($(date +%s) + TOTAL))
mkdir -p "$OUT" || die "cannot create $OUT"
OUT=$(cd "$OUT" && pwd)
# A reused results folder may hold an earlier run's files: the exit status must not come from those.
(cd "$OUT" && rm -f gpu_run.log gpu_run.json train.log model.safetensors train_log.csv val_log.csv \
    train_summary.json bench.json)
# Run folders hold 46 MB checkpoints: outside the results, so that only the chosen files are left there.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_run.XXXXXX")
exec > >(tee "$OUT/gpu_run.log") 2>&1
TEE_PID=$!
export PYTHONUNBUFFERED=1

left() { echo $((DEADLINE - $(date +%s))); }
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
P_NAME=()
P_SECS=()
P_STATUS=()
declare -A FACT
declare -A MEASURE
phase_begin() {
    PHASE=$1
    PHASE_T0=$(date +%s.%N)
    printf '\n=== %s (at %ss, %ss left)\n' "$PHASE" "$(since "$START")" "$(left)"
}
phase_end() {
    P_NAME+=("$PHASE")
    P_SECS+=("$(since "$PHASE_T0")")
    P_STATUS+=("$1")
    printf '=== %s: %s (%ss)\n' "$PHASE" "$1" "${P_SECS[-1]}"
}
json_str() {
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\n'/\\n}
    printf '"%s"' "${s//$'\t'/ }"
}
# A JSON number, or null for anything that is not one (a measure that could not be taken).
json_num() {
    if [[ ${1:-} =~ ^-?[0-9]+([.][0-9]+)?$ ]]; then printf '%s' "$1"; else printf 'null'; fi
}

echo "gpu_run.sh: $( ((DRY)) && echo 'dry run on the CPU' || echo 'GPU run'), ${TOTAL}s in all," \
    "results in $OUT, work folder $WORK"

# -- setup ---------------------------------------------------------------------------------------------------
phase_begin setup
if [[ -z ${PYTHON:-} ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=$REPO/.venv/bin/python; else PYTHON=python3; fi
fi
PY=$PYTHON
notes=()
# find_spec locates a package without importing it (nor torch): a fraction of a second. From /, so that the
# checkout itself does not count as installed.
spec_origin() {
    (cd / && "$PY" -c 'import importlib.util as u, sys; s = u.find_spec(sys.argv[1]); print(s and s.origin or "")' "$1")
}
if [[ -n $(spec_origin open_clip) && -n $(spec_origin ftfy) ]]; then
    notes+=("open_clip is there: no wheels installed")
else
    compgen -G ".whl/*.whl" >/dev/null || die "open_clip is missing and .whl/ holds no wheels (kernels/NOTES.md)"
    # --no-deps: the GPU image has the rest, and nothing can be fetched there.
    timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || die "installing the wheels in .whl/ failed"
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    notes+=("wheels installed: $(cd .whl && echo *.whl)")
fi
# The checkout itself goes first on the path rather than being installed: an install would re-point whichever
# environment PYTHON belongs to at this checkout.
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
# One process imports everything the phases need, checks the one option this script cannot do without (a GPU
# minute spent on a usage error is lost), and reads the phase to train in: weights go on in the phase that
# trained them (phase-2 weights keep their router and routes frozen); without weights, phase 1 from scratch.
probe=$("$PY" - "$INIT" 2>"$WORK/probe.log" <<'EOF'
import argparse
import platform
import sys

import open_clip
import torch

from training.commands import add_train_arguments
from training.state import recorded_phase

parser = argparse.ArgumentParser()
add_train_arguments(parser)
if "--time-budget" not in parser._option_string_actions:
    raise SystemExit("slerir train has no --time-budget option in this checkout")
try:
    import triton

    triton_version = triton.__version__
except ImportError:  # the CPU path runs without it
    triton_version = "missing"
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
print(
    f"python {platform.python_version()}, torch {torch.__version__}, triton {triton_version}, "
    f"open_clip {open_clip.__version__}, cuda {int(torch.cuda.is_available())}, gpu {gpu}"
)
print(recorded_phase(sys.argv[1]) or 1)
EOF
) || {
    cat "$WORK/probe.log"
    die "the setup check failed"
}
{ read -r versions; read -r TRAIN_PHASE; } <<<"$probe"
echo "$versions"
FACT[versions]=$versions
FACT[commit]=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if ((!DRY)); then
    [[ $versions == *"cuda 1,"* ]] || die "no CUDA GPU here: use --dry-run on a machine without one"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
phase_end "ok; $(printf '%s; ' "${notes[@]}" | sed 's/; $//')"

# -- kernel tests --------------------------------------------------------------------------------------------
# pytest's closing line, e.g. "==== 2 failed, 40 passed, 1 error in 12.31s ====": the one place that counts
# each failure once (-rfE repeats every failure in the short summary above it).
summary_line() { grep -E '^=+ .*[0-9]+ (passed|failed|errors?|skipped|deselected|xfailed|xpassed)\b.* in [0-9.]+s' "$1" | tail -n 1 | tr -d '=' | sed 's/^ *//;s/ *$//'; }
# The count of one outcome in a summary line ("failed", "error", "passed"); 0 when absent.
summary_count() { grep -oE "[0-9]+ $2s?\b" <<<"$1" | grep -oE '^[0-9]+' || echo 0; }

phase_begin kernel_tests
# model_integration first: if time runs out, the tests closest to training have run.
families=(all)
if ((DRY)); then
    echo "note: dry run: only the model-integration kernel tests (the whole suite takes ~30 s on a 2-core CPU)"
else
    families+=("${FAMILIES[@]}")
fi
# -c /dev/null: pyproject's warning filters name pydantic, which the GPU image lacks.
pytest_args=(-c /dev/null --rootdir "$REPO" -p no:cacheprovider -v -rfE --durations=10 --disable-warnings)
if ((!DRY)) && "$PY" -c 'import xdist' 2>/dev/null; then
    # Most of the time is Triton compiles, one CPU core each.
    pytest_args+=(-n 8)
fi
tests_deadline=$(($(date +%s) + TEST_LIMIT))
declare -A FAILING
statuses=()
for family in "${families[@]}"; do
    file=${FAMILY_TESTS[$family]}
    log=$WORK/kernel_tests-$family.log
    limit=$((tests_deadline - $(date +%s)))
    ((limit > $(left))) && limit=$(left)
    if ((limit < 10)); then
        statuses+=("$family: not run (time limit)")
        FAILING[$family]=1
        continue
    fi
    echo "--- $family: $file (time limit ${limit}s)"
    timeout --kill-after=10 "$limit" "$PY" -m pytest "${pytest_args[@]}" "$file" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    line=$(summary_line "$log")
    if ((rc == 0)); then
        statuses+=("$family: passed (${line:-no summary})")
    elif [[ -z $line ]] && ((rc == 124 || rc == 137)); then
        # Cut off before pytest's summary: only the progress lines tell what ran.
        n_pass=$(grep -cE '(^| )PASSED( |$)' "$log")
        if ((n_pass > 0)) && ! grep -qE '(^| )(FAILED|ERROR)( |$)' "$log"; then
            # The kernels that ran agree with their twins, so the family is used.
            statuses+=("$family: cut off at ${limit}s after $n_pass passed, none failed")
        else
            statuses+=("$family: FAILED (cut off at ${limit}s, $n_pass passed)")
            FAILING[$family]=1
        fi
    else
        counts="$(summary_count "$line" failed) failed, $(summary_count "$line" error) errors"
        statuses+=("$family: FAILED (exit $rc: $counts, $(summary_count "$line" passed) passed)")
        FAILING[$family]=1
    fi
done
REFERENCE=()
for family in "${FAMILIES[@]}"; do
    [[ -n ${FAILING[all]:-} || -n ${FAILING[$family]:-} ]] && REFERENCE+=("$family")
done
# The families whose tests failed run on their twins in every later phase; the rest keep their Triton kernels.
KENV=()
((${#REFERENCE[@]})) && KENV=("SLERIR_REFERENCE_KERNELS=$(IFS=,; echo "${REFERENCE[*]}")")
test_status=$(printf '%s; ' "${statuses[@]}" | sed 's/; $//')
((${#REFERENCE[@]})) && test_status+="; reference twins from now on: ${REFERENCE[*]}"
((DRY)) && test_status+="; dry run: subset"
FACT[kernels_tested]=$test_status
phase_end "$test_status"

# -- training ------------------------------------------------------------------------------------------------
init_args=()
if [[ -f $INIT ]]; then
    init_args=(--init "$INIT")
    FACT[init]="$INIT (phase $TRAIN_PHASE)"
else
    echo "note: $INIT is missing: phase 1 starts from scratch"
    FACT[init]="none (from scratch)"
fi
SETS=("train.phase$TRAIN_PHASE.batch_size=$BATCH" "${SETS[@]}")
FACT[batch]="$BATCH crops a step"
last_row() { [[ -f $1 ]] && tail -n 1 "$1" | cut -d, -f1; }
# Median img_per_s (crops/s) over the rows after step 1, whose time holds the first compiles; the csv module
# ends rows in \r\n.
steady_rate() {
    [[ -f $1 ]] && awk -F, '{ sub(/\r$/, "") }
        NR == 1 { for (i = 1; i <= NF; i++) { if ($i == "img_per_s") c = i; if ($i == "step") s = i }; next }
        c && s && $s > 1 { print $c }' "$1" | sort -g | awk '{ v[NR] = $1 }
        END { if (NR) printf "%.2f", (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}
train_run() { # [--resume] -> sets TRAIN_RC
    local budget limit
    if [[ -n $TRAIN_FIXED ]]; then
        budget=$TRAIN_FIXED
    else
        budget=$(($(left) - TRAIN_OVERHEAD - PACK_RESERVE - RESTORE_RESERVE - BENCH_MIN))
        ((budget < 30)) && budget=30
    fi
    limit=$((budget + TRAIN_OVERHEAD))
    local cmd=("$PY" -m slerir_core.cli train --config "$CONFIG" --phase "$TRAIN_PHASE" "${init_args[@]}"
        --time-budget "${budget}s" --out "$RUN" "${TRAIN_ARGS[@]}" "$@")
    ((DRY)) && cmd+=(--device cpu)
    cmd+=(--set "${SETS[@]}")
    FACT[train_command]="${KENV[*]}${KENV[*]:+ }slerir ${cmd[*]:3}"
    echo "${FACT[train_command]}   (time limit ${limit}s)"
    FACT[train_budget_s]=$budget
    local gpu_log=$WORK/gpu-util.csv mon="" first_row=$WORK/first-row watch t0
    if ((!DRY)) && command -v nvidia-smi >/dev/null; then
        # GPU busy share during training: low means the CPU-side degradations are the bottleneck.
        nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 1000 >>"$gpu_log" 2>&1 &
        mon=$!
    fi
    t0=$(date +%s.%N)
    # Warm-up ends with the first step, whose row is the first in train_log.csv (a row a step).
    (
        while [[ ! -f $RUN/train_log.csv ]] || (($(wc -l <"$RUN/train_log.csv") < 2)); do sleep 0.2; done
        date +%s.%N >"$first_row"
    ) &
    watch=$!
    env "${KENV[@]}" timeout --kill-after=15 "$limit" "${cmd[@]}" 2>&1 | tee -a "$OUT/train.log" |
        tr '\r' '\n' | grep --line-buffered -vE '^phase [12]: '
    TRAIN_RC=${PIPESTATUS[0]}
    kill "$watch" 2>/dev/null
    wait "$watch" 2>/dev/null
    if [[ -z ${MEASURE[warmup_s]:-} && -s $first_row ]]; then
        MEASURE[warmup_s]=$(awk -v a="$t0" -v b="$(cat "$first_row")" 'BEGIN { printf "%.1f", b - a }')
    fi
    if [[ -n $mon ]]; then
        kill "$mon" 2>/dev/null
        wait "$mon" 2>/dev/null
        MEASURE[gpu_busy_pct]=$(awk -F', *' '$1 ~ /^[0-9]+$/ { u += $1; n++ } END { if (n) printf "%.1f", u / n }' \
            "$gpu_log")
        FACT[gpu_memory_peak]=$(awk -F', *' '$2 ~ /^[0-9]+$/ && $2 > m { m = $2 } END { printf "%d MiB", m }' \
            "$gpu_log")
        echo "GPU busy ${MEASURE[gpu_busy_pct]:-?} % (mean of one-second samples), peak ${FACT[gpu_memory_peak]}"
    fi
    tr '\r' '\n' <"$OUT/train.log" | grep -E '^phase [12]: ' | tail -n 1
}
phase_begin train
RUN=$WORK/run
train_run
if ((TRAIN_RC != 0 && TRAIN_RC != 124 && TRAIN_RC != 137)) && ((${#REFERENCE[@]} < ${#FAMILIES[@]})) &&
    (($(left) > 180)); then
    # A crash, not the time limit: a kernel fails at a shape the tests did not cover. The last checkpoint
    # (every 250 steps) is kept.
    echo "training with Triton kernels exited $TRAIN_RC: resumed with every family on its twin for the time left"
    FACT[train_triton_failure]="exit $TRAIN_RC"
    REFERENCE=("${FAMILIES[@]}")
    KENV=("SLERIR_REFERENCE_KERNELS=$(IFS=,; echo "${REFERENCE[*]}")")
    train_run --resume
fi
steps=$(grep -oE '"step": [0-9]+' "$RUN/summary.json" 2>/dev/null | head -n 1 | grep -oE '[0-9]+$' ||
    last_row "$RUN/train_log.csv")
MEASURE[steady_crops_per_s]=$(steady_rate "$RUN/train_log.csv")
train_status="exit $TRAIN_RC, budget ${FACT[train_budget_s]}s, stopped at step ${steps:-0}"
train_status+=", warm-up ${MEASURE[warmup_s]:-?}s, then ${MEASURE[steady_crops_per_s]:-?} crops/s"
if ((DRY)); then
    train_status+=" (on the CPU: the reference ops)"
elif ((${#REFERENCE[@]})); then
    train_status+=", twins for ${REFERENCE[*]}"
fi
FACT[train]=$train_status
phase_end "$train_status"

# -- pack ----------------------------------------------------------------------------------------------------
phase_begin pack
for f in train_log.csv val_log.csv; do
    if [[ -f $RUN/$f ]]; then cp "$RUN/$f" "$OUT/$f"; else echo "note: the run wrote no $f"; fi
done
[[ -f $RUN/summary.json ]] && cp "$RUN/summary.json" "$OUT/train_summary.json"
if [[ -f $RUN/config.yaml ]]; then
    echo "the run's config ($RUN/config.yaml):"
    sed 's/^/  /' "$RUN/config.yaml"
fi
if [[ -f $OUT/val_log.csv ]]; then
    echo "val_log.csv, last rows:"
    tail -n 8 "$OUT/val_log.csv" | sed 's/^/  /'
fi
if packed=$(timeout 120 "$PY" scripts/pack_weights.py "$RUN" \
    "$OUT/model.safetensors" --max-file-mib "$MAX_FILE_MIB"); then
    pack_status=$packed
else
    pack_status="FAILED: no weights"
fi
FACT[weights]=$pack_status
phase_end "$pack_status"

# -- restore -------------------------------------------------------------------------------------------------
phase_begin restore
MEASURE[restore_image]="${RESTORE_SIZE}x${RESTORE_SIZE}x3 uint8$( ((DRY)) && echo ', dry run on the CPU')"
limit=$((RESTORE_LIMIT < $(left) - 10 ? RESTORE_LIMIT : $(left) - 10))
if [[ ! -f $INIT ]]; then
    restore_status="skipped: $INIT is missing"
elif ((limit < 20)); then
    restore_status="skipped: ${limit}s left"
else
    timed=$(env "${KENV[@]}" timeout --kill-after=10 "$limit" \
        "$PY" - "$INIT" "$RESTORE_SIZE" <<'EOF'
import sys
import time

import numpy as np

from slerir_core import Restorer

weights, size = sys.argv[1], int(sys.argv[2])
restorer = Restorer.from_pretrained(weights)
image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
restorer.restore(image)  # warm-up: kernel compiles, the allocator's first maps
start = time.perf_counter()
restorer.restore(image)  # a numpy result: the device has finished when it returns
seconds = time.perf_counter() - start
print(f"{size * size / 1e6 / seconds:.2f} {seconds:.2f} {restorer.device}")
EOF
    )
    rc=$?
    if ((rc == 0)); then
        read -r mp_per_s seconds restore_device <<<"$timed"
        MEASURE[restore_mp_per_s]=$mp_per_s
        MEASURE[restore_s]=$seconds
        restore_status="${MEASURE[restore_image]}: ${MEASURE[restore_s]}s, ${MEASURE[restore_mp_per_s]} MP/s"
        restore_status+=" on $restore_device (shipped weights, model loaded, after one warm-up call)"
    else
        restore_status="FAILED (exit $rc$( ((rc == 124 || rc == 137)) && echo ", time limit ${limit}s"))"
    fi
fi
FACT[restore]=$restore_status
phase_end "$restore_status"

# -- bench ---------------------------------------------------------------------------------------------------
phase_begin bench
limit=$(($(left) - 10))
if ((limit < 20)); then
    bench_status="skipped: ${limit}s left"
else
    echo "${KENV[*]}${KENV[*]:+ }python benchmarks/kernel_speed.py ${BENCH[*]} --json $OUT/bench.json   (time limit ${limit}s)"
    env "${KENV[@]}" timeout --kill-after=10 "$limit" "$PY" benchmarks/kernel_speed.py "${BENCH[@]}" --json "$OUT/bench.json" 2>&1
    rc=$?
    case $rc in
        0) bench_status="ok" ;;
        124 | 137) bench_status="time limit ${limit}s reached: the rows printed above are all there is" ;;
        *) bench_status="exit $rc" ;;
    esac
    ((DRY)) && bench_status+=" (interpreter sanity check: no GPU)"
fi
FACT[bench]=$bench_status
phase_end "$bench_status"

# -- summary -------------------------------------------------------------------------------------------------
total=$(since "$START")
echo
echo "gpu_run.sh summary ($( ((DRY)) && echo 'dry run' || echo 'GPU'); ${TOTAL}s allowed):"
printf '  %-13s %8s  %s\n' phase seconds status
for i in "${!P_NAME[@]}"; do
    printf '  %-13s %8s  %s\n' "${P_NAME[$i]}" "${P_SECS[$i]}" "${P_STATUS[$i]}"
done
printf '  %-13s %8s\n' total "$total"
echo "files in $OUT:"
(cd "$OUT" && ls -l --block-size=K -- *) | sed 's/^/  /'
{
    printf '{\n  "dry_run": %s,\n  "total_s": %s,\n  "allowed_s": %s,\n  "phases": [\n' \
        "$( ((DRY)) && echo true || echo false)" "$total" "$TOTAL"
    for i in "${!P_NAME[@]}"; do
        printf '    {"phase": %s, "seconds": %s, "status": %s}%s\n' "$(json_str "${P_NAME[$i]}")" "${P_SECS[$i]}" \
            "$(json_str "${P_STATUS[$i]}")" "$( ((i + 1 < ${#P_NAME[@]})) && echo ,)"
    done
    printf '  ],\n  "measures": {\n'
    for key in warmup_s steady_crops_per_s gpu_busy_pct restore_mp_per_s restore_s; do
        printf '    "%s": %s,\n' "$key" "$(json_num "${MEASURE[$key]:-}")"
    done
    printf '    "restore_image": %s\n  },\n' "$(json_str "${MEASURE[restore_image]}")"
    printf '  "reference_kernels": [%s],\n' "$(for f in "${REFERENCE[@]}"; do json_str "$f"; printf ' '; done |
        sed 's/" "/", "/g;s/ $//')"
    printf '  "facts": {\n'
    keys=("${!FACT[@]}")
    for i in "${!keys[@]}"; do
        printf '    %s: %s%s\n' "$(json_str "${keys[$i]}")" "$(json_str "${FACT[${keys[$i]}]}")" \
            "$( ((i + 1 < ${#keys[@]})) && echo ,)"
    done
    printf '  }\n}\n'
} >"$OUT/gpu_run.json"
status=0
[[ -f $OUT/model.safetensors ]] || status=1
rm -rf "$WORK"
# Let tee write the last lines before the command returns.
exec >&- 2>&-
wait "$TEE_PID"
exit "$status"
