#!/usr/bin/env bash
# Starts 3 processes of the bootstrap check with a file or TCP rendezvous.
#   run_bootstrap.sh <bootstrap_check binary> file|tcp
set -u
binary=$1
kind=$2
ranks=3
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
if [[ $kind == file ]]; then
  rendezvous="file:$dir/job-$$"
else
  port=$((20000 + (RANDOM % 12000)))  # below the ephemeral range (32768 on)
  rendezvous="tcp:127.0.0.1:$port"
fi
pids=()
for ((r = ranks - 1; r >= 0; r--)); do  # rank 0 last: the others must wait for it
  DGS_RANK=$r DGS_WORLD_SIZE=$ranks DGS_RENDEZVOUS=$rendezvous timeout 90 "$binary" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
if [[ $kind == file ]] && compgen -G "$dir/job-$$*" >/dev/null; then
  echo "rank 0 left rendezvous files behind: $(ls "$dir")"
  status=1
fi
exit $status
