/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Loss accounting when the disk refuses the spool's writes for a reason
 * other than a full spool (audit.c drop_locked(); review, stop 34): the
 * process may write no file at all (RLIMIT_FSIZE 0, the way a quota or a
 * full file system answers: EFBIG here, EDQUOT or ENOSPC there), so the
 * spool cannot start a new segment. Every event lost must be counted, the
 * loss reported once there is room with the exact count, on_full:
 * fail_closed must refuse new connections meanwhile, and neither the loss
 * report nor a checkpoint that could not be written may count itself as a
 * lost event (both are retried while the disk refuses).
 */
#include <jansson.h>
#include <signal.h>
#include <sys/resource.h>
#include <time.h>

#include "audit.h"
#include "policy.h"
#include "unit.h"

static char dir[] = "/tmp/ag-audit-loss-XXXXXX";

static void emit_one(int i)
{
	char msg[1200];
	json_t *ev = audit_event(4001, 1, "Open");

	/* ~1.4 KB a line: a segment of a 1 MiB spool (128 KiB) takes ~90 */
	memset(msg, 'x', sizeof(msg) - 1);
	msg[sizeof(msg) - 1] = 0;
	snprintf(msg, 32, "loss i=%d ", i);
	msg[strlen(msg)] = 'x';
	json_object_set_new(ev, "message", json_string(msg));
	audit_emit(ev);
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* The recent events (audit tail's ring), parsed. */
static json_t *recent_events(void)
{
	json_t *lines = audit_recent(AUDIT_RECENT), *out = json_array(), *l;
	size_t i;

	json_array_foreach(lines, i, l) {
		json_t *ev = json_loads(json_string_value(l), 0, NULL);

		if (ev)
			json_array_append_new(out, ev);
	}
	json_decref(lines);
	return out;
}

/* The newest Drop event (Event Log Activity, activity "Drop") among the
 * recent ones, or NULL. */
static json_t *last_drop(json_t *recent)
{
	json_t *found = NULL, *ev;
	size_t i;

	json_array_foreach(recent, i, ev) {
		const char *a = json_string_value(json_object_get(ev, "activity_name"));

		if (json_integer_value(json_object_get(ev, "class_uid")) == 1008 && a && strcmp(a, "Drop") == 0)
			found = ev;
	}
	return found;
}

static void test_refused_writes_counted_exactly(void)
{
	struct policy p = { .path = "unit.yaml",
			    .audit = { .on_full = "fail_closed", .spool_max_bytes = 1u << 20 } };
	struct rlimit old, none;
	uint64_t seq0, seq_w;
	int lost, i;

	snprintf(p.hash, sizeof(p.hash), "%s", "abc");
	CHECK(audit_set_state_dir(dir) == 0);
	audit_set_checkpoint(5, 1);     /* checkpoints tried often: every 5 events, every ms */
	CHECK(audit_open(&p) == 0);
	for (i = 0; i < 20; i++)
		emit_one(i);
	sleep_ms(50);                   /* the spool thread writes its buffer */
	seq0 = audit_sequence();
	CHECK(seq0 >= 20);
	CHECK(audit_accepting());

	signal(SIGXFSZ, SIG_IGN);
	CHECK(getrlimit(RLIMIT_FSIZE, &old) == 0);
	none = old;
	none.rlim_cur = 0;
	CHECK(setrlimit(RLIMIT_FSIZE, &none) == 0);
	for (i = 20; i < 420; i++) {
		emit_one(i);
		if (i % 10 == 0)
			audit_flush();      /* the main loop's: checkpoints and loss reports */
	}
	seq_w = audit_sequence();
	/* some went into the segment's buffer; then a new segment was needed */
	CHECK(seq_w < seq0 + 400);
	CHECK(!audit_accepting());      /* fail_closed: new connections refused */
	CHECK(setrlimit(RLIMIT_FSIZE, &old) == 0);

	/* The events lost, less the checkpoints recorded among them. */
	lost = 0;
	{
		json_t *recent = recent_events();
		size_t k;
		json_t *ev;

		json_array_foreach(recent, k, ev) {
			uint64_t s = (uint64_t)json_integer_value(json_object_get(json_object_get(ev, "metadata"),
										    "sequence"));
			const char *m = json_string_value(json_object_get(ev, "message"));

			if (s > seq0 && s <= seq_w && m && strncmp(m, "loss i=", 7) == 0)
				lost++;   /* recorded in the window: not lost */
		}
		json_decref(recent);
	}
	lost = 400 - lost;

	sleep_ms(1100);                 /* past the retry pause of a failed report */
	emit_one(1000);                 /* the loss report goes first, then this */
	CHECK(audit_accepting());
	{
		json_t *recent = recent_events(), *d = last_drop(recent);
		json_t *loss = json_object_get(json_object_get(d, "unmapped"), "loss");
		long long count = (long long)json_integer_value(json_object_get(d, "count"));

		CHECK(d != NULL);
		if (count != lost)
			fprintf(stderr, "  the Drop event counts %lld, %d were lost\n", count, lost);
		CHECK(count == lost);
		CHECK(json_integer_value(json_object_get(loss, "count")) == lost);
		CHECK((uint64_t)json_integer_value(json_object_get(loss, "after_sequence")) <= seq_w);
		CHECK(strstr(json_string_value(json_object_get(d, "message")) ?: "",
			     "could not be written") != NULL);
		json_decref(recent);
	}
	audit_close();
}

int main(void)
{
	if (!mkdtemp(dir))
		return 2;
	RUN(test_refused_writes_counted_exactly);
	char cmd[600];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	(void)!system(cmd);
	UNIT_DONE("audit_loss");
}
