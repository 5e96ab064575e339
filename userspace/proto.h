/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One table per protocol module. The enforcer attributes an accepted
 * connection (agent, original destination, target) and hands it to the
 * module of the target's protocol through proto_for(). Adding a protocol
 * means adding a proto_<name>.c exporting one const struct proto_ops and one
 * line in proto_for().
 *
 * Contract: start() is called once, on the worker thread that owns the
 * connection, before any byte is relayed. The module either calls
 * conn_connect_upstream() (and may keep inspecting bytes through
 * on_agent_data/on_upstream_data) or conn_refuse(). Callbacks return 0 to go
 * on, or a negative errno to close the connection. A module that wants plain
 * relaying after its decision calls conn_relay(); from then on conn.c moves the
 * bytes itself and the module's data callbacks are no longer called.
 */
#ifndef AGENTGATE_PROTO_H
#define AGENTGATE_PROTO_H

#include "policy.h"

struct conn;

struct proto_ops {
	const char *name;
	/* The module enforces allow/review/mask content rules (statements,
	 * http, verbs...). The enforcer refuses to start with such rules on a
	 * target whose module does not. */
	bool enforces_rules;
	int (*start)(struct conn *c);
	/* Bytes from the agent are in conn_agent_buf(c); consume with conn_agent_consume(). */
	int (*on_agent_data)(struct conn *c);
	int (*on_upstream_data)(struct conn *c);
	void (*release)(struct conn *c);     /* frees module state; NULL-safe on c->proto_state */
	/* Stream mode only, optional: dialling upstream failed (err = -errno,
	 * -ETIMEDOUT on the connect deadline). The module may conn_send() an
	 * error the agent understands and conn_finish(); else the agent's
	 * connection is reset. */
	void (*on_upstream_fail)(struct conn *c, int err);
	/* Stream mode only, optional: the upstream TLS handshake failed
	 * (conn_tls_error() says why, e.g. the certificate did not verify).
	 * The upstream socket is already closed; the agent's side goes on,
	 * and the module answers it and ends the connection (conn_finish())
	 * when it has. Without this op, the agent's connection is reset. */
	void (*on_upstream_tls_fail)(struct conn *c);
	/* Stream mode only, optional: c->deadline_ms (which the module set)
	 * passed while the upstream leg is up. Returns true when the module
	 * answered the agent and ends the connection itself (conn_finish());
	 * false: conn.c closes it (a reset, audited with c->deadline_why). */
	bool (*on_deadline)(struct conn *c);
	/* Stream mode only, optional: called every 200 ms between events
	 * (conn_trim()); the module frees scratch buffers it is not using, and
	 * may end the connection as on_deadline() does (conn_finish() after
	 * its answer: proto_pg, a delegating user's key withdrawn). */
	void (*trim)(struct conn *c);
	/* Stream mode only, optional: work the module put off with
	 * conn_want_idle() (audit events of answered statements), called once
	 * the worker has handled what was ready (conn_idle_now()), and before
	 * the connection's Close event. */
	void (*idle)(struct conn *c);
};

extern const struct proto_ops proto_tcp_ops;
extern const struct proto_ops proto_tls_ops;
extern const struct proto_ops proto_http_ops;
/* Bytes of masked http answers held or queued to agents now (status). */
size_t http_masked_held(void);
extern const struct proto_ops proto_kubernetes_ops;
extern const struct proto_ops proto_pg_ops;
/* PostgreSQL sessions that read their names again after another session
 * changed them (status: pg_names_refreshed). */
uint64_t pg_names_refreshed(void);
/* Masking sessions that read their lineage again since the start, after a
 * change of relations or by age (status: pg_lineage_refreshed). */
uint64_t pg_lineage_refreshed(void);
/* Result columns masked whole: their relation was made after the lineage was read. */
uint64_t pg_lineage_unknown_masked(void);
uint64_t pg_catalog_notified(void);   /* changes announced by the README's event trigger */

/*
 * The module for a protocol. Protocols whose module has not landed yet
 * (postgres, http, kubernetes) are relayed by the tcp module, and
 * *fallback is set so the caller can say so in audit and status.
 */
const struct proto_ops *proto_for(enum policy_proto p, bool *fallback);

#endif
