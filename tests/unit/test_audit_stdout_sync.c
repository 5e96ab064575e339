/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The stdout sink shares the file sink's code but keeps no copy the next
 * start can take back (nothing syncs or reads back the console or the
 * journal): the spool's fdatasync must not be skipped for it, and it reads
 * only synced lines, like a network sink (review: it counted as a file
 * sink, so with stdout and file sinks keeping up the spool was never
 * synced, and a power cut could give the sequence numbers the journal
 * already held to other events).
 */
#include <fcntl.h>
#include <jansson.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "policy.h"
#include "unit.h"

static char dir[] = "/tmp/ag-audit-stdout-XXXXXX";

static void test_stdout_sink_does_not_skip_the_sync(void)
{
	struct policy_sink sink = { .type = SINK_STDOUT };
	struct policy p = { .path = "unit.yaml", .audit = { .sinks = &sink, .nsinks = 1 } };
	struct timespec ts = { 0, 20 * 1000000L };
	int out = dup(STDOUT_FILENO), null = open("/dev/null", O_WRONLY);
	uint64_t before;

	CHECK(out >= 0 && null >= 0);
	dup2(null, STDOUT_FILENO);   /* the events, not the test's report */
	snprintf(p.hash, sizeof(p.hash), "%s", "abc");
	CHECK(audit_set_state_dir(dir) == 0);
	CHECK(audit_open(&p) == 0);
	before = audit_spool_syncs();
	/* events over 8 sync periods (100 ms), delivered as they come */
	for (int i = 0; i < 40; i++) {
		json_t *ev = audit_event(4001, 1, "Open");

		json_object_set_new(ev, "message", json_string("hello"));
		audit_emit(ev);
		nanosleep(&ts, NULL);
	}
	CHECK(audit_spool_syncs() - before >= 4);
	audit_close();
	dup2(out, STDOUT_FILENO);
	close(out);
	close(null);
}

int main(void)
{
	char cmd[100];

	if (!mkdtemp(dir))
		return 2;
	RUN(test_stdout_sink_does_not_skip_the_sync);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	(void)!system(cmd);
	UNIT_DONE("audit_stdout_sync");
}
