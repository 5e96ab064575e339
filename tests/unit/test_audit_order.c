/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Sequence order is commit order, with the spool thread stamping the
 * pending queue a chunk at a time (audit.c, "The batch in flight"): worker
 * threads commit deferred events as fast as they can and, every so often,
 * one through audit_emit(), which stamps what is queued before its own.
 * Every event names its thread and its count; in the file sink each
 * thread's counts must come in order, and the sequence must have no gap.
 *
 * Also: a file sink catching up on a backlog holds several batches for one
 * fdatasync (audit.c, SINK_HOLD_EVENTS), and still writes every event
 * once, in order, and acknowledges them all.
 */
#include <jansson.h>
#include <pthread.h>

#include "audit.h"
#include "audit_json.h"
#include "policy.h"
#include "unit.h"

#define THREADS 2
#define EVENTS 12000
#define EMIT_EVERY 97     /* an audit_emit() (drains the queue) now and then */
#define FLUSH_EVERY 16    /* a worker's pass */

static char dir[] = "/tmp/ag-audit-order-XXXXXX";
static char logpath[512];

static void *committer(void *arg)
{
	int t = (int)(long)arg;
	char msg[64];

	audit_defer_begin();
	for (int i = 0; i < EVENTS; i++) {
		snprintf(msg, sizeof(msg), "order t=%d i=%d", t, i);
		if (i % EMIT_EVERY == EMIT_EVERY - 1) {
			json_t *ev = audit_event(4001, 1, "Open");

			json_object_set_new(ev, "message", json_string(msg));
			audit_emit(ev);
			continue;
		}
		struct audit_w *w = audit_begin(4001, 1, "Open");

		aobj_str(&w->top, "message", msg);
		audit_commit(w);
		if (i % FLUSH_EVERY == FLUSH_EVERY - 1)
			audit_defer_flush();
	}
	audit_defer_end();
	return NULL;
}

static void test_commit_order_kept(void)
{
	struct policy_sink sink = { .type = SINK_FILE, .path = logpath };
	struct policy p = { .path = "unit.yaml", .audit = { .sinks = &sink, .nsinks = 1 } };
	pthread_t th[THREADS];
	int next[THREADS] = { 0 }, bad_order = 0, bad_seq = 0, ours = 0;
	long long last_seq = 0;

	snprintf(p.hash, sizeof(p.hash), "%s", "abc");
	CHECK(audit_set_state_dir(dir) == 0);
	CHECK(audit_open(&p) == 0);
	for (long t = 0; t < THREADS; t++)
		CHECK(pthread_create(&th[t], NULL, committer, (void *)t) == 0);
	for (int t = 0; t < THREADS; t++)
		pthread_join(th[t], NULL);
	audit_close();   /* waits for the file sink to catch up */

	FILE *f = fopen(logpath, "r");
	char *line = NULL;
	size_t cap = 0;

	CHECK(f != NULL);
	while (f && getline(&line, &cap, f) > 0) {
		json_t *ev = json_loads(line, 0, NULL);
		json_t *md = json_object_get(ev, "metadata");
		long long seq = json_integer_value(json_object_get(md, "sequence"));
		const char *msg = json_string_value(json_object_get(ev, "message"));
		int t, i;

		if (seq != last_seq + 1 && bad_seq++ < 3)
			fprintf(stderr, "  sequence %lld follows %lld\n", seq, last_seq);
		last_seq = seq;
		if (msg && sscanf(msg, "order t=%d i=%d", &t, &i) == 2 && t >= 0 && t < THREADS) {
			if (i != next[t] && bad_order++ < 3)
				fprintf(stderr, "  thread %d: event %d where %d was next (sequence %lld)\n",
					t, i, next[t], seq);
			next[t] = i + 1;
			ours++;
		}
		json_decref(ev);
	}
	free(line);
	if (f)
		fclose(f);
	CHECK(bad_seq == 0);
	CHECK(bad_order == 0);
	CHECK(ours == THREADS * EVENTS);
}

/* The sequences in the file at path, each checked to follow the one
 * before; returns how many lines, or -1 on a gap or a repeat. */
static long count_in_order(const char *path, long long *last)
{
	FILE *f = fopen(path, "r");
	char *line = NULL;
	size_t cap = 0;
	long n = 0;

	*last = 0;
	if (!f)
		return -1;
	while (getline(&line, &cap, f) > 0) {
		json_t *ev = json_loads(line, 0, NULL);
		long long seq = json_integer_value(
			json_object_get(json_object_get(ev, "metadata"), "sequence"));

		json_decref(ev);
		if (seq != *last + 1) {
			fprintf(stderr, "  sequence %lld follows %lld\n", seq, *last);
			n = -1;
			break;
		}
		*last = seq;
		n++;
	}
	free(line);
	fclose(f);
	return n;
}

#define BACKLOG 40000

static void test_backlog_synced_in_groups(void)
{
	char d2[] = "/tmp/ag-audit-hold-XXXXXX", lp[512], cmd[600];
	struct policy_sink sink = { .type = SINK_FILE, .path = lp };
	struct policy p = { .path = "unit.yaml" };
	uint64_t sends = 0, syncs = 0, acked = 0, seq;
	long long last;

	CHECK(mkdtemp(d2) != NULL);
	snprintf(lp, sizeof(lp), "%s/audit.jsonl", d2);
	snprintf(p.hash, sizeof(p.hash), "%s", "abc");
	/* a run without sinks leaves its events in the spool */
	CHECK(audit_set_state_dir(d2) == 0);
	CHECK(audit_open(&p) == 0);
	for (int i = 0; i < BACKLOG; i++) {
		struct audit_w *w = audit_begin(4001, 1, "Open");

		aobj_int(&w->top, "n", i);
		audit_commit(w);
	}
	audit_close();
	/* the next, with a file sink, finds them all waiting */
	p.audit.sinks = &sink;
	p.audit.nsinks = 1;
	CHECK(audit_open(&p) == 0);
	seq = audit_sequence();
	CHECK(seq > BACKLOG);
	/* the sink thread runs at idle priority: on a host whose CPUs are
	 * busy (the rest of `make test`) only the workers' 200 ms urgency
	 * tick gets it its share, so the wait ticks as a worker would */
	for (int i = 0; i < 3000 && acked < seq; i++) {
		usleep(10000);
		audit_urgency_tick();
		audit_sink_counts(0, &sends, &syncs, &acked);
	}
	fprintf(stderr, "  %llu events: %llu sends, %llu syncs\n", (unsigned long long)seq,
		(unsigned long long)sends, (unsigned long long)syncs);
	CHECK(acked == seq);
	CHECK(sends >= BACKLOG / 4096);   /* no send of more than 4,096 */
	CHECK(syncs >= 1 && syncs * 2 <= sends);   /* 512 a batch, 4,096 a sync */
	/* written once each, in order, every one acknowledged */
	CHECK(count_in_order(lp, &last) == (long)seq);
	CHECK(last == (long long)seq);
	audit_close();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d2);
	(void)!system(cmd);
}

int main(void)
{
	if (!mkdtemp(dir))
		return 2;
	snprintf(logpath, sizeof(logpath), "%s/audit.jsonl", dir);
	RUN(test_commit_order_kept);
	RUN(test_backlog_synced_in_groups);
	char cmd[600];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	(void)!system(cmd);
	UNIT_DONE("audit_order");
}
