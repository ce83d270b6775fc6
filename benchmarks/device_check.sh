#!/usr/bin/env bash
# The one call to make on a lent GPU machine (see benchmarks/README.md): from the repository root,
#
#     bash benchmarks/device_check.sh
#
# 1. env        nvidia-smi, Python / torch / Triton / CUDA / nvcc / compute-sanitizer versions
# 2. build      the optional CUDA extension (prebuilt or just in time), so later steps don't pay it
# 3. tests      python -m pytest -x -q tests -m gpu (FUSED_INCEPTION_AUTOTUNE=0: default tiles, fewer compiles)
# 4. memcheck   compute-sanitizer memcheck on benchmarks/sanitize_cases.py (caching allocator off)
# 5. racecheck  compute-sanitizer racecheck on benchmarks/sanitize_cases.py --quick
# 6. block      benchmarks/bench_block.py (see BLOCK_ARGS below)
# 7. net        benchmarks/bench_googlenet.py (see NET_ARGS below)
# 8. overhead   benchmarks/op_overhead.py: host time per call
# 9. v3         benchmarks/bench_inception_v3.py (see V3_ARGS below)
# then the benchmarks' headline tables and a table of the steps, printed last.
#
# Every step runs under `timeout` and a failing step does not stop the others. The defaults add up
# to 9.5 minutes (T_* below; override any, e.g. T_BLOCK=300). Results and the full log go to $OUT
# when it is set (the device tool brings back at most 8 files: this writes 8, the benchmarks' tables
# only in the log: --no-table-file), else benchmarks/results. STEPS="block net" runs a subset.
# Nothing here changes the GPU's settings (clocks, power, modes).
#
# Budget choices of the defaults (each overridable through BLOCK_ARGS / NET_ARGS / V3_ARGS):
# - bench_block runs the three block families (3a: 28x28, 4e: 14x14, 5b: 7x7) at batch 1, 32, 256
#   with --compile-mode reduce-overhead (Inductor + CUDA graphs): max-autotune's conv autotuning
#   takes minutes per shape, more than this call has. BLOCK_ARGS="" runs the script's own defaults
#   (all nine blocks, max-autotune).
# - bench_googlenet runs fp16 at batch 1, 32, 256 without the compile provider (a whole-network
#   compile per case does not fit, nor the fused launcher's first autotuning of nine block shapes
#   in two dtypes); NET_ARGS="" runs its defaults (fp16 and fp32, fp32 at batch 10, compile).
# - bench_inception_v3 runs fp16 at batch 1 and 50 (pytorch-fid's batch) without compile, for the
#   same reason; V3_ARGS="" runs its defaults (fp16 and fp32 at 1, 50, 256, compile), "--fid ..."
#   pytorch-fid's network.
set -u
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
OUTDIR=${OUT:-benchmarks/results}
mkdir -p "$OUTDIR"
LOG="$OUTDIR/device_check.log"
: >"$LOG"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

T_ENV=${T_ENV:-20}
T_BUILD=${T_BUILD:-75}
T_TESTS=${T_TESTS:-80}
T_MEMCHECK=${T_MEMCHECK:-55}
T_RACECHECK=${T_RACECHECK:-45}
T_BLOCK=${T_BLOCK:-120}
T_NET=${T_NET:-70}
T_OVERHEAD=${T_OVERHEAD:-25}
T_V3=${T_V3:-80}
STEPS=${STEPS:-"env build tests memcheck racecheck block net overhead v3"}
BLOCK_ARGS=${BLOCK_ARGS-"--blocks 3a,4e,5b --compile-mode reduce-overhead --warmup 10 --rep 50"}
NET_ARGS=${NET_ARGS-"--dtype fp16 --extra none --providers eager,eager-graph,fused-triton,fused-triton-graph,fused-cuda --warmup 10 --rep 100"}
V3_ARGS=${V3_ARGS-"--dtype fp16 --batches 1,50 --providers eager,eager-graph,fused-triton,fused-triton-graph,fused-cuda --warmup 10 --rep 100"}
# Start no new benchmark case within ~40 s of the step's timeout, so the table, JSON and PNG get written.
BLOCK_MINUTES=$(awk -v t="$T_BLOCK" 'BEGIN { m = (t - 45) / 60; if (m < 0.2) m = 0.2; printf "%.2f", m }')
NET_MINUTES=$(awk -v t="$T_NET" 'BEGIN { m = (t - 45) / 60; if (m < 0.2) m = 0.2; printf "%.2f", m }')
V3_MINUTES=$(awk -v t="$T_V3" 'BEGIN { m = (t - 45) / 60; if (m < 0.2) m = 0.2; printf "%.2f", m }')

NAMES=()
RESULTS=()
SECS=()

# step NAME TIMEOUT_S COMMAND...: run it under timeout, output to the terminal and the log.
step() {
    local name=$1 secs=$2
    shift 2
    case " $STEPS " in *" $name "*) ;; *) return 0 ;; esac
    echo "=== [$name] timeout ${secs}s: $*" | tee -a "$LOG"
    local t0=$SECONDS
    timeout -k 10 "$secs" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    local status="ok"
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then status="TIMEOUT"; elif [ "$rc" -ne 0 ]; then status="FAIL rc=$rc"; fi
    NAMES+=("$name")
    RESULTS+=("$status")
    SECS+=("$((SECONDS - t0))")
    echo "=== [$name] $status after $((SECONDS - t0))s" | tee -a "$LOG"
}

SAN=(compute-sanitizer --target-processes application-only --error-exitcode 1 --print-limit 30)

step env "$T_ENV" "$PY" benchmarks/device_info.py env
step build "$T_BUILD" "$PY" benchmarks/device_info.py build-ext
step tests "$T_TESTS" env FUSED_INCEPTION_AUTOTUNE=0 "$PY" -m pytest -x -q -p no:cacheprovider tests -m gpu
step memcheck "$T_MEMCHECK" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "${SAN[@]}" --tool memcheck \
    "$PY" benchmarks/sanitize_cases.py
step racecheck "$T_RACECHECK" "${SAN[@]}" --tool racecheck "$PY" benchmarks/sanitize_cases.py --quick
# shellcheck disable=SC2086  # the *_ARGS are word lists on purpose
step block "$T_BLOCK" "$PY" benchmarks/bench_block.py --out "$OUTDIR" --no-table-file --max-minutes "$BLOCK_MINUTES" \
    $BLOCK_ARGS
# shellcheck disable=SC2086
step net "$T_NET" "$PY" benchmarks/bench_googlenet.py --out "$OUTDIR" --no-table-file --max-minutes "$NET_MINUTES" \
    $NET_ARGS
step overhead "$T_OVERHEAD" "$PY" benchmarks/op_overhead.py --iters 500 --out "$OUTDIR/op_overhead.json"
# shellcheck disable=SC2086
step v3 "$T_V3" "$PY" benchmarks/bench_inception_v3.py --out "$OUTDIR" --no-table-file --max-minutes "$V3_MINUTES" \
    $V3_ARGS

{
    echo
    echo "================================ summary ================================"
    jsons=()
    case " $STEPS " in *" block "*) jsons+=("$OUTDIR/bench_block.json") ;; esac
    case " $STEPS " in *" net "*) jsons+=("$OUTDIR/bench_googlenet.json") ;; esac
    case " $STEPS " in *" v3 "*) jsons+=("$OUTDIR/bench_inception_v3.json") ;; esac
    if [ ${#jsons[@]} -gt 0 ]; then "$PY" benchmarks/report.py summary "${jsons[@]}"; fi
    printf '%-10s %-12s %6s\n' step result seconds
    nfail=0
    for i in "${!NAMES[@]}"; do
        printf '%-10s %-12s %6s\n' "${NAMES[$i]}" "${RESULTS[$i]}" "${SECS[$i]}"
        [ "${RESULTS[$i]}" = ok ] || nfail=$((nfail + 1))
    done
    echo "device_check: ${#NAMES[@]} step(s), $nfail not ok; total ${SECONDS}s; log and results in $OUTDIR"
} 2>&1 | tee -a "$LOG"
