#!/usr/bin/env bash
# The A/B part of a device session, from the repository root on the lent GPU
# machine, with gpu-ab.tar.xz (made here by scripts/build-gpu-ab.sh) carried
# along: unpacks the builds, runs one part of bench/run_gpu.sh for each of
# them (or for the named ones, in that order), prints the comparison, and
# packs every output into one file, $OUT/ab_PART.tar.xz (the device tool
# brings back at most 8 files).
#
#   bench/run_ab.sh tests [NAME...]   # the GPU tests (CudaBackendTest but its one segment of
#                                     # 10^9, the runtime's cuda variants), no sanitizers
#   bench/run_ab.sh bench [NAME...]   # the targets' benchmarks and update_pass, 5 repetitions
#   bench/run_ab.sh profile NAME...   # Nsight Compute kernel tables (bench/run_gpu.sh profile)
#
# NAME is a folder of gpu-ab/ (main, main+update-3-blocks, a short hash...);
# by default main, then the others in the order they were built. NAME@2 (any
# suffix after @) runs NAME again into its own folder: timing main first and
# last shows the spread between two runs of one build, below which a
# difference is noise. TEST_FILTER, SANITIZE, BENCH_FILTER and REPS override
# the defaults. The outputs are packed after each build, and no build starts
# once AB_BUDGET seconds (default 420) have passed, so a call that runs long
# still brings back what it finished. Back here:
#
#   mkdir -p ab && for f in FILES_AT/ab_*.tar.xz; do tar -xJf "$f" -C ab; done
#   python3 bench/compare_ab.py ab/main ab/NAME...   # with tests and timings side by side
set -uo pipefail
cd "$(dirname "$0")/.."
part=${1:-}
[[ $part == tests || $part == bench || $part == profile ]] ||
  { echo "usage: bench/run_ab.sh tests|bench|profile [NAME...]" >&2; exit 2; }
shift
out=${OUT:-out}
work=$(mktemp -d /tmp/dgs-ab.XXXXXX)
mkdir -p "$out" gpu-ab
if [[ -f gpu-ab.tar.xz ]]; then
  python3 - <<'PY' || { echo "run_ab: cannot unpack gpu-ab.tar.xz" >&2; exit 1; }
import tarfile
with tarfile.open("gpu-ab.tar.xz") as archive:
    safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    archive.extractall("gpu-ab", **safe)
PY
fi
names=("$@")
if [[ ${#names[@]} == 0 ]]; then
  [[ -d gpu-ab/main ]] && names+=(main)
  while read -r name; do
    [[ $name != main && -d gpu-ab/$name ]] && names+=("$name")
  done < <(cat gpu-ab/ORDER 2>/dev/null)
fi
[[ ${#names[@]} -gt 0 ]] || { echo "run_ab: no builds in gpu-ab/ (carry gpu-ab.tar.xz)" >&2; exit 1; }
for name in "${names[@]}"; do
  [[ -x gpu-ab/${name%@*}/dgs_tests ]] || { echo "run_ab: no build gpu-ab/${name%@*}" >&2; exit 1; }
done

started=$SECONDS
done_names=()
for name in "${names[@]}"; do
  if ((SECONDS - started > ${AB_BUDGET:-420})); then
    echo "== $name: not started, $((SECONDS - started)) s into the call (AB_BUDGET ${AB_BUDGET:-420})"
    continue
  fi
  build=gpu-ab/${name%@*}
  echo "== $name: $(cat "$build/COMMIT") ($((SECONDS - started)) s into the call)"
  if [[ $part == tests ]]; then
    CARRY=$build OUT=$work/$name PACK=0 SANITIZE=${SANITIZE:-0} \
      TEST_FILTER=${TEST_FILTER:-CudaBackendTest.*:Backend/*.*/cuda-CudaBackendTest.SelectionIsExactOnOneSegmentOfABillion} \
      bench/run_gpu.sh tests
  elif [[ $part == profile ]]; then
    CARRY=$build OUT=$work/$name PACK=0 bench/run_gpu.sh profile
  else
    CARRY=$build OUT=$work/$name PACK=0 REPS=${REPS:-5} \
      BENCH_FILTER=${BENCH_FILTER:-(worker_step/samomentum|server_push|update_pass|sync_round/.*)/resnet50/P=100000000/} \
      bench/run_gpu.sh bench
  fi
  done_names+=("$name")
  # Packed after each build: a call cut short still brings back the rest.
  tar -C "$work" -cJf "$out/ab_$part.tar.xz" .
done
echo
[[ ${#done_names[@]} -gt 0 ]] && python3 bench/compare_ab.py "${done_names[@]/#/$work/}"
echo "outputs: $out/ab_$part.tar.xz ($(du -h "$out/ab_$part.tar.xz" | cut -f1))"
