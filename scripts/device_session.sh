#!/usr/bin/env bash
# One prepared command for a session that is lent a GPU (the device tool's NVIDIA H200, one command of at most
# ~9.5 minutes): set up, test the Triton kernels, continue training the shipped weights, benchmark the kernels,
# and leave the weights, logs and tables in $OUT.
#
# Usage: bash scripts/device_session.sh [--dry-run] [OPTIONS] [-- KEY=VALUE ...]
#
# Phases, each timed, in this order:
#   setup         install the carried wheels (.whl/*.whl: open_clip_torch, ftfy, wcwidth) into /tmp/site when
#                 open_clip does not import, and the project with `pip install --no-deps -e .` (the repo goes
#                 on PYTHONPATH when that fails); print versions and the GPU
#   kernel_tests  pytest tests/kernels on the GPU, under a time limit; they decide the training's kernels
#   train         slerir train --config compact-synthetic --stage <the weights' stage> --init <shipped weights>
#                 --time-budget <N>s, bf16, with the Triton kernels if their tests passed, else
#                 SLERIR_KERNELS=reference (stage 1 from scratch when the shipped weights are missing; resumed
#                 from its last checkpoint with the reference ops if a Triton run crashes)
#   pack          the weights (fp16 when fp32 is over 16 MiB) and the run's CSV logs into $OUT
#   bench         python -m kernels.bench, with whatever time is left
# The training budget is what is left of --total after setup and tests, less the reserves for the export,
# packing and the bench, and at most --train-minutes: a slow start shortens training, never the deadline.
#
# Options:
#   --dry-run           the same phases on this machine's CPU with a tiny budget: 10 s of training on crops of
#                       32², one torch thread, no data workers, only the model-integration kernel tests (the
#                       whole kernel suite takes ~30 s on 2 cores), the bench's interpreter sanity check, OUT a
#                       temp dir when unset; the wheels are installed only if open_clip does not import
#   --train-minutes M   most minutes of training (default 5)
#   --total S           seconds the whole command must end within (default 555; the device tool allows 600)
#   --init PATH         weights to continue from (default slerir_core/weights/slerir-compact.safetensors)
#   --out DIR           results folder (default $OUT)
#   -h, --help          this text
#   -- KEY=VALUE ...    more `slerir train --set` overrides, applied after the built-in ones
#
# Environment: OUT (results folder; the device tool sets it), PYTHON (default .venv/bin/python when present,
# else python3), BENCH_ARGS (default "--sizes 2048 --dtypes bf16").
#
# Files left in $OUT (8, flat: the device tool returns at most 8 files of at most 16 MiB each):
#   session.log  everything printed, with the phase table at the end   session.json  phases and facts
#   train.log    the training's own output (progress bar included)     model.safetensors  the weights
#   train_log.csv, val_log.csv, train_summary.json  the run's logs     bench.json   the kernel tables
#
# The device call (see kernels/NOTES.md): carry [".whl"], timeout_s 600, command
#   bash scripts/device_session.sh
set -uo pipefail
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
cd "$(dirname "$SELF")/.." || exit 2
REPO=$PWD

usage() { sed -n '2,/^set -uo pipefail/{/^set /d;s/^# \{0,1\}//;p}' "$SELF"; }
TEE_PID=""
die() {
    echo "device_session.sh: $*" >&2
    if [[ -n $TEE_PID ]]; then
        exec >&- 2>&-
        wait "$TEE_PID"
    fi
    exit 2
}

DRY=0
TRAIN_MINUTES=5
TOTAL=""
INIT="slerir_core/weights/slerir-compact.safetensors"
EXTRA_SETS=()
while (($#)); do
    case $1 in
        --dry-run) DRY=1 ;;
        --train-minutes) TRAIN_MINUTES=${2:?--train-minutes needs a number}; shift ;;
        --total) TOTAL=${2:?--total needs seconds}; shift ;;
        --init) INIT=${2:?--init needs a path}; shift ;;
        --out) OUT=${2:?--out needs a folder}; shift ;;
        -h | --help) usage; exit 0 ;;
        --) shift; EXTRA_SETS=("$@"); break ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done

CONFIG=compact-synthetic
read -r -a BENCH <<<"${BENCH_ARGS:---sizes 2048 --dtypes bf16}"
if ((DRY)); then
    : "${TOTAL:=400}"
    # Hide a GPU, so that a dry run is the CPU path wherever it runs.
    export CUDA_VISIBLE_DEVICES=""
    # One torch thread, as in the tests (tests/conftest.py): on two shared cores a descheduled second thread
    # stalls every op (the dry run took 150 s on two threads and 50 s on one).
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/device_session_out.XXXXXX")}
    SETS=(train.amp=bf16 data.crop=32 data.workers=0 data.val_images=1 data.val_size=32 train.log_every=1
        train.prototype_batches=1)
    BATCH=2
    TEST_LIMIT=150
    TRAIN_FIXED=10      # seconds: one step on two shared cores
    TRAIN_OVERHEAD=240  # past the budget: start-up, a first step of up to ~30 s on two busy cores
    BENCH_MIN=0
else
    : "${TOTAL:=555}"
    [[ -n ${OUT:-} ]] || die "OUT is unset: give --out DIR (the device tool sets OUT), or use --dry-run"
    # The config's GPU batch (32 crops of 128²); 12 of the 16 CPU cores make the degradations on the fly.
    # Checkpoints every 250 steps: if the time limit ever has to kill the run, device_weights.py exports the
    # last one.
    SETS=(train.amp=bf16 data.crop=128 data.workers=12 train.checkpoint_every=250)
    BATCH=32
    TEST_LIMIT=100
    TRAIN_FIXED=""
    # The budget covers the run from its data set on (the kernel compiles, a validation and the export
    # included); this covers the imports before, and the hard limit's slack.
    TRAIN_OVERHEAD=60
    BENCH_MIN=60
fi
SETS+=("${EXTRA_SETS[@]}")
PACK_RESERVE=25
[[ $TRAIN_MINUTES =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--train-minutes expects a number, got '$TRAIN_MINUTES'"
[[ $TOTAL =~ ^[0-9]+$ ]] || die "--total expects whole seconds, got '$TOTAL'"

START=$(date +%s.%N)
DEADLINE=$(($(date +%s) + TOTAL))
mkdir -p "$OUT" || die "cannot create $OUT"
OUT=$(cd "$OUT" && pwd)
# A local OUT may hold an earlier session's files: the exit status must not come from those.
(cd "$OUT" && rm -f session.log session.json train.log model.safetensors train_log.csv val_log.csv \
    train_summary.json bench.json)
# Run folders hold 46 MB checkpoints: outside $OUT, so that only the chosen files come back.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/device_session.XXXXXX")
exec > >(tee "$OUT/session.log") 2>&1
TEE_PID=$!
export PYTHONUNBUFFERED=1

left() { echo $((DEADLINE - $(date +%s))); }
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
P_NAME=()
P_SECS=()
P_STATUS=()
declare -A FACT
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

echo "device_session.sh: $( ((DRY)) && echo 'dry run on the CPU' || echo 'GPU session'), total ${TOTAL}s," \
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
    compgen -G ".whl/*.whl" >/dev/null || die "open_clip is missing and .whl/ holds no wheels (carry .whl)"
    # The wheels of kernels/NOTES.md; --no-deps: the image has the rest, and nothing can be fetched there.
    timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || die "installing the carried wheels failed"
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    notes+=("wheels installed: $(cd .whl && echo *.whl)")
fi
if [[ $(spec_origin slerir_core) == "$REPO/slerir_core/__init__.py" ]]; then
    notes+=("project already installed from this checkout")
elif timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . >"$WORK/pip-e.log" 2>&1; then
    notes+=("project installed (pip install --no-deps -e .)")
else
    tail -5 "$WORK/pip-e.log"
    export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
    notes+=("editable install failed: the repo is on PYTHONPATH")
fi
# One process imports everything the phases need, checks the one option this script cannot do without (a GPU
# minute spent on a usage error is lost), and reads the stage to train in: weights go on in the stage that
# trained them (stage-2 weights keep their router and routes frozen); without weights, stage 1 from scratch.
probe=$("$PY" - "$INIT" 2>"$WORK/probe.log" <<'EOF'
import argparse
import platform
import sys

import open_clip
import torch

from training.state import recorded_stage
from training.train import add_arguments

parser = argparse.ArgumentParser()
add_arguments(parser)
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
print(recorded_stage(sys.argv[1]) or 1)
EOF
) || {
    cat "$WORK/probe.log"
    die "the setup check failed"
}
{ read -r versions; read -r STAGE; } <<<"$probe"
echo "$versions"
FACT[versions]=$versions
FACT[commit]=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if ((!DRY)); then
    [[ $versions == *"cuda 1,"* ]] || die "no CUDA GPU here: use --dry-run on a machine without one"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
phase_end "ok; $(printf '%s; ' "${notes[@]}" | sed 's/; $//')"

# -- kernel tests --------------------------------------------------------------------------------------------
phase_begin kernel_tests
# model_integration first: if time runs out, the tests closest to training have run.
tests=(tests/kernels/test_model_integration.py)
if ((DRY)); then
    echo "note: dry run: only the model-integration kernel tests (the whole suite takes ~30 s on 2 cores)"
else
    for f in tests/kernels/test_*.py; do [[ $f == "${tests[0]}" ]] || tests+=("$f"); done
fi
# -c /dev/null: pyproject's warning filters name pydantic, which the GPU image lacks.
pytest_args=(-c /dev/null --rootdir "$REPO" -p no:cacheprovider -v -rfE --durations=10 --disable-warnings)
if ((!DRY)) && "$PY" -c 'import xdist' 2>/dev/null; then
    # Most of the time is Triton compiles, one CPU core each.
    pytest_args+=(-n 8)
fi
limit=$(($(left) < TEST_LIMIT ? $(left) : TEST_LIMIT))
timeout --kill-after=10 "$limit" "$PY" -m pytest "${pytest_args[@]}" "${tests[@]}" 2>&1 | tee "$WORK/kernel_tests.log"
rc=${PIPESTATUS[0]}
n_pass=$(grep -cw PASSED "$WORK/kernel_tests.log")
n_fail=$(grep -cE '(^| )(FAILED|ERROR)( |$)' "$WORK/kernel_tests.log")
if ((rc == 0)); then
    KERNELS=triton
    test_status="passed: $(grep -E '^=+ .*(passed|failed).* in ' "$WORK/kernel_tests.log" | tail -1 | tr -d '=' |
        sed 's/^ *//;s/ *$//')"
elif ((rc == 124 || rc == 137)) && ((n_fail == 0 && n_pass > 0)); then
    # Cut off, not failed: the kernels that ran agree with their twins, so they are used.
    KERNELS=triton
    test_status="time limit ${limit}s reached after $n_pass passed, none failed"
else
    KERNELS=reference
    test_status="FAILED (exit $rc, $n_pass passed, $n_fail failed or errors): training uses the reference ops"
fi
((DRY)) && test_status+="; dry run: subset"
FACT[kernels_tested]=$test_status
phase_end "$test_status"

# -- training ------------------------------------------------------------------------------------------------
init_args=()
if [[ -f $INIT ]]; then
    init_args=(--init "$INIT")
    FACT[init]="$INIT (stage $STAGE)"
else
    echo "note: $INIT is missing: stage 1 starts from scratch"
    FACT[init]="none (from scratch)"
fi
SETS=("train.stage$STAGE.batch_size=$BATCH" "${SETS[@]}")
last_row() { [[ -f $1 ]] && tail -n 1 "$1" | cut -d, -f1; }
mean_rate() {
    # Mean img/s of the last 10 logged rows (the first ones include compiles); the csv module ends rows in \r\n.
    [[ -f $1 ]] && awk -F, '{ sub(/\r$/, "") } NR == 1 { for (i = 1; i <= NF; i++) if ($i == "img_per_s") c = i; next }
        c { v[NR] = $c } END { n = 0; s = 0; for (r = NR; r > 1 && n < 10; r--) if (r in v) { s += v[r]; n++ }
        if (n) printf "%.1f", s / n }' "$1"
}
train_run() { # KERNELS [--resume] -> sets TRAIN_RC
    local kernels=$1 budget limit kenv=()
    if [[ -n $TRAIN_FIXED ]]; then
        budget=$TRAIN_FIXED
    else
        budget=$(awk -v m="$TRAIN_MINUTES" 'BEGIN { printf "%d", m * 60 }')
        local room
        room=$(($(left) - TRAIN_OVERHEAD - BENCH_MIN - PACK_RESERVE))
        ((room < budget)) && budget=$room
        ((budget < 30)) && budget=30
    fi
    limit=$((budget + TRAIN_OVERHEAD))
    [[ $kernels == reference ]] && kenv=(SLERIR_KERNELS=reference)
    local cmd=("$PY" -m slerir_core.cli train --config "$CONFIG" --stage "$STAGE" "${init_args[@]}"
        --time-budget "${budget}s" --out "$RUN" "${@:2}")
    ((DRY)) && cmd+=(--device cpu)
    cmd+=(--set "${SETS[@]}")
    FACT[train_command]="${kenv[*]}${kenv[*]:+ }slerir ${cmd[*]:3}"
    echo "${FACT[train_command]}   (time limit ${limit}s)"
    FACT[train_budget_s]=$budget
    local gpu_log=$WORK/gpu-$kernels.csv mon=""
    if ((!DRY)) && command -v nvidia-smi >/dev/null; then
        # GPU busy share during training: low means the CPU-side degradations are the bottleneck.
        nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -l 5 >"$gpu_log" 2>&1 &
        mon=$!
    fi
    env "${kenv[@]}" timeout --kill-after=15 "$limit" "${cmd[@]}" 2>&1 | tee -a "$OUT/train.log" |
        tr '\r' '\n' | grep --line-buffered -vE '^stage [12]: '
    TRAIN_RC=${PIPESTATUS[0]}
    if [[ -n $mon ]]; then
        kill "$mon" 2>/dev/null
        wait "$mon" 2>/dev/null
        FACT[gpu_util]=$(awk -F', *' '$1 ~ /^[0-9]+$/ { u += $1; m = ($2 > m ? $2 : m); n++ }
            END { if (n) printf "mean %.0f %% over %d samples, peak %d MiB", u / n, n, m }' "$gpu_log")
        echo "GPU utilisation: ${FACT[gpu_util]}"
    fi
    tr '\r' '\n' <"$OUT/train.log" | grep -E '^stage [12]: ' | tail -n 1
}
phase_begin train
RUN=$WORK/run
train_run "$KERNELS"
if ((TRAIN_RC != 0 && TRAIN_RC != 124 && TRAIN_RC != 137)) && [[ $KERNELS == triton ]] && (($(left) > 180)); then
    # A crash, not the time limit: the kernels fail at a shape the tests did not cover. The last checkpoint
    # (every 250 steps) is kept.
    echo "training with the Triton kernels exited $TRAIN_RC: resumed with the reference ops for the time left"
    FACT[train_triton_failure]="exit $TRAIN_RC"
    KERNELS=reference
    train_run reference --resume
fi
steps=$(grep -oE '"step": [0-9]+' "$RUN/summary.json" 2>/dev/null | head -n 1 | grep -oE '[0-9]+$' ||
    last_row "$RUN/train_log.csv")
train_status="exit $TRAIN_RC, $KERNELS kernels$( ((DRY)) && echo ' (on the CPU: the reference ops)')"
train_status+=", budget ${FACT[train_budget_s]}s, stopped at step ${steps:-0}"
rate=$(mean_rate "$RUN/train_log.csv")
[[ -n $rate ]] && train_status+=", ${rate} img/s"
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
if packed=$(PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH} timeout 120 "$PY" scripts/device_weights.py "$RUN" \
    "$OUT/model.safetensors"); then
    pack_status=$packed
else
    pack_status="FAILED: no weights"
fi
FACT[weights]=$pack_status
phase_end "$pack_status"

# -- bench ---------------------------------------------------------------------------------------------------
phase_begin bench
limit=$(($(left) - 10))
if ((limit < 20)); then
    bench_status="skipped: ${limit}s left"
else
    echo "python -m kernels.bench ${BENCH[*]} --json $OUT/bench.json   (time limit ${limit}s)"
    timeout --kill-after=10 "$limit" "$PY" -m kernels.bench "${BENCH[@]}" --json "$OUT/bench.json" 2>&1
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
echo "device_session.sh summary ($( ((DRY)) && echo 'dry run' || echo 'GPU'); ${TOTAL}s allowed):"
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
    printf '  ],\n  "facts": {\n'
    keys=("${!FACT[@]}")
    for i in "${!keys[@]}"; do
        printf '    %s: %s%s\n' "$(json_str "${keys[$i]}")" "$(json_str "${FACT[${keys[$i]}]}")" \
            "$( ((i + 1 < ${#keys[@]})) && echo ,)"
    done
    printf '  }\n}\n'
} >"$OUT/session.json"
status=0
[[ -f $OUT/model.safetensors ]] || status=1
rm -rf "$WORK"
# Let tee write the last lines before the command returns.
exec >&- 2>&-
wait "$TEE_PID"
exit "$status"
