/* SPDX-License-Identifier: Apache-2.0 */
/*
 * http_upstream: what the http module needs to talk to a target's upstream,
 * built once per target and policy (not per connection) and shared by the
 * worker threads: the TLS client context (CA file, client certificate) and
 * the credential header read from the target's secret files.
 *
 * Secrets: credential files are read on first use and again when the last
 * read is a second old (rotation, or a file that was missing), kept in
 * memory wiped on release, copied out only into a request being forwarded;
 * never logged and never in an error text (errors name the file, not its
 * content).
 */
#ifndef AGENTGATE_HTTP_UPSTREAM_H
#define AGENTGATE_HTTP_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include "policy.h"

typedef struct ssl_st SSL;

#define HTTP_CRED_MAX (8u * 1024)   /* a credential header line, CRLF included */

/*
 * A client SSL for target t's upstream leg, or *out = NULL when the target
 * says tls: disable (or nothing). verify-full: chain verified against
 * ca_file (else the system store), SNI and host name (or IP) checked
 * against server_name, else the upstream address's host, else the target's
 * host, else the upstream IP, else the address dialled (the agent's
 * destination: on a CIDR target, not the network's). require: encrypted, not verified (libpq's
 * meaning). Client certificate from cert_file/key_file. 0, or -errno with
 * why. Thread-safe.
 */
int http_upstream_ssl(const struct policy *p, int t, const uint8_t dialled[16], SSL **out, char *why,
		      size_t whylen);

/*
 * Writes target t's credential header line ("Authorization: Bearer ...\r\n",
 * "Authorization: Basic ...\r\n" or "<header_name>: ...\r\n") into buf.
 * Returns its length, 0 when the target injects nothing, or -errno with
 * *why (a static string naming what is wrong, never the secret).
 * Thread-safe. The caller wipes buf when done with it.
 */
int http_upstream_cred(const struct policy *p, int t, char *buf, size_t cap, const char **why);

/* Frees every cached context and wipes every credential. */
void http_upstream_reset(void);

#endif
