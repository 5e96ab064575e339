/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ident_jwks: one trusted issuer — OIDC discovery, its JWKS fetched with
 * libcurl and cached, and token verification against that cache through
 * ident_jwt.
 *
 * Transport rules, with no flag to relax them:
 *  - https:// issuers, or http:// issuers whose host is a loopback literal
 *    (127.0.0.0/8 in dotted-quad, or [::1]); "localhost" is a name, not a
 *    literal, and is refused like any other http:// host. The issuer may
 *    carry no userinfo, query or fragment.
 *  - jwks_uri (from <issuer>/.well-known/openid-configuration, whose
 *    "issuer" must equal the configured one byte for byte) obeys the same
 *    rule and must use the issuer's scheme: an https issuer cannot send us
 *    to plain http, a loopback issuer cannot send us off the host.
 *  - Each fetch allows only the URL's own scheme (CURLOPT_PROTOCOLS_STR),
 *    follows no redirect, uses no proxy, verifies TLS (peer and host; the
 *    CA file is optional), times out (3 s connect, 5 s total) and stops
 *    receiving past IDENT_FETCH_MAX bytes. Status 200 and a JSON content
 *    type are required.
 * A refused URL is refused before any socket is opened or name resolved.
 *
 * Cache (times on the monotonic clock; the persisted copy on the real one):
 *  - the JWKS is kept with its fetch time; its TTL is Cache-Control max-age
 *    clamped to [IDENT_TTL_MIN, IDENT_TTL_MAX], IDENT_TTL_DEFAULT without it;
 *  - past the TTL the next verification refreshes it (discovery, then
 *    JWKS); a failed refresh is retried at most every IDENT_REFETCH_MIN;
 *  - a kid the set does not hold (jwt_verify's -ENOKEY) triggers one
 *    refetch, at most one per IDENT_REFETCH_MIN whatever the cause, then
 *    one more verification;
 *  - while the issuer cannot be reached, the last set that was fetched
 *    (last known good) keeps verifying for up to IDENT_LKG_MAX after its
 *    fetch, and the failure is reported by issuer_status(); past that bound
 *    every token is refused (-ESTALE).
 *  - with opts->cache_file, the last good set is also written there
 *    (0600, atomically) and read back by issuer_new(), so a restarted
 *    enforcer or a one-shot CLI keeps working while the issuer is down.
 *    The file is trusted only if it is a regular file owned by us or root
 *    and not writable by group or others; otherwise it is ignored.
 *    The refetch rate limit is per object, not persisted: a new process
 *    may refetch once at once.
 *
 * Thread safety: an ident_issuer may be shared between threads; one mutex
 * serialises verification and fetching, so a fetch (bounded by the
 * timeouts above) makes concurrent verifications of the same issuer wait,
 * and concurrent unknown-kid tokens cause one fetch, not a storm. Library
 * code: no logging; reasons come back in 'why' and issuer_status().
 */
#ifndef AGENTGATE_IDENT_JWKS_H
#define AGENTGATE_IDENT_JWKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ident_jwt.h"

#define IDENT_FETCH_MAX          (256u * 1024)  /* bytes per response */
#define IDENT_CONNECT_TIMEOUT_MS 3000
#define IDENT_TOTAL_TIMEOUT_MS   5000
#define IDENT_TTL_MIN            60             /* seconds */
#define IDENT_TTL_MAX            3600
#define IDENT_TTL_DEFAULT        600
/* seconds between fetch attempts: 30; test knob AGENTGATE_JWKS_REFETCH_S (1-3600) */
#define IDENT_REFETCH_MIN        ident_refetch_min()
int ident_refetch_min(void);
#define IDENT_LKG_MAX            86400          /* last known good bound */
#define IDENT_URL_MAX            2048

/* A fetched HTTP response, as the fetcher hands it over. */
struct ident_http_resp {
	long status;               /* HTTP status */
	char *body;                /* malloc'd, NUL-terminated; owned by the caller of fetch */
	size_t len;
	char content_type[128];    /* "" when absent */
	char cache_control[256];   /* "" when absent */
};

/*
 * The one HTTP client of the identity code (libcurl): GET (post NULL) or POST
 * url, with the rules above (scheme of the URL only, no redirects, no proxy,
 * TLS verified, CA file optional, timeouts, size cap). auth, when set, is a
 * whole header line ("Authorization: Basic ...") and is wiped from libcurl's
 * list before that is freed; the body buffer is wiped as it grows. The URL
 * must have passed ident_url_check(). Over plain http (loopback only) the
 * uid that owns the answering socket is pinned per address and port at the
 * first connection; another owner later is refused (-EPERM) before the
 * request is sent. 0 (any HTTP status) or -errno with a reason in why;
 * *resp is the caller's, freed with ident_http_resp_clear().
 */
int ident_http(const char *url, const char *ca_file, const char *post, const char *auth,
	       struct ident_http_resp *resp, char *why, size_t whylen);
/* The uid owning the server's end of the TCP connection client -> server
 * in this network namespace (/proc/net/tcp{,6}): 0 or -errno. */
int ident_loopback_owner(const char *server_ip, int server_port, const char *client_ip, int client_port,
			 uid_t *uid);
/* printf into why (NULL-safe): the reasons of the identity code. */
void ident_setwhy(char *why, size_t whylen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Wipes and frees a response's body. */
void ident_http_resp_clear(struct ident_http_resp *r);

/*
 * A fetcher: GET url into *resp. Returns 0 (any HTTP status) or -errno with
 * a reason in why. The default one is libcurl with the rules above; tests
 * inject their own. The URL has already passed ident_url_check().
 */
typedef int (*ident_fetch_fn)(void *ctx, const char *url, const char *ca_file,
			      struct ident_http_resp *resp, char *why, size_t whylen);

struct issuer_opts {
	const char *ca_file;       /* PEM bundle for https; NULL: the system store */
	const char *cache_file;    /* persist the last good set here; NULL: memory only */
	/* Clocks in seconds; NULL means CLOCK_MONOTONIC and CLOCK_REALTIME. */
	int64_t (*now_mono)(void *ctx);
	int64_t (*now_real)(void *ctx);
	void *clock_ctx;
	ident_fetch_fn fetch;      /* NULL: libcurl */
	void *fetch_ctx;
};

/*
 * Whether url may be fetched under the transport rules. 'issuer' is NULL
 * for the issuer URL itself; for a jwks_uri it is the issuer's URL, whose
 * scheme the jwks_uri must share. Returns 0, or -EPROTO (scheme, or http
 * off loopback) / -EINVAL (malformed) with a reason in why. Pure.
 */
int ident_url_check(const char *url, const char *issuer, char *why, size_t whylen);

struct ident_issuer;

/*
 * A verifier for one issuer. Nothing is fetched yet, except that a valid
 * opts->cache_file is read. Returns NULL with errno (EPROTO, EINVAL,
 * ENOMEM) and a reason in why when the issuer URL breaks the transport
 * rules. opts may be NULL; its strings are copied.
 */
struct ident_issuer *issuer_new(const char *issuer, const struct issuer_opts *opts,
				char *why, size_t whylen);

/* NULL-safe. */
void issuer_free(struct ident_issuer *iss);

/*
 * Verify token[0..len) with the issuer's keys, fetching or refreshing them
 * as the cache rules say. pol->issuer must equal the issuer's URL (else
 * -EINVAL) and pol->now should be the real time. Returns what jwt_verify
 * returns, plus -EHOSTUNREACH (no keys could be had: the reason names the
 * fetch failure), -ESTALE (the last good keys are older than IDENT_LKG_MAX),
 * -EPROTO (discovery named a jwks_uri we refuse, or its issuer differs).
 * *out as in jwt_verify (release with jwt_claims_free). why never holds
 * the token.
 */
int issuer_verify(struct ident_issuer *iss, const char *token, size_t len,
		  const struct jwt_policy *pol, struct jwt_claims *out,
		  char *why, size_t whylen);

/*
 * As issuer_verify, but never fetches: it verifies with the keys held and
 * sets *want_refresh when a fetch is due (no keys, past the TTL, an
 * unknown kid within the refetch rate limit) for the thread that owns the
 * issuer's refreshes to do. For worker threads: it waits at most for the
 * cache lock, never for the network.
 */
int issuer_verify_cached(struct ident_issuer *iss, const char *token, size_t len,
			 const struct jwt_policy *pol, struct jwt_claims *out, bool *want_refresh,
			 char *why, size_t whylen);

/*
 * A token already accepted, checked again when the issuer's keys have
 * changed since *gen (issuer_verify or an earlier recheck; start at 0).
 * Refreshes the keys first when their TTL has passed, at most once per
 * TTL (and the rate limit) even while fetches fail, which keep the keys.
 * 0: nothing changed, or the token still verifies (*gen is then the keys' generation). -EKEYREVOKED: the
 * issuer no longer publishes its key (withdrew every key, or the set
 * lacks its kid). Any other -errno is jwt_verify's verdict with the new
 * keys. why never holds the token.
 */
int issuer_recheck(struct ident_issuer *iss, uint64_t *gen, const char *token, size_t len,
		   const struct jwt_policy *pol, char *why, size_t whylen);

/*
 * issuer_recheck() for a token that is not kept, by the key that verified
 * it (jwt_key_still): never fetches, *want_refresh is set once the keys'
 * TTL has passed, for the caller to have them fetched elsewhere. The same
 * returns: 0, -EKEYREVOKED (withdrawn, not published any more, another
 * key under its kid, or a kid-less token among several keys), other
 * -errno. why holds no text of the issuer's (it may reach the agent).
 */
int issuer_key_check(struct ident_issuer *iss, uint64_t *gen, const struct jwt_keyref *ref,
		     bool *want_refresh, char *why, size_t whylen);

/*
 * Fetch now (discovery and JWKS), ignoring the TTL but not the rate limit;
 * force skips the rate limit only while the issuer has no keys at all. 0 or
 * -errno with a reason (-EAGAIN: rate limited).
 */
int issuer_refresh(struct ident_issuer *iss, bool force, char *why, size_t whylen);

struct issuer_status {
	bool have_keys;
	bool stale;                /* past the TTL: the last refresh failed */
	int64_t age_s;             /* since the keys were fetched; -1 without keys */
	int64_t ttl_s;
	size_t nkeys;              /* usable keys */
	uint64_t fetches, failures;
	char last_error[256];      /* "" when the last fetch attempt succeeded */
	char jwks_uri[IDENT_URL_MAX];
};

/* A snapshot of the cache for status output and audit. 0 or -EINVAL. */
int issuer_status(struct ident_issuer *iss, struct issuer_status *st);

#endif
