#!/usr/bin/env bash
# Every GPU check of dgs, on a lent GPU machine, from the repository root, with
# gpu-carry/ built by scripts/build-gpu.sh carried along. Writes under $OUT.
#
#   bench/run_gpu.sh tests       # whole suite (GPU tests must run), sanitizers
#                                # (TEST_FILTER=gtest filter, SANITIZE=0 skips them)
#   bench/run_gpu.sh bench       # microbenchmarks (REPS=5 repetitions each)
#   bench/run_gpu.sh baselines   # PyTorch baselines
#   bench/run_gpu.sh summary     # the table and targets from bench + baselines
#   bench/run_gpu.sh demo        # Fashion-MNIST CNN: 4 and 16 workers, NCCL loopback
#   bench/run_gpu.sh profile     # Nsight Compute: each kernel of a worker step and a
#                                # server push, and the update pass's stall reasons
#
# Parts can be combined (bench/run_gpu.sh baselines demo); each fits one
# device call (under 10 minutes): bench/run_gpu.sh baselines bench summary
# measures everything in one run and prints the table bench/README.md and
# bench/results/ are updated from. Every program runs under `timeout`, so a
# hang costs its part, not the call. When more than 7 files were written,
# they are packed into $OUT/run_gpu.tar.xz (the device tool brings back at
# most 8 files; PACK=0 leaves them, as bench/run_ab.sh does). Nsight Compute
# runs with --clock-control none: the card's clocks are left as found
# (../.library/device/METHOD.md), so its times compare with the benchmark's.
set -uo pipefail
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

for part in "${@:-tests}"; do
case $part in
  tests)
    timeout "${TESTS_TIMEOUT:-480}" "$carry/dgs_tests" --gtest_output="json:$out/tests.json" \
      ${TEST_FILTER:+--gtest_filter="$TEST_FILTER"} > "$out/tests.log" 2>&1
    echo "dgs_tests exit $?"
    python3 -c 'import sys; sys.path.insert(0, "bench"); from compare_ab import count_tests
run, skipped, failed, _ = count_tests(sys.argv[1])
print(f"tests run {run}, skipped {skipped}, failed {failed}")' "$out/tests.json"
    grep -E "^\[  FAILED|Failure" "$out/tests.log" | head -40
    # With the capture tests: the histogram passes' shared bins and warp captures
    # (FirstDigitTile). Resident grids capped at 8 blocks, so that on these small
    # tests each block still takes many tiles, as it does at P = 10^8.
    filter='CudaBackendTest.WorkerStepsSelectFromTheirCaptureOnceTheyHaveAGuess:CudaBackendTest.ReplySelectionFallsBackToTheDataWhenItsCaptureMisses:CudaBackendTest.ServerKernelsMatchTheHost:CudaBackendTest.SyncRoundsMatchTheHost:CudaBackendTest.ReplyFoldAndEvaluationPointMatchTheHost:CudaBackendTest.ValidationReportsWhatTheHostReports:CudaBackendTest.NarrowWireValuesAndSchedulesMatchTheHost'
    [[ ${SANITIZE:-1} == 1 ]] && for tool in memcheck racecheck; do
      DGS_RESIDENT_GRID_CAP=8 timeout 240 compute-sanitizer --tool "$tool" --error-exitcode 9 \
        "$carry/dgs_tests" \
        --gtest_filter="$filter" \
        > "$out/sanitizer_$tool.log" 2>&1
      echo "compute-sanitizer $tool exit $?: $(grep -E '(ERROR|RACECHECK) SUMMARY' "$out/sanitizer_$tool.log" | tail -1)"
    done
    ;;
  bench)
    timeout "${BENCH_TIMEOUT:-560}" "$carry/dgs_bench_gpu" --shapes=bench/shapes --repetitions="${REPS:-5}" \
      --benchmark_out="$out/gpu_bench.json" --benchmark_out_format=json ${QUICK:+--quick} \
      ${BENCH_FILTER:+--benchmark_filter="$BENCH_FILTER"} > "$out/gpu_bench.log" 2>&1
    echo "dgs_bench_gpu exit $?"
    grep -E "_median|error" "$out/gpu_bench.log" | head -80
    ;;
  baselines)
    for shape in resnet50 gpt2; do
      timeout 240 python3 bench/torch_baseline.py --shape "$shape" --p 100000000 --ratio 0.01 \
        --out "$out/torch_$shape.json" > "/tmp/torch_$shape.log" 2>&1
      status=$?
      echo "torch baseline $shape exit $status: $(grep -E '"(reference_kthvalue_s|topk_s)"' "$out/torch_$shape.json" | tr -d '\n ')"
      [[ $status == 0 ]] || cp "/tmp/torch_$shape.log" "$out/"
    done
    ;;
  summary)
    python3 bench/summarize.py "${BENCH_JSON:-$out/gpu_bench.json}" "$out"/torch_*.json | tee "$out/summary.md"
    ;;
  demo)
    for workers in 4 16; do
      timeout 150 "$carry/train_fmnist" --data "$carry/fmnist" --backend cuda --workers "$workers" \
        --epochs 3 --no-progress \
        --json "$out/fmnist_cuda_${workers}workers.json" > "$out/fmnist_${workers}.log" 2>&1
      echo "train_fmnist --workers $workers exit $?"; tail -4 "$out/fmnist_${workers}.log"
    done
    timeout 120 "$carry/train_fmnist" --data "$carry/fmnist" --backend cuda --workers 4 --epochs 1 \
      --no-progress --transport nccl \
      --json "$out/fmnist_cuda_nccl_loopback.json" > "$out/fmnist_nccl.log" 2>&1
    echo "train_fmnist --transport nccl (one-GPU loopback) exit $?"; tail -3 "$out/fmnist_nccl.log"
    ;;
  profile)
    # Time, DRAM bytes and grid of each kernel over about two worker steps and
    # two server pushes (P = 1e8, ResNet-50 tensors, 1%), kernels serialized
    # by Nsight Compute (PROFILE_SKIP and PROFILE_COUNT move the window of
    # launches past the setup and warm-up), then the update pass's speed of
    # light, memory workload, occupancy and warp stall reasons.
    ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
    if [[ -z $ncu ]]; then
      echo "profile: no ncu (Nsight Compute) on this machine"
    else
      for target in worker_step/samomentum server_push; do
        name=${target%%/*}
        timeout 240 "$ncu" --clock-control none --print-units base --csv --page raw \
          --metrics gpu__time_duration.sum,dram__bytes.sum,launch__grid_size \
          --launch-skip "${PROFILE_SKIP:-200}" --launch-count "${PROFILE_COUNT:-90}" \
          --log-file "$out/ncu_$name.csv" \
          "$carry/dgs_bench_gpu" --shapes=bench/shapes --repetitions=1 \
          --benchmark_filter="^$target/resnet50/P=100000000/ratio=0.010" > "$out/ncu_$name.log" 2>&1
        echo "ncu $target exit $?"
        python3 bench/ncu_table.py "$out/ncu_$name.csv" | tail -30
      done
      timeout 240 "$ncu" --clock-control none --kernel-name regex:update_kernel --launch-skip 3 \
        --launch-count 1 \
        --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy \
        --section LaunchStats --section WarpStateStats \
        "$carry/dgs_bench_gpu" --shapes=bench/shapes --repetitions=1 \
        --benchmark_filter="^worker_step/samomentum/resnet50/P=100000000/ratio=0.010" \
        > "$out/ncu_update_pass.txt" 2>&1
      echo "ncu update_kernel exit $?"
      grep -E "Duration|DRAM Throughput|Memory Throughput|Registers Per|Achieved Occupancy|Stall|Warp Cycles" \
        "$out/ncu_update_pass.txt" | head -30
    fi
    ;;
  *) echo "unknown part $part (tests, bench, baselines, summary, demo or profile)"; exit 2 ;;
esac
done
# The device tool brings back at most 8 files: pack them when there are more.
files=$(find "$out" -type f | wc -l)
if [[ ${PACK:-1} == 1 && $files -gt 7 ]]; then
  tar -C "$out" -cJf /tmp/run_gpu.tar.xz . && find "$out" -mindepth 1 -delete &&
    mv /tmp/run_gpu.tar.xz "$out/"
  echo "$files outputs packed into $out/run_gpu.tar.xz (tar -xJf it)"
fi
