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

python3 "$src/bench/summarize.py" "$results/h100_2026-11-23_gpu_bench.json" \
  "$results/h100_2026-11-23_torch_resnet50.json" > "$tmp/summary.md"
grep -qF "| worker_step/samomentum | resnet50 | 640 | 1.0e+08 | 0.010 | 1.408 | 1136 | 2.63 |" "$tmp/summary.md" ||
  { echo "summarize.py: the P=1e8 samomentum row is missing or wrong"; cat "$tmp/summary.md"; exit 1; }

mkdir -p "$tmp/main" "$tmp/same"
for d in main same; do
  cp "$results/h100_2026-11-23_gpu_bench.json" "$tmp/$d/gpu_bench.json"
  printf 'NVIDIA H100 80GB HBM3\ncommit 7c4525ba103898a9aa4e62d3f87231fd813e6251\n' > "$tmp/$d/device.txt"
done
cat > "$tmp/same/tests.json" <<'JSON'
{"testsuites": [{"name": "CudaBackendTest", "testsuite": [
  {"name": "A", "result": "COMPLETED"},
  {"name": "B", "result": "COMPLETED", "failures": [{"failure": "x"}]},
  {"name": "C", "result": "SKIPPED"}]}]}
JSON
python3 "$src/bench/compare_ab.py" "$tmp/main" "$tmp/same" > "$tmp/ab.md"
expect() {
  grep -qF "$1" "$tmp/ab.md" || { echo "compare_ab.py: missing '$1'"; cat "$tmp/ab.md"; exit 1; }
}
expect "| 7c4525b | same | 2 run, 1 skipped, 1 failed (CudaBackendTest.B) |"
expect "| worker_step/samomentum/resnet50/P=100000000/ratio=0.010 | 1.408 ms, 2.63× floor | 1.408 ms, 2.63× floor, 1.00× faster |"
expect "| server_push/resnet50/P=100000000/ratio=0.010 | 1.517 ms, 5.55× floor | 1.517 ms, 5.55× floor, 1.00× faster |"
echo "bench scripts: ok"
