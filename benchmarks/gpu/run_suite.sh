#!/usr/bin/env bash
# Runs THERE, on the lent GPU machine, after install_wheels.sh (see README.md beside this file):
#
#   bash benchmarks/gpu/run_suite.sh all     # env, pytest -m gpu, engine rate, bench sweep, summary   (~6 min)
#   bash benchmarks/gpu/run_suite.sh tests   # env, pytest -m gpu, the CPU tests that matter, CPU-vs-GPU parity (~4 min)
#   bash benchmarks/gpu/run_suite.sh quick   # env, pytest -m gpu, engine rate, one bench at 224 px  (~3 min)
#   bash benchmarks/gpu/run_suite.sh bench   # as 'all' without the tests
#
# Writes under $OUT (at most 8 files, no folders): suite.log (everything printed), suite.json (versions,
# engine rate, parity, steps), SUMMARY.md (the table and the issue's targets) and one bench.parquet per
# bench run, renamed <run>.parquet. Prints the short table last. Every step runs under `timeout` with
# what is left of SUITE_LIMIT_S (default 570 s, inside the tool's 600 s), so the summary always prints.
#
# Reads /root/dfscan-data (the transfer calls put .gpu-data/ there; a .gpu-data/ carried with this call
# replaces it) and links it to ../shared/data, where the tests and scanner.bench.synthetic look.
# Knobs (environment): SUITE_LIMIT_S, SUITE_BACKEND (torch: fp16 on CUDA; the image has no TensorRT and
# a CPU-only ONNX Runtime), SUITE_SYNTH_IMAGES (4000), SUITE_ROF_TIMES (30), SUITE_RES (32..1024),
# SUITE_CPU_TESTS (test files), DFSCAN_SITE, DFSCAN_DATA, DFSCAN_WORK.
# SUITE_DRY_CPU=1: a dry run of the plumbing on a machine without a GPU (bench on the CPU with ONNX
# Runtime, a tiny engine rate; nothing moved out of the repository), e.g. here:
#   SUITE_DRY_CPU=1 DFSCAN_DATA=$PWD/.gpu-data DFSCAN_WORK=/tmp/w OUT=/tmp/o SUITE_SYNTH_IMAGES=40 \
#   SUITE_ROF_TIMES=1 SUITE_RES=64 bash benchmarks/gpu/run_suite.sh bench
set -uo pipefail

MODE=${1:-all}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"
OUT=${OUT:-/tmp/dfscan-gpu-out}
mkdir -p "$OUT"
if [[ -z "${_DFSCAN_SUITE_LOGGED:-}" ]]; then  # everything printed also goes to $OUT/suite.log
    export _DFSCAN_SUITE_LOGGED=1
    bash "${BASH_SOURCE[0]}" "$@" 2>&1 | tee "$OUT/suite.log"
    exit "${PIPESTATUS[0]}"
fi

case "$MODE" in all|tests|quick|bench) ;; *) echo "usage: $0 [all|tests|quick|bench]"; exit 2 ;; esac
T0=$SECONDS
LIMIT=${SUITE_LIMIT_S:-570}
SITE=${DFSCAN_SITE:-/root/site}
DATA=${DFSCAN_DATA:-/root/dfscan-data}
WORK=${DFSCAN_WORK:-/root/dfscan-work}
BACKEND=${SUITE_BACKEND:-torch}
SYNTH_IMAGES=${SUITE_SYNTH_IMAGES:-4000}
ROF_TIMES=${SUITE_ROF_TIMES:-30}
SWEEP=${SUITE_RES:-32..1024}
TOOLS=benchmarks/gpu/suite_tools.py
DEVICE=gpu ENV_ARGS=() RATE_ARGS=()
if [[ -n "${SUITE_DRY_CPU:-}" ]]; then
    DEVICE=cpu BACKEND=onnx ENV_ARGS=(--allow-cpu) RATE_ARGS=(--device cpu --res 64 --batches 8 --seconds 0.05)
fi
JSON=$OUT/suite.json
mkdir -p "$WORK"
STEPS=$WORK/steps-$MODE.tsv
: > "$STEPS"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 MPLBACKEND=Agg
if [[ -d "$SITE" ]]; then
    export PYTHONPATH=$SITE:$REPO
else
    export PYTHONPATH=$REPO
    echo "!! no $SITE: install_wheels.sh has not run on this machine (a fresh one?); DALI will be missing"
fi

if [[ -d .gpu-data && -z "${SUITE_DRY_CPU:-}" ]]; then  # carried with this very call
    rm -rf "$DATA" && mv .gpu-data "$DATA"
fi
[[ -d "$DATA/realorfake" ]] || echo "!! no $DATA/realorfake: the tests and the bench need it (see README.md)"
SHARED=$(dirname "$REPO")/shared
if [[ ! -e "$SHARED/data" ]]; then
    mkdir -p "$SHARED" && ln -s "$DATA" "$SHARED/data"
elif [[ "$(readlink -f "$SHARED/data")" != "$(readlink -f "$DATA")" ]]; then
    echo "note: $SHARED/data exists and is not $DATA: the tests read that one"
fi

CKPT=
if [[ -f "$DATA/model.pt" ]]; then CKPT=$DATA/model.pt
elif [[ -f engines/default/mobilenetv2.pt ]]; then CKPT=$REPO/engines/default/mobilenetv2.pt
fi
BENCH_MODEL=() RATE_MODEL=()
if [[ -n "$CKPT" ]]; then BENCH_MODEL=(--engine "$CKPT"); RATE_MODEL=(--checkpoint "$CKPT"); fi
echo "== run_suite $MODE: repo $REPO, out $OUT, data $DATA, model ${CKPT:-untrained mobilenetv2}, backend $BACKEND, limit ${LIMIT}s"

FAILED=0
step() {  # step NAME CMD...: under timeout with what is left, minus 25 s kept for the summary
    local name=$1; shift
    local left=$(( LIMIT - (SECONDS - T0) - 25 ))
    if (( left < 15 )); then
        echo "== SKIP $name: out of time"
        printf '%s\tskipped\t0\tout of time\n' "$name" >> "$STEPS"
        FAILED=1
        return 1
    fi
    echo "== $name (at $((SECONDS - T0)) s; up to ${left} s)"
    local t=$SECONDS
    timeout -k 5 "$left" "$@" 2>&1 | tee "$WORK/$name.log"
    local rc=${PIPESTATUS[0]}
    local note
    note=$(grep -v '^[[:space:]]*$' "$WORK/$name.log" | tail -1 | tr '\t' ' ' | cut -c1-200)
    (( rc == 124 || rc == 137 )) && note="TIMED OUT after ${left} s; $note"
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t))" "$note" >> "$STEPS"
    (( rc == 0 )) || FAILED=1
    return "$rc"
}

bench() {  # bench NAME ARGS...: dfscan bench on the GPU; its bench.parquet -> $OUT/NAME.parquet
    local name=$1; shift
    step "bench-$name" python3 -m scanner.cli bench --device "$DEVICE" --backend "$BACKEND" --quiet --overwrite \
        --out "$WORK/bench/$name" "${BENCH_MODEL[@]}" "$@"
    local rc=$?
    # written after each resolution: a run cut short keeps what it measured
    [[ -f "$WORK/bench/$name/bench.parquet" ]] && cp "$WORK/bench/$name/bench.parquet" "$OUT/$name.parquet"
    return $rc
}

summary() {
    echo "== summary (at $((SECONDS - T0)) s)"
    python3 "$TOOLS" summary --out "$OUT" --steps "$STEPS" || cat "$STEPS"
}

gpu_tests() {
    # "gpu or trt": the TensorRT tests run wherever TensorRT imports (conftest skips them elsewhere)
    step gpu-tests python3 -m pytest -m "gpu or trt" -q -rfEs --continue-on-collection-errors \
        -o cache_dir="$WORK/.pytest_cache" tests/
}

cpu_tests() {  # the tests that drive DALI, the engines and the CLI, on this image's Python/numpy/torch
    local files=() f xdist=()
    for f in ${SUITE_CPU_TESTS:-tests/test_pipeline.py tests/test_run.py tests/test_resume.py tests/test_catalog.py \
            tests/test_hostile_files.py tests/test_hostile_annotations.py tests/test_fuzz.py tests/test_bench.py \
            tests/test_synthetic.py tests/test_default_model.py}; do
        [[ -f "$f" ]] && files+=("$f")
    done
    python3 -c "import xdist" 2>/dev/null && xdist=(-n 8)
    step cpu-tests python3 -m pytest -q -rfEs "${xdist[@]}" -o cache_dir="$WORK/.pytest_cache" "${files[@]}"
}

data_sets() {
    step synth python3 "$TOOLS" synth --n "$1" --dst "$WORK/data/synth" --faces-from "$DATA/realorfake"
    step replicate python3 "$TOOLS" replicate --src "$DATA/realorfake" --split Test-Dev --times "$ROF_TIMES" \
        --dst "$WORK/data/rof"
}

if ! step env python3 "$TOOLS" env --json "$JSON" "${ENV_ARGS[@]}"; then
    echo "!! the environment is broken (above): no point in going on"
    summary
    exit 1
fi

case "$MODE" in
all|bench)
    [[ "$MODE" == all ]] && gpu_tests
    step engine-rate python3 "$TOOLS" engine-rate --json "$JSON" "${RATE_MODEL[@]}" "${RATE_ARGS[@]}"
    data_sets "$SYNTH_IMAGES"
    # first what the targets need (native size), then the sweep, then the baseline on many faces
    bench synthetic-b256 --data "$WORK/data/synth" --split Synthetic --res native --batch-size 256 --no-baseline
    bench "realorfake-x$ROF_TIMES" --data "$WORK/data/rof" --split "Test-Dev-x$ROF_TIMES" --res "$SWEEP" --batch-size 64
    bench synthetic-b64 --data "$WORK/data/synth" --split Synthetic --res native --batch-size 64 --max-faces 6000
    ;;
quick)
    gpu_tests
    step engine-rate python3 "$TOOLS" engine-rate --json "$JSON" --batches 128,256,512 "${RATE_MODEL[@]}" "${RATE_ARGS[@]}"
    data_sets $(( SYNTH_IMAGES / 2 ))
    bench synthetic-b256 --data "$WORK/data/synth" --split Synthetic --res native --batch-size 256 --no-baseline
    bench "realorfake-x$ROF_TIMES" --data "$WORK/data/rof" --split "Test-Dev-x$ROF_TIMES" --res native --batch-size 64
    ;;
tests)
    gpu_tests
    cpu_tests
    step parity python3 "$TOOLS" parity --data "$DATA" --work "$WORK/parity" --json "$JSON" \
        ${CKPT:+--checkpoint "$CKPT"}
    ;;
esac

summary
ls -la "$OUT"
exit "$FAILED"
