#!/usr/bin/env bash
# The whole GPU suite in one command, on a machine with an NVIDIA GPU and no MLIR, over the
# artifacts compiled elsewhere into build/ (test/gpu/build_artifacts.py, bench/gpu_build.py and
# each check script's --build):
#
#     test/gpu/run_suite.sh OUT_DIR [COMMIT]
#     STEPS="prefill memcheck" test/gpu/run_suite.sh OUT_DIR   # some steps only
#
# Steps: models (parity with transformers), generate (greedy generation against transformers'
# generate), small, attention, gemm, greedy, paged (kernel checks and timings; greedy: the LM
# head's GEMV with an argmax epilogue; paged: decode attention over the paged cache), decode
# (generation throughput), prefill (whole-model benchmark), profile (each kernel's share of a
# prefill and of a decode step), memcheck (compute-sanitizer over the attention, GEMM,
# greedy-head and paged-attention checks). Where build/bench holds variant builds
# (bench/gpu_build.py --prefetch-kib), decode and profile time them beside each model's own.
#
# Writes into OUT_DIR: log.txt (everything printed), the benchmark-format JSON of each check
# (small_kernels.json, attention.json, gemm.json, greedy_head.json, paged_attention.json,
# prefill.json, decode.json, profile.json) and details.tar.gz (every case's detail). Each step has its own time limit so
# that one slow step cannot hide the others' results, and each step's files reach OUT_DIR as
# soon as it ends, so a run cut short keeps what finished.
set -u
out=${1:?usage: run_suite.sh OUT_DIR [COMMIT]}
commit=${2:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
mkdir -p "$out"
detail=$(mktemp -d)
log="$out/log.txt"
export PYTHONUNBUFFERED=1

# The package maps several top-level folders into one `tessera` namespace (pyproject's
# package-dir); a tree of links gives the same layout without installing anything.
root=$(pwd)
shim=$(mktemp -d)
cp -rs "$root/tessera_ir" "$shim/tessera"
for part in dialects passes lowering runtime; do ln -s "$root/$part" "$shim/tessera/$part"; done
export PYTHONPATH="$shim${PYTHONPATH:+:$PYTHONPATH}"

steps=" ${STEPS:-models generate small attention gemm greedy paged prefill decode profile memcheck} "
export PATH="$PATH:/usr/local/cuda/bin"

step() {  # step SECONDS NAME COMMAND...
    local limit=$1 name=$2
    shift 2
    [[ $steps == *" ${name%%-*} "* || $name == device ]] || return 0
    echo "=== $name (limit ${limit}s)" | tee -a "$log"
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$log"
    echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start))s" | tee -a "$log"
    for json in small_kernels attention gemm greedy_head paged_attention prefill decode profile; do
        [ -f "$detail/$json.json" ] && cp "$detail/$json.json" "$out/"
    done
    tar -czf "$out/details.tar.gz" -C "$detail" .
}

step 20 device nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
step 120 models python3 -m pytest -q -s -p no:cacheprovider test/gpu/test_gpu_models.py \
    --artifacts build/gpu
step 240 generate python3 -m pytest -q -s -p no:cacheprovider test/gpu/test_gpu_generate.py \
    --artifacts build/gpu
step 60 small python3 test/gpu/check_small_kernels.py build/small --out "$detail" --commit "$commit"
step 300 attention python3 test/gpu/check_attention.py build/attention --out "$detail" \
    --commit "$commit"
step 100 gemm python3 test/gpu/check_gemm.py build/gemm --out "$detail" --commit "$commit"
step 90 greedy python3 test/gpu/check_greedy_head.py build/greedy_head --out "$detail" --commit "$commit"
step 120 paged python3 test/gpu/check_paged_attention.py build/paged_attention --out "$detail" \
    --commit "$commit"
step 480 prefill python3 bench/gpu.py build/bench --out "$detail/prefill.json" --commit "$commit"
step 420 decode python3 bench/decode.py build/bench --out "$detail/decode.json" --commit "$commit"
step 120 profile python3 bench/kernel_profile.py build/bench --out "$detail/profile.json" --commit "$commit"
if ! command -v compute-sanitizer >/dev/null; then
    echo "=== compute-sanitizer: not on this machine" | tee -a "$log"
else
    for check in attention gemm greedy_head paged_attention; do
        step 150 "memcheck-$check" compute-sanitizer --tool memcheck --report-api-errors no \
            --print-limit 20 python3 "test/gpu/check_$check.py" "build/$check" --quick
    done
fi

