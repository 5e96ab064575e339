/* SPDX-License-Identifier: Apache-2.0 */
/*
 * conn: one proxied connection, agent side and upstream side, owned by the
 * worker thread that accepted it. Buffers are bounded (CONN_BUF per
 * direction); a full buffer stops reading from that side (backpressure).
 * Half-close is relayed: EOF from one side becomes shutdown(SHUT_WR) on the
 * other once its buffered bytes are written.
 */
#ifndef AGENTGATE_CONN_H
#define AGENTGATE_CONN_H

#include <stdbool.h>
#include <stdint.h>
#include "agentgate_abi.h"
#include "policy.h"

#define CONN_BUF (64 * 1024)
#define CONN_CONNECT_TIMEOUT_MS 10000

struct worker;
struct proto_ops;

enum conn_dir { DIR_UP = 0, DIR_DOWN = 1 };   /* agent->upstream, upstream->agent */

struct conn_end {
	int fd;
	struct conn *c;
	bool is_agent;
};

struct conn {
	struct worker *w;
	struct conn_end agent, up;
	uint8_t *buf[2];
	uint32_t len[2], off[2];
	bool eof[2];          /* source of direction d reached EOF */
	bool shut[2];         /* destination of direction d was shut down (or needs no shutdown) */
	bool connecting, relaying, closing;
	uint64_t deadline_ms; /* connect deadline (monotonic ms), 0 = none */
	uint64_t bytes[2];
	uint64_t start_ms;

	/* attribution, from the pair map and the policy */
	struct ag_pair_val pair;
	uint8_t client_addr[16];
	uint16_t client_port;
	int agent_idx, target_idx;
	const struct policy *policy;
	const struct policy_rule *rule;
	const struct proto_ops *ops;
	void *proto_state;
	bool fallback_proto;  /* protocol module not available: relayed as tcp */
	bool would_deny;      /* observe mode: the policy would have denied */
	bool opened;          /* an Open event was recorded: a Close follows */
	const char *deny_reason;
	char rule_desc[160];
	char why[300];        /* a refusal reason built for this connection */  /* "role 'r' rule 2 (line 14)", empty when no rule decided */
	char upstream_desc[64];
	struct rec *rec;      /* session recording (recording.h), NULL when off */
	struct conn *next, *prev;  /* worker's list */
};

/* Dials the upstream (the target's upstream address, else the original
 * destination). 0 or -errno; the connection proceeds asynchronously. */
int conn_connect_upstream(struct conn *c);
/* Switches to plain relaying of everything buffered and to come. */
void conn_relay(struct conn *c);
/* Refuses: audit is the caller's; closes the agent side with a reset. */
void conn_refuse(struct conn *c);

const uint8_t *conn_agent_buf(struct conn *c, uint32_t *len);
/* Reads what the agent has sent so far into the upstream buffer (bounded by
 * CONN_BUF). Returns bytes now buffered, 0 at EOF with nothing buffered, -EAGAIN, or -errno. */
int conn_agent_fill(struct conn *c);

/* Event entry points used by the worker loop. */
void conn_on_event(struct conn_end *e, uint32_t events);
void conn_free(struct conn *c);
void conn_close(struct conn *c, bool reset);

#endif
