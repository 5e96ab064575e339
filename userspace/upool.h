/* SPDX-License-Identifier: Apache-2.0 */
/*
 * upool: idle upstream connections kept for the next connection of the same
 * agent to the same target.
 *
 * Agents mostly connect once per tool call. Without reuse, each connection
 * pays for a new upstream connection: a TCP handshake, upstream TLS, and
 * for PostgreSQL a server process, its authentication and a cold catalog.
 * A protocol module that ends a connection with its upstream leg idle and
 * clean (nothing in flight, nothing buffered; what "clean" means is the
 * module's: the postgres module resets the session first) hands the leg
 * here; the module of a later connection asks for one with an equal key
 * before it dials.
 *
 * Keys: the policy (a connection never gets a leg made under another), the
 * agent (state a module cannot reset stays with the agent that made it),
 * the target, and the module's own bytes (the upstream address dialled; for
 * PostgreSQL also the StartupMessage, which fixes the session's settings).
 *
 * One pool for all workers: an agent's next connection may land on any
 * worker (SO_REUSEPORT), and the socket moves to that worker's epoll set.
 * At most UPOOL_MAX legs, each kept at most UPOOL_IDLE_MS and handed out
 * until it is UPOOL_MAX_AGE_MS old. A leg the
 * upstream wrote to or closed while it was kept (an error, a shutdown, an
 * idle timeout) is never handed out.
 */
#ifndef AGENTGATE_UPOOL_H
#define AGENTGATE_UPOOL_H

#include <stdbool.h>
#include <stdint.h>
#include "policy.h"

#define UPOOL_MAX 16
#define UPOOL_IDLE_MS 30000
/* A leg is never handed out once this old (since it was first connected):
 * a login's checks (a role made NOLOGIN, a rotated password, pg_hba, the
 * role's settings) are applied again at least this often. */
#define UPOOL_MAX_AGE_MS (5 * 60 * 1000)

typedef struct ssl_st SSL;

struct upool_key {
	const struct policy *policy;
	int agent_idx, target_idx;
	const void *bytes;      /* the module's key: equal bytes match */
	uint32_t len;
};

/* How a module's legs are let go of: the bytes that say goodbye to the
 * upstream (PostgreSQL's Terminate; none for HTTP), and how its data is
 * freed. */
struct upool_ops {
	const void *goodbye;
	uint32_t goodbye_len;
	void (*data_free)(void *data);
};

struct upool_leg {
	int fd;
	SSL *ssl;               /* upstream TLS, or NULL */
	char desc[64];          /* the address, for audit */
	void *data;             /* the module's (the server's parameters...) */
	uint64_t born_ms;       /* when it was first connected (monotonic ms) */
};

/* Keeps leg under k (the pool owns it from now on). An agent keeps at most
 * max_per_agent legs (its connection limit: kept server sessions are not
 * connections of the agent, so they would otherwise escape it), its own
 * oldest making room; in a full pool, the oldest leg of the agent keeping
 * the most makes room. The key's bytes are copied. Out of memory: the leg
 * is let go of. */
void upool_put(const struct upool_key *k, unsigned max_per_agent, const struct upool_ops *ops,
	       struct upool_leg *leg);
/* The newest leg kept under k that is still quiet: true and *leg filled
 * (the caller owns it), or false. */
bool upool_take(const struct upool_key *k, struct upool_leg *leg);
/* Lets go of a leg (goodbye, close, free). */
void upool_release(const struct upool_ops *ops, struct upool_leg *leg);
/* Lets go of legs kept too long or no longer quiet; of all when stopping.
 * The worker loop calls it a few times a second. */
void upool_tick(bool stopping);
/* Legs kept now (status, tests). */
int upool_count(void);

#endif
