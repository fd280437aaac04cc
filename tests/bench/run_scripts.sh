#!/usr/bin/env bash
# The benchmark report scripts on the recorded H100 results of 2026-11-23:
# summarize.py (the bench/README table and the targets) and compare_ab.py
# (several commits of one session side by side), checked against values
# measured in that run.
set -euo pipefail
src=$1
results=$src/bench/results
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# expect FILE TEXT: the report FILE holds the line TEXT.
expect() {
  grep -qF -- "$2" "$1" || { echo "$(basename "$1"): missing '$2'"; cat "$1"; exit 1; }
}

python3 "$src/bench/summarize.py" "$results/h100_2026-11-23_gpu_bench.json" \
  "$results/h100_2026-11-23_torch_resnet50.json" > "$tmp/summary.md"
expect "$tmp/summary.md" "| worker_step/samomentum | resnet50 | 640 | 1.0e+08 | 0.010 | 1.408 | 1136 | 2.63 |"

mkdir -p "$tmp/main" "$tmp/same" "$tmp/good"
for d in main same good; do
  cp "$results/h100_2026-11-23_gpu_bench.json" "$tmp/$d/gpu_bench.json"
  printf 'NVIDIA H100 80GB HBM3\ncommit 7c4525ba103898a9aa4e62d3f87231fd813e6251\n' > "$tmp/$d/device.txt"
done
cat > "$tmp/same/tests.json" <<'JSON'
{"testsuites": [{"name": "CudaBackendTest", "testsuite": [
  {"name": "A", "result": "COMPLETED"},
  {"name": "B", "result": "COMPLETED", "failures": [{"failure": "x"}]},
  {"name": "C", "result": "SKIPPED"}]}]}
JSON
cat > "$tmp/good/tests.json" <<'JSON'
{"testsuites": [{"name": "CudaBackendTest", "testsuite": [{"name": "A", "result": "COMPLETED"}]}]}
JSON
python3 "$src/bench/compare_ab.py" "$tmp/main" "$tmp/same" > "$tmp/ab.md"
python3 "$src/bench/compare_ab.py" "$tmp/main" "$tmp/same" "$tmp/good" > "$tmp/ab_good.md"
expect "$tmp/ab_good.md" "- server_push/resnet50/P=100000000/ratio=0.010: fastest good (1.517 ms); fastest with passing tests good (1.517 ms)"
expect "$tmp/ab.md" "| 7c4525b | same | 2 run, 1 skipped, 1 failed (CudaBackendTest.B) |"
expect "$tmp/ab.md" "| worker_step/samomentum/resnet50/P=100000000/ratio=0.010 | 1.408 ms (cv 0.1%), 2.63× floor | 1.408 ms (cv 0.1%), 2.63× floor, 1.00× faster |"
expect "$tmp/ab.md" "| server_push/resnet50/P=100000000/ratio=0.010 | 1.517 ms (cv 0.3%), 5.55× floor | 1.517 ms (cv 0.3%), 5.55× floor, 1.00× faster |"
expect "$tmp/ab.md" "- worker_step/samomentum/resnet50/P=100000000/ratio=0.010: fastest main (1.408 ms); fastest with passing tests none"
# ncu_table.py on the shape of Nsight Compute's raw CSV: profiler lines
# around it, a units row, thousands separators, kernel names with
# namespaces, templates and parameters.
cat > "$tmp/ncu.csv" <<'CSV'
==PROF== Connected to process 4242 (dgs_bench_gpu)
"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size","Device","CC","dram__bytes.sum","gpu__time_duration.sum","launch__grid_size"
"","","","","","","","","","","","Mbyte","usecond",""
"0","4242","dgs_bench_gpu","h","void dgs::cuda::(anonymous namespace)::update_kernel<(dgs::Method)3>(dgs::cuda::UpdateArgs, const dgs::cuda::Tile *)","1","13","(256, 1, 1)","(396, 1, 1)","0","9.0","1,198.25","576.12","396"
"1","4242","dgs_bench_gpu","h","void dgs::cuda::(anonymous namespace)::resolve_kernel(dgs::cuda::SetView, unsigned int, int, bool)","1","13","(256, 1, 1)","(211, 1, 1)","0","9.0","0.46","4.40","211"
"2","4242","dgs_bench_gpu","h","void dgs::cuda::(anonymous namespace)::resolve_kernel(dgs::cuda::SetView, unsigned int, int, bool)","1","13","(256, 1, 1)","(211, 1, 1)","0","9.0","0.35","4.60","211"
==PROF== Disconnected from process 4242
CSV
python3 "$src/bench/ncu_table.py" "$tmp/ncu.csv" > "$tmp/ncu.md"
expect "$tmp/ncu.md" "| 0 | update_kernel | 396 | 576.12 | 1198.25 |"
expect "$tmp/ncu.md" "| resolve_kernel | 2 | 9.0 | 0.8 |"
echo "bench scripts: ok"
