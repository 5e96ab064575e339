/* SPDX-License-Identifier: Apache-2.0 */
/*
 * For the spool's unit tests: the spool thread runs at SCHED_IDLE; the
 * enforcer makes it urgent (SCHED_BATCH) when it falls behind (audit.c).
 * Here nothing does, and on a busy machine (a CI host) an idle-class thread
 * may not run for longer than the tests' waits allow: its first tick makes
 * it what an urgent one is, so the timing the tests check is the spool's,
 * not the host's.
 */
#ifndef AGENTGATE_TEST_SPOOL_START_H
#define AGENTGATE_TEST_SPOOL_START_H

#include <stdbool.h>

#include "audit_spool.h"
#include "util.h"

static void urgent_tick(void *arg)
{
	static __thread bool done;

	(void)arg;
	if (!done)
		ag_thread_urgent(0, true);
	done = true;
}

static int start(struct spool *s)
{
	spool_set_tick(s, urgent_tick, NULL);
	return spool_start(s);
}

#endif
