#!/usr/bin/env bash
# End-to-end check of the demo program on a small synthetic data set in the
# Fashion-MNIST format (written here; no download): 1 server and 3 workers for
# 2 epochs on the in-process transport, then the same under mpirun.
#   run_train_fmnist.sh <train_fmnist> [mpiexec]
set -euo pipefail
binary=$1
mpiexec=${2:-}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
python3 - "$dir" <<'PY'
import gzip, random, struct, sys
d = sys.argv[1]
random.seed(7)
def write(name, count):
    labels = [random.randrange(10) for _ in range(count)]
    pixels = bytearray()
    for y in labels:  # class y lights up rows 2y and 2y+1, plus noise
        for r in range(28):
            for c in range(28):
                v = 200 if r // 2 == y else 0
                pixels.append(min(255, v + random.randrange(40)))
    with gzip.open(f"{d}/{name}-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 0x803, count, 28, 28) + bytes(pixels))
    with open(f"{d}/{name}-labels-idx1-ubyte", "wb") as f:
        f.write(struct.pack(">II", 0x801, count) + bytes(labels))
write("train", 1200)
write("t10k", 300)
PY
check() {
  python3 - "$1" "$2" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert len(r["epochs"]) == 2, r
acc = r["epochs"][-1]["test_accuracy"]
assert acc > 0.9, f"accuracy {acc} on an easy synthetic set"
assert r["epochs"][-1]["bytes_pushed"] < r["epochs"][-1]["dense_bytes_each_way"] / 5  # 5% with indices
print(f"{sys.argv[2]}: accuracy {acc:.3f}, {r['epochs'][-1]['bytes_pushed']} bytes pushed")
PY
}
"$binary" --data "$dir" --epochs 2 --workers 3 --backend host --ratio 0.05 --no-progress \
  --json "$dir/local.json" --csv "$dir/local.csv"
check "$dir/local.json" local
test "$(wc -l < "$dir/local.csv")" -eq 3
if [[ -n $mpiexec ]]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
  "$mpiexec" --oversubscribe -np 4 "$binary" --transport mpi --data "$dir" --epochs 2 --backend host \
    --ratio 0.05 --no-progress --json "$dir/mpi.json"
  check "$dir/mpi.json" mpi
fi
# Clear errors, and a failing exit status, for a missing data set and a bad option.
if out=$("$binary" --data "$dir/missing" 2>&1); then echo "accepted a missing data set"; exit 1; fi
grep -q "not found; install the Debian package dataset-fashion-mnist" <<<"$out"
if out=$("$binary" --method sgd 2>&1); then echo "accepted --method sgd"; exit 1; fi
grep -q "unknown method 'sgd'" <<<"$out"
# refused ARGS... TEXT: the options are refused, before any training, saying TEXT.
refused() {
  local want=${*: -1}
  if out=$("$binary" --data "$dir" --backend host --no-progress "${@:1:$#-1}" 2>&1); then
    echo "accepted ${*:1:$#-1}"
    exit 1
  fi
  grep -qF -- "$want" <<<"$out" || { echo "${*:1:$#-1}: $out"; exit 1; }
}
refused --lr -1 "--lr must be a finite number above 0"
refused --workers 2.7 "--workers expects a whole number in [1, 1024], got '2.7'"
refused --batch 20000 "leaves no step per epoch"
refused --json "$dir" "it is a directory"
refused --ratio 0 "ratio = 0 is outside (0, 1]"
DGS_RANK=0 DGS_WORLD_SIZE=2 refused --epochs 1 "pass --transport mpi or --transport nccl"
echo "train_fmnist end to end: ok"
