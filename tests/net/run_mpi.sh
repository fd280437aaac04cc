#!/usr/bin/env bash
# Runs an MPI test program and requires its "RESULT ok" line.
#   run_mpi.sh <mpiexec> <ranks> <program> [args...]
# Root (as in CI containers) needs OpenMPI's explicit consent; oversubscription
# lets 5 ranks share 2 cores; --enable-recovery keeps the job alive when a rank
# is killed on purpose.
#
# After a rank was killed, Open MPI 4's MPI_Finalize in the surviving ranks
# sometimes never returns (its closing fence waits for the dead rank; seen in
# 2 of 20 runs on a loaded 2-core machine, every rank stuck in
# ompi_mpi_finalize). The result line is printed before that, so once it is
# there the job gets 30 s to exit and is then stopped, and the script says so.
set -u
mpiexec=$1
ranks=$2
shift 2
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# In its own process group, so that stopping it also stops every rank.
# DGS_MPI_RECOVERY=0: a rank that dies takes the job down (for jobs that
# kill no rank on purpose, so that a crash ends them at once).
recovery=--enable-recovery
[[ ${DGS_MPI_RECOVERY:-1} == 0 ]] && recovery=
setsid "$mpiexec" --oversubscribe $recovery -np "$ranks" "$@" >"$log" 2>&1 &
job=$!
result_seen=""
while kill -0 "$job" 2>/dev/null; do
  if [[ -z $result_seen ]] && grep -q "^RESULT " "$log"; then result_seen=$SECONDS; fi
  if [[ -n $result_seen ]] && ((SECONDS - result_seen > 30)); then
    echo "run_mpi.sh: the job printed its result but did not exit within 30 s (MPI_Finalize" \
      "around a killed rank); stopping it" >>"$log"
    kill -TERM -- "-$job" 2>/dev/null
    sleep 2
    kill -KILL -- "-$job" 2>/dev/null
    break
  fi
  sleep 0.2
done
wait "$job" 2>/dev/null
status=$?
cat "$log"
grep -q "^RESULT ok" "$log" || { echo "run_mpi.sh: no 'RESULT ok' (mpirun exit $status)"; exit 1; }
