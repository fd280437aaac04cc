#!/usr/bin/env bash
# Every GPU check of dgs, on a lent GPU machine, from the repository root, with
# gpu-carry/ built by scripts/build-gpu.sh carried along. Writes under $OUT.
#
#   bench/run_gpu.sh tests     # whole suite (GPU tests must run), sanitizers
#   bench/run_gpu.sh bench     # microbenchmarks and PyTorch baselines
#   bench/run_gpu.sh demo      # Fashion-MNIST CNN, 4 and 16 workers
#
# Each part fits one device call (under 10 minutes). The summary it prints
# last is what bench/README.md and bench/results/ are updated from.
set -uo pipefail
part=${1:-tests}
carry=${CARRY:-gpu-carry}
out=${OUT:-out}
mkdir -p "$out"
# cuDNN and cuBLAS come with the machine's PyTorch.
torch_libs=$(python3 - <<'PY' 2>/dev/null
import glob, os, nvidia
roots = [os.path.dirname(p) for p in nvidia.__path__]
print(":".join(sorted({os.path.dirname(f) for r in roots for f in glob.glob(r + "/nvidia/*/lib/*.so*")})))
PY
)
export LD_LIBRARY_PATH="$carry/lib:${torch_libs}:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/device.txt"
echo "commit $(cat "$carry/COMMIT" | tr '\n' ' ')" | tee -a "$out/device.txt"
date -u +%Y-%m-%dT%H:%M:%SZ | tee -a "$out/device.txt"

case $part in
  tests)
    "$carry/dgs_tests" --gtest_output="json:$out/tests.json" > "$out/tests.log" 2>&1
    echo "dgs_tests exit $?"
    python3 - "$out/tests.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
run = skipped = failed = 0
for suite in r["testsuites"]:
    for t in suite["testsuite"]:
        if t.get("result") == "SKIPPED" or t.get("status") == "NOTRUN":
            skipped += 1
        else:
            run += 1
            failed += bool(t.get("failures"))
print(f"tests run {run}, skipped {skipped}, failed {failed}")
PY
    grep -E "^\[  FAILED|Failure" "$out/tests.log" | head -40
    filter='CudaBackendTest.ServerKernelsMatchTheHost:CudaBackendTest.ReplyFoldAndEvaluationPointMatchTheHost:CudaBackendTest.ValidationReportsWhatTheHostReports:CudaBackendTest.NarrowWireValuesAndSchedulesMatchTheHost'
    for tool in memcheck racecheck; do
      compute-sanitizer --tool "$tool" --error-exitcode 9 "$carry/dgs_tests" --gtest_filter="$filter" \
        > "$out/sanitizer_$tool.log" 2>&1
      echo "compute-sanitizer $tool exit $? ($(grep -c 'ERROR SUMMARY' "$out/sanitizer_$tool.log") summaries): $(grep 'ERROR SUMMARY' "$out/sanitizer_$tool.log" | tail -1)"
    done
    ;;
  bench)
    "$carry/dgs_bench_gpu" --shapes=bench/shapes --benchmark_out="$out/gpu_bench.json" \
      --benchmark_out_format=json ${QUICK:+--quick} > "$out/gpu_bench.log" 2>&1
    echo "dgs_bench_gpu exit $?"
    for shape in resnet50 gpt2; do
      python3 bench/torch_baseline.py --shape "$shape" --p 100000000 --ratio 0.01 \
        --out "$out/torch_$shape.json" > "$out/torch_$shape.log" 2>&1
      echo "torch baseline $shape exit $?"
    done
    python3 bench/summarize.py "$out/gpu_bench.json" "$out"/torch_*.json | tee "$out/summary.md"
    ;;
  demo)
    for workers in 4 16; do
      "$carry/train_fmnist" --data "$carry/fmnist" --workers "$workers" --epochs 3 --no-progress \
        --json "$out/fmnist_cuda_${workers}workers.json" 2>&1 | tee "$out/fmnist_${workers}.log" | tail -4
    done
    ;;
  *) echo "unknown part $part (tests, bench or demo)"; exit 2 ;;
esac
