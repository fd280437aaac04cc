// The public surface of dgs: include this and link dgs::dgs. The optional
// transports have their own headers: <dgs/mpi.h> (DGS_WITH_MPI) and
// <dgs/nccl.h> (DGS_WITH_NCCL); dgs/version.h says which this build has.
#pragma once

#include "dgs/backend.h"
#include "dgs/bootstrap.h"
#include "dgs/config.h"
#include "dgs/error.h"
#include "dgs/log.h"
#include "dgs/message.h"
#include "dgs/plan.h"
#include "dgs/segments.h"
#include "dgs/server.h"
#include "dgs/transport.h"
#include "dgs/version.h"
#include "dgs/worker.h"
