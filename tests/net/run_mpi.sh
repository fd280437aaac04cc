#!/usr/bin/env bash
# Runs an MPI test program and requires its "RESULT ok" line.
#   run_mpi.sh <mpiexec> <ranks> <program> [args...]
# Root (as in CI containers) needs OpenMPI's explicit consent; oversubscription
# lets 5 ranks share 2 cores; --enable-recovery keeps the job alive when a rank
# is killed on purpose.
set -u
mpiexec=$1
ranks=$2
shift 2
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
output=$("$mpiexec" --oversubscribe --enable-recovery -np "$ranks" "$@" 2>&1)
status=$?
echo "$output"
grep -q "^RESULT ok" <<<"$output" || { echo "run_mpi.sh: no 'RESULT ok' (mpirun exit $status)"; exit 1; }
