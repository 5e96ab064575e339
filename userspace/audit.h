/* SPDX-License-Identifier: Apache-2.0 */
/*
 * audit: one place that builds OCSF 1.8.0 events and delivers them.
 *
 * audit_emit() assigns metadata.uid (UUIDv7) and a gap-free
 * metadata.sequence under one lock and appends the JSON line to the on-disk
 * spool (audit_spool.h); the sequence is the spool's, so it continues across
 * restarts. Each sink (audit_sink.h) runs on its own thread and reads the
 * spool at its own cursor: a slow or dead sink never holds up a decision.
 * The line is also kept in a bounded in-memory ring for `agentgate audit
 * tail` and pushed to followers (never blocking: one that cannot keep up is
 * dropped). Every line carries metadata.prev_hash, and signed checkpoints
 * are interleaved (audit_chain.h). Events never carry a secret or an
 * unmasked value; builders take only what may be shown.
 *
 * When the spool is full (audit.spool.max_bytes), on_full decides:
 * drop_newest drops the event (counted; an Event Log Activity 1008 "Drop"
 * event with the count and the neighbouring sequence is written once there
 * is room), fail_closed does the same and audit_accepting() turns false so
 * new agent connections are refused until audit can be recorded again.
 */
#ifndef AGENTGATE_AUDIT_H
#define AGENTGATE_AUDIT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include "audit_json.h"
#include "policy.h"

#define OCSF_VERSION "1.8.0"
#define AUDIT_RECENT 1024
#define AUDIT_CHECKPOINT_EVERY 1000     /* events */
#define AUDIT_CHECKPOINT_MS 60000       /* at most this long between checkpoints */

/* Tamper evidence (format in audit_chain.h). Loads or creates the Ed25519
 * checkpoint key <dir>/audit-signing.key (0600; public half exported as
 * <dir>/audit-signing.pub) and the saved chain head, so the run's first event
 * chains from the last checkpoint of the previous run. Call before
 * audit_open(). Without it events are still hash-chained (from zeros) but
 * no checkpoints are signed. 0 or -errno (-EPERM: key file readable by
 * others). */
int audit_set_state_dir(const char *dir);
/* Checkpoint after every_events events or every_ms ms, whichever comes
 * first (0: the default). The time limit is checked in audit_flush(); a
 * final checkpoint is written by audit_close(). */
void audit_set_checkpoint(uint64_t every_events, uint64_t every_ms);
/* key_id of the signing key ("" before audit_set_state_dir), for `status`. */
const char *audit_key_fingerprint(void);

/* Opens the spool (audit.spool.dir, else <state dir>/spool: call
 * audit_set_state_dir() first) and starts one thread per sink, and the
 * session recorder when audit.recording is set. p must outlive
 * audit_close(). 0 or -errno. */
int audit_open(const struct policy *p);
/* Final checkpoint, gives the sinks up to 2 s to catch up, stops them. What
 * they did not acknowledge stays in the spool for the next run. */
void audit_close(void);
/* Time-based checkpoints and the loss event once the spool has room again;
 * the main loop calls it at least every 250 ms. */
void audit_flush(void);
/* false while on_full is fail_closed and an event could not be recorded:
 * the enforcer refuses new agent connections. Lock-free. */
bool audit_accepting(void);
/* SIGHUP: file sinks reopen their path (after an external logrotate). */
void audit_reopen(void);
/* The policy hash stamped on every event (changes on reload). */
void audit_set_policy(const struct policy *p);

/* A new event of class_uid (4001, 4003, 6002, 1008, ...) with its class,
 * category and type fields filled. The caller adds the rest, then emits. */
json_t *audit_event(int class_uid, int activity_id, const char *activity_name);
/* Takes ownership of ev. Thread-safe. */
void audit_emit(json_t *ev);

/* Agent context shared by every event about an agent's activity. */
struct audit_agent {
	const char *name;        /* NULL: unknown */
	const char *cgroup;
	uint32_t pid, tid, uid;
	const char *comm;
	uint64_t cgroup_id;
	/* principal: iss/sub as verified by the identity source; NULL iss means
	 * the local source (iss "local", sub = agent name, unverified) */
	const char *iss, *sub;
	bool verified;
	/* The policy that decides for this connection (after agentgate reload,
	 * an open connection keeps the one it started with): written as
	 * unmapped.policy. NULL: the running policy's, added at emit. */
	const char *policy_hash, *policy_path;
};
void audit_add_agent(json_t *ev, const struct audit_agent *a);
/* status/disposition/action: allowed (1) or blocked (2), with observe marking. */
void audit_add_verdict(json_t *ev, bool allowed, bool would_deny, const char *rule,
		       const char *reason);

/* Last n events (n <= AUDIT_RECENT), oldest first, as a JSON array of strings. */
/*
 * The fast way to build an event, for those emitted per statement, request
 * or connection: members are written straight into per-thread buffers
 * (audit_json.h), no jansson tree. top holds the event's own members,
 * um those of its "unmapped" object; audit_commit() closes both, adds
 * unmapped.policy, time and metadata, and spools the line exactly as
 * audit_emit() does. A writer belongs to the thread that began it, until
 * audit_commit() or audit_discard(). Never NULL.
 */
struct audit_w_cache;
struct audit_w {
	struct audit_obj top, um;
	bool heap;   /* begun while the thread's own writer was in use */
	bool busy;
	struct audit_w_cache *cache;   /* the thread's writer: parts written before */
	bool own_policy;               /* the agent's members named its policy */
};
struct audit_w *audit_begin(int class_uid, int activity_id, const char *activity_name);
void audit_w_agent(struct audit_w *w, const struct audit_agent *a);
void audit_w_verdict(struct audit_w *w, bool allowed, bool would_deny, const char *rule,
		     const char *reason);
void audit_commit(struct audit_w *w);
void audit_discard(struct audit_w *w);
/* From now on this thread's audit_commit() queues events (bounded), and
 * audit_defer_flush() spools them: a worker calls it after each pass over
 * its ready sockets, so answers go out before the emit path runs and one
 * lock round serves many events. Sequence numbers are assigned at the
 * flush. */
void audit_defer_begin(void);
void audit_defer_flush(void);
/* Called by the workers about every 200 ms: makes an audit thread that is
 * behind in time urgent (see "Urgency" in audit.c). */
void audit_urgency_tick(void);
/* How many times an audit thread was made urgent (status). */
/* Events sent to spool/dead-letter.jsonl since start; with discarded, how
 * many of those the file's rotation dropped since (status counters). */
uint64_t audit_dead_lettered(bool discarded);
uint64_t audit_made_urgent(void);
/* How many times a worker stamped the pending queue itself, the spool
 * thread being PENDING_MAX_BYTES behind (status). */
uint64_t audit_worker_drains(void);
void audit_defer_end(void);   /* flushes, frees the queue, commits at once again */
/* Sink i's sends and syncs so far (a sink with ops->sync: the file sink;
 * a backlog is caught up with fewer syncs than sends), and the last
 * sequence it acknowledged. For tests. */
void audit_sink_counts(int i, uint64_t *sends, uint64_t *syncs, uint64_t *acked);

json_t *audit_recent(int n);
/* Adds a follower fd (non-blocking); audit owns and closes it. */
void audit_follow(int fd);

/* fdatasync calls the spool thread made on the active segment (tests). */
uint64_t audit_spool_syncs(void);
uint64_t audit_sequence(void);

#endif
