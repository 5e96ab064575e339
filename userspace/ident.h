/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ident: where each agent's principal comes from. One struct ident_agent per
 * policy agent, backed by one identity source (struct ident_source_ops):
 *
 *   local               principal {iss "local", sub <agent name>, exp 0},
 *                       never verified: the kernel binds the cgroup, nobody
 *                       vouches for the name.
 *   client_credentials  the enforcer holds the agent's client secret (a file
 *                       named by the policy, read when needed, wiped after
 *                       use), gets an access token from the issuer's token
 *                       endpoint (RFC 6749 §4.4, client_secret_basic, the
 *                       audience sent as RFC 8707 "resource" and as
 *                       "audience"), verifies it as an RFC 9068 access token
 *                       (typ at+jwt) and holds it. Refreshed at ~80% of its
 *                       lifetime; on any failure the last good token is kept
 *                       until it expires while the fetch is retried with
 *                       backoff (IDENT_BACKOFF_MIN_MS doubling to
 *                       IDENT_BACKOFF_MAX_MS). With a private_key_file
 *                       instead of a secret, the client authenticates with
 *                       private_key_jwt (RFC 7523): a 60 s assertion signed
 *                       with its key (RS256, ES256, EdDSA; ident_assert.c),
 *                       the key re-read and wiped on every request.
 *   token_file          a token some platform writes (Kubernetes projected
 *                       token, JWT-SVID, CI token): re-read whenever the
 *                       file's inode, size, mtime or ctime changes, verified
 *                       on every change. A token that fails verification
 *                       makes the agent unverified at once, with the reason;
 *                       a file that cannot be read, or an issuer that cannot
 *                       be reached, keeps the last good token until it
 *                       expires (and is retried with backoff). A kid the
 *                       issuer's keys lack keeps it too, while a JWKS
 *                       refetch may still bring the key (the refetch limit
 *                       plus 5 s), and is retried.
 *
 * Transport (URLs, TLS, limits) is ident_jwks.h's: the token endpoint must
 * pass ident_url_check() against the issuer like a jwks_uri does, and every
 * request has the same timeouts and size limit.
 *
 * Secrets: neither the client secret nor any token ever reaches a reason,
 * a status field or a log line; buffers that held one are wiped with
 * OPENSSL_cleanse() before they are freed. (libcurl's own copies of the
 * Authorization header and of the response are outside our reach.)
 *
 * Threads and blocking: an ident_agent is used from one thread (the
 * enforcer's main loop). ident_agent_tick() may block on the network for up
 * to a few request timeouts (IDENT_TOTAL_TIMEOUT_MS each) when a fetch is
 * due; everything else is non-blocking. Library code: no logging.
 */
#ifndef AGENTGATE_IDENT_H
#define AGENTGATE_IDENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ident_jwks.h"
#include "ident_jwt.h"
#include "policy.h"

#define IDENT_LEEWAY_S        60      /* clock skew allowed on exp, nbf, iat */
#define IDENT_MAX_AGE_S       86400   /* identity-audit.md §1: cap token age ourselves */
#define IDENT_MAX_GROUPS      32      /* groups copied into a principal; more set groups_truncated */
#define IDENT_GROUP_MAX       128     /* bytes of one group name; longer ones are skipped */
#define IDENT_NAME_MAX        JWT_NAME_MAX   /* sub, client_id: longer ones are refused */
#define IDENT_REASON_MAX      256
#define IDENT_SECRET_MAX      4096    /* bytes of a client secret file */
#define IDENT_BACKOFF_MIN_MS  1000
#define IDENT_BACKOFF_MAX_MS  60000
#define IDENT_REFRESH_PCT     80      /* refresh at this share of the token's lifetime */

struct ident_agent;   /* opaque */

/*
 * A copy of an agent's principal, in caller storage (no pointers into the
 * agent). sub, client_id, exp and groups are what the verified token says;
 * an unverified agent has none of them ("", 0, no groups: nothing to bind
 * on), except that local's sub is the agent name. iss is the configured
 * issuer ("local" for local) either way, and reason says why the agent is
 * not verified.
 */
struct ident_principal {
	const char *source;                 /* static: "local", "client_credentials", "token_file" */
	char iss[IDENT_URL_MAX];
	char sub[IDENT_NAME_MAX];
	char client_id[IDENT_NAME_MAX];     /* client_id claim, else azp, else "" */
	int64_t exp;                        /* seconds since the epoch; 0 for local */
	bool verified;
	char groups[IDENT_MAX_GROUPS][IDENT_GROUP_MAX];
	size_t ngroups;
	bool groups_truncated;              /* the token had more (or longer) groups */
	char reason[IDENT_REASON_MAX];      /* why not verified; "" when verified */
	char warning[IDENT_REASON_MAX];     /* verified, but the last refresh or re-read
	                                     * failed (the held token is still good); else "" */
	bool secret_file_exposed;           /* client_credentials: the secret file is
	                                     * readable by group or others (reported, not refused) */
	struct jwt_keyref key;              /* the key that verified the token (a user
	                                     * token a session holds: ident_user_recheck) */
};

/*
 * One identity source. open() takes what it needs from id (copying it: the
 * policy may be freed afterwards) and may not touch the network; it returns
 * 0 or -errno with a reason. tick() is called about once a second with the
 * caller's monotonic clock in ms; it does the source's work when due and
 * updates the agent's principal, returning 0 or -errno (the failure is also
 * in the principal). close() releases what open() took; it is called once,
 * also after a failed open().
 */
struct ident_source_ops {
	const char *name;
	int (*open)(struct ident_agent *a, const struct policy_identity *id,
		    const char *state_dir, char *why, size_t whylen);
	int (*tick)(struct ident_agent *a, uint64_t now_ms);
	void (*close)(struct ident_agent *a);
};

/*
 * An identity for agent_name as id describes it. state_dir (may be NULL)
 * holds the JWKS cache (<state_dir>/jwks/). Nothing is fetched yet: the
 * principal starts unverified ("not obtained yet") until the first tick.
 * Returns NULL with a reason in why (errno set) when the identity cannot
 * work at all: an issuer or token URL the transport rules refuse, missing
 * fields, or no memory. Free with ident_agent_free().
 */
struct ident_agent *ident_agent_new(const char *agent_name, const struct policy_identity *id,
				    const char *state_dir, char *why, size_t whylen);

/*
 * Do what is due at now_ms (CLOCK_MONOTONIC in milliseconds; call about once
 * a second): fetch or refresh a token, re-read a token file, expire a held
 * token. Returns 1 when the principal changed since the previous tick (the
 * caller's cue to audit it), 0 when it did not, or -EINVAL.
 */
int ident_agent_tick(struct ident_agent *a, uint64_t now_ms);

/* Copy the current principal into *out. */
void ident_agent_principal(const struct ident_agent *a, struct ident_principal *out);

/*
 * The current verified token (the access token, or the token file's token)
 * as a NUL-terminated string owned by the agent, or NULL when the agent is
 * not verified. Valid until the next ident_agent_tick() or ident_agent_free().
 * For upstream {bearer: agent_token}. Never log it.
 */
const char *ident_agent_token(const struct ident_agent *a);

/*
 * Delegation: verifies a user's token presented in-band to agent a's target
 * (HTTP Authorization: Bearer, a PostgreSQL password) with a's issuer and
 * audience, any token kind but never another explicit typ, and the keys
 * already held: it never touches the network, and asks a's next tick for a
 * JWKS fetch when one is due (unknown kid, TTL). The agent's own verified
 * principal is agent_iss and agent_sub (both NULL when it has none): an
 * RFC 8693 token must name agent_sub in act.sub, and agent_iss in act.iss
 * if it has one; a token whose sub is agent_sub is the agent's own, not a
 * user's. Fills *user (source "user_token"). Thread-safe; 0 or -errno with
 * a reason that never holds the token.
 */
int ident_user_verify(struct ident_agent *a, const char *tok, size_t len, const char *agent_iss,
		      const char *agent_sub, struct ident_principal *user, char *why, size_t whylen);
/*
 * A user token a session holds (postgres), checked again when the issuer's
 * keys have changed since *gen (start at 0): user is what
 * ident_user_verify() filled, the token itself is not kept. 0 while the
 * issuer still publishes the key that verified it (or its keys could not
 * be fetched: an outage keeps them); -EKEYREVOKED when it withdrew its
 * keys, no longer publishes that key, or publishes another one under its
 * kid. Never touches the network: asks a's next tick for a JWKS fetch once
 * the keys' TTL has passed, so a withdrawal is seen within a TTL, the
 * fetch and the caller's next check. Thread-safe.
 */
int ident_user_recheck(struct ident_agent *a, const struct ident_principal *user, uint64_t *gen,
		       char *why, size_t whylen);
/* Those rules on verified claims alone (also `token verify --user`). 0 or
 * -EACCES. */
int ident_user_check(const struct jwt_claims *c, const char *agent_iss, const char *agent_sub,
		     char *why, size_t whylen);
/* The checks an agent's own token passes beyond the issuer's rules: no act
 * claim (a delegation token is a user's), and for a token file with
 * identity.client_id, that name as its sub. 0 or -EPERM
 * with why. */
int ident_own_check(const struct policy_identity *id, const struct jwt_claims *c, char *why, size_t whylen);
/* A verified principal from claims. */
void ident_principal_from_claims(const struct jwt_claims *c, const char *source, struct ident_principal *out);

/* Wipes any token and frees. NULL-safe. */
void ident_agent_free(struct ident_agent *a);

/* ---- shared with `agentgate token verify` ------------------------------ */

/*
 * The verification policy the enforcer applies to id's tokens at time now:
 * exact issuer, id->audience as the one audience (stored in *aud_slot, which
 * must live as long as *jp), typ at+jwt for client_credentials (RFC 9068),
 * any known kind but never another explicit typ for token_file, the groups
 * claim, IDENT_LEEWAY_S and IDENT_MAX_AGE_S.
 */
void ident_jwt_policy(const struct policy_identity *id, int64_t now, const char **aud_slot,
		      struct jwt_policy *jp);

/*
 * The JWKS cache file for issuer: <state_dir>/jwks/<sha256(issuer)>.json,
 * creating the directory (0700). out is "" when there is no state_dir or it
 * cannot be had (not root, read-only): the cache is then memory only.
 */
void ident_jwks_cache_path(const char *state_dir, const char *issuer, char *out, size_t outlen);

#endif
