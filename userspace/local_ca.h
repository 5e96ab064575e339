/* SPDX-License-Identifier: Apache-2.0 */
/*
 * local_ca: the enforcer's own certificate authority, for terminating an
 * agent's TLS toward an inspected target (HTTPS to an http target,
 * sslmode=require to a postgres target). The CA key and certificate live in
 * <state_dir>/ca/ (key 0600), made on first use and kept across restarts so
 * an agent's trust store stays valid; `agentgate status` shows the
 * certificate's path. Leaf certificates are minted per server name (the
 * client's SNI, else the name the module gives), short-lived, cached in
 * memory. Thread-safe after local_ca_open().
 */
#ifndef AGENTGATE_LOCAL_CA_H
#define AGENTGATE_LOCAL_CA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy.h"

typedef struct ssl_st SSL;

/* Loads or creates the CA. 0, or -errno with a reason. Main thread, at start. */
int local_ca_open(const char *state_dir, char *why, size_t whylen);
/* Path of the CA certificate (PEM), "" before local_ca_open(). */
bool local_ca_created(void);   /* true when this start made a new CA */
const char *local_ca_cert_path(void);
/*
 * Who asked for a certificate: the agent, which pays for a name that is
 * not one of the target's own. Minting a leaf costs about 0.8 ms of a
 * worker, and the names an agent can make us mint are its own to choose:
 * any SNI toward a postgres target or one without a name, every address of
 * a CIDR target. Those count against its limits.parse_cpu (may() before,
 * spent() with the thread CPU time after). At most LOCAL_CA_PER_AGENT of
 * the cache's slots hold them per agent (tag), and when the cache is full a
 * new one replaces a name some agent asked for before a target's own: a
 * client cycling through names pushes out its own leaves first, never the
 * targets' while asked-for names are there to go (review, stop 30).
 */
#define LOCAL_CA_PER_AGENT 16
struct local_ca_asker {
	bool (*may)(void *arg, char *why, size_t whylen);
	void (*spent)(void *arg, uint64_t cpu_ns);
	void *arg;
	int tag;   /* >= 0 */
};

/*
 * A server-side SSL for the agent leg of target t. Its certificate names the
 * SNI the client sends when t answers to that name (t's host, server_name or
 * upstream host), or any name when any_name (a module that does not check
 * names, as postgres, whose clients may dial an alias) or t has none;
 * otherwise, or without SNI, fallback_name (a DNS name or an IP literal: the
 * address the agent dialled). A name that is none of t's (its names, its
 * IP address) is minted at who's expense; past its budget the fallback
 * stands for an SNI, and for a fallback that is not t's own there is no SSL.
 * TLS 1.2+ only. NULL on failure, with why. Hand it to
 * conn_tls(c, SIDE_AGENT, ssl, true).
 */
SSL *local_ca_server_ssl(const struct policy_target *t, bool any_name, const char *fallback_name,
			 const struct local_ca_asker *who, char *why, size_t whylen);
/* Leaves minted since the start (status: ca_leaves_minted). */
uint64_t local_ca_minted(void);
void local_ca_close(void);

#endif
