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

#include <stddef.h>

#include "policy.h"

typedef struct ssl_st SSL;

/* Loads or creates the CA. 0, or -errno with a reason. Main thread, at start. */
int local_ca_open(const char *state_dir, char *why, size_t whylen);
/* Path of the CA certificate (PEM), "" before local_ca_open(). */
const char *local_ca_cert_path(void);
/*
 * A server-side SSL for the agent leg of target t. Its certificate names the
 * SNI the client sends when t answers to that name (t's host, server_name or
 * upstream host; any name when t has none, or t is NULL: a module that does
 * not check names, as postgres, whose clients may dial an alias); otherwise,
 * or without SNI,
 * fallback_name (a DNS name or an IP literal: the address the agent
 * dialled). TLS 1.2+ only. NULL on failure. Hand it to
 * conn_tls(c, SIDE_AGENT, ssl, true).
 */
SSL *local_ca_server_ssl(const struct policy_target *t, const char *fallback_name);
void local_ca_close(void);

#endif
