/* SPDX-License-Identifier: Apache-2.0 */
/*
 * audit: one place that builds OCSF 1.8.0 events and delivers them.
 *
 * audit_emit() assigns metadata.uid (UUIDv7) and a gap-free
 * metadata.sequence under one lock, appends one JSON line to every sink's
 * batch (stdout, file; written within 250 ms, see audit_flush()), keeps the line in a bounded in-memory ring for
 * `agentgate audit tail`, and pushes it to followers. It never blocks on a
 * follower: one that cannot keep up is dropped. Every line carries
 * metadata.prev_hash, and signed checkpoints are interleaved (audit_chain.h). Events never carry a secret
 * or an unmasked value; builders take only what may be shown.
 */
#ifndef AGENTGATE_AUDIT_H
#define AGENTGATE_AUDIT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
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

/* Opens the policy's sinks (file, stdout). Other sink types are reported
 * by the caller as not yet available. 0 or -errno. */
int audit_open(const struct policy *p);
void audit_close(void);   /* flushes */
/* Writes batched lines out; the main loop calls it at least every 250 ms. */
void audit_flush(void);
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
};
void audit_add_agent(json_t *ev, const struct audit_agent *a);
/* status/disposition/action: allowed (1) or blocked (2), with observe marking. */
void audit_add_verdict(json_t *ev, bool allowed, bool would_deny, const char *rule,
		       const char *reason);

/* Last n events (n <= AUDIT_RECENT), oldest first, as a JSON array of strings. */
json_t *audit_recent(int n);
/* Adds a follower fd (non-blocking); audit owns and closes it. */
void audit_follow(int fd);

uint64_t audit_sequence(void);

#endif
