// The whole public surface of dgs: include this and link dgs::dgs.
#pragma once

#include "dgs/config.h"
#include "dgs/error.h"
#include "dgs/message.h"
#include "dgs/plan.h"
#include "dgs/segments.h"
#include "dgs/version.h"
