/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ident: identity sources per agent. The contract is in ident.h; the
 * comments here say why the code looks the way it does.
 */
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ident.h"
#include "ident_assert.h"
#include "util.h"

struct ident_agent {
	char *name;
	const struct ident_source_ops *ops;
	struct policy_identity id;      /* our own copies of the strings */
	struct ident_issuer *iss;
	struct ident_principal pr;

	char *token;                    /* the verified token, NUL-terminated; wiped */
	size_t toklen;
	int64_t tok_exp;                /* when it stops being good: its exp, or sooner
	                                 * when it becomes too old (real time) */
	bool tok_ages_out;              /* tok_exp is its age limit, not its exp */
	uint64_t keys_gen;              /* the issuer's keys it was last checked with */

	uint64_t next_ms;               /* no fetch / re-read before this (monotonic) */
	uint64_t backoff_ms;            /* next retry delay after a failure */
	bool retry;                     /* token_file: the last read failed transiently */
	uint64_t nokey_since;           /* token_file: its token's kid unknown since (ms); 0: not */
	bool force_jwks;                /* the issuer's keys could not be had: refetch first */

	/* client_credentials */
	char token_endpoint[IDENT_URL_MAX];

	/* token_file: what the file looked like when last read */
	bool have_stat;
	struct stat st;

	/* delegation: a worker verifying a user token asks for a JWKS fetch */
	atomic_bool user_refresh;
};

/* ---- small helpers ------------------------------------------------------ */

static int64_t real_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec;
}

static void wipe_free(char *p, size_t len)
{
	if (!p)
		return;
	OPENSSL_cleanse(p, len);
	free(p);
}

static void drop_token(struct ident_agent *a)
{
	wipe_free(a->token, a->toklen + 1);
	a->token = NULL;
	a->toklen = 0;
	a->tok_exp = 0;
}

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

void ident_jwt_policy(const struct policy_identity *id, int64_t now, const char **aud_slot,
		      struct jwt_policy *jp)
{
	memset(jp, 0, sizeof(*jp));
	aud_slot[0] = id->audience;
	jp->issuer = id->issuer;
	jp->audiences = aud_slot;
	jp->naud = 1;
	/* client_credentials yields RFC 9068 access tokens; a token file may
	 * hold any kind we know (k8s, JWT-SVID, CI), never another explicit typ. */
	jp->typ = id->source == IDENT_CLIENT_CREDENTIALS ? "at+jwt" : NULL;
	jp->groups_claim = id->groups_claim;
	jp->leeway_s = IDENT_LEEWAY_S;
	jp->max_age_s = IDENT_MAX_AGE_S;
	jp->now = now;
}

void ident_jwks_cache_path(const char *state_dir, const char *issuer, char *out, size_t outlen)
{
	unsigned char md[32];
	char dir[PATH_MAX], hex[65];
	unsigned int mdlen = 0;

	out[0] = '\0';
	if (!state_dir || !*state_dir || !issuer)
		return;
	if (!EVP_Digest(issuer, strlen(issuer), md, &mdlen, EVP_sha256(), NULL) || mdlen != 32)
		return;
	for (unsigned int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	if ((size_t)snprintf(dir, sizeof(dir), "%s/jwks", state_dir) >= sizeof(dir))
		return;
	if (mkdir_p(dir, 0700) < 0)
		return;
	snprintf(out, outlen, "%s/%s.json", dir, hex);
}

/* ---- principal bookkeeping --------------------------------------------- */

static void set_unverified(struct ident_agent *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_unverified(struct ident_agent *a, const char *fmt, ...)
{
	va_list ap;

	drop_token(a);
	/* No claims without a token: a binding on groups or sub must never
	 * match an agent that is not verified (local keeps its name). */
	if (a->id.source != IDENT_LOCAL) {
		a->pr.sub[0] = '\0';
		a->pr.client_id[0] = '\0';
		a->pr.exp = 0;
		a->pr.ngroups = 0;
		a->pr.groups_truncated = false;
		memset(a->pr.groups, 0, sizeof(a->pr.groups));
	}
	a->pr.verified = false;
	a->pr.warning[0] = '\0';
	va_start(ap, fmt);
	vsnprintf(a->pr.reason, sizeof(a->pr.reason), fmt, ap);
	va_end(ap);
}

/* Takes a copy of tok; fills the principal from verified claims. */
static int set_verified(struct ident_agent *a, const char *tok, size_t len, const struct jwt_claims *c)
{
	char *copy = malloc(len + 1);

	if (!copy)
		return -ENOMEM;
	memcpy(copy, tok, len);
	copy[len] = '\0';
	drop_token(a);
	a->token = copy;
	a->toklen = len;
	a->keys_gen = 0;   /* checked once more at the next tick (held_recheck) */
	a->tok_exp = c->exp;
	/* Verification refuses a token issued more than IDENT_MAX_AGE_S ago
	 * (plus the leeway): one we hold stops being good then too, whatever
	 * its exp says (a token file may hold one valid for a year). */
	a->tok_ages_out = c->has_iat && c->iat + IDENT_MAX_AGE_S + IDENT_LEEWAY_S < c->exp;
	if (a->tok_ages_out)
		a->tok_exp = c->iat + IDENT_MAX_AGE_S + IDENT_LEEWAY_S;

	bool exposed = a->pr.secret_file_exposed;

	ident_principal_from_claims(c, a->pr.source, &a->pr);
	a->pr.exp = a->tok_exp;
	a->pr.secret_file_exposed = exposed;
	a->pr.reason[0] = '\0';
	a->pr.warning[0] = '\0';
	return 0;
}

static void schedule_retry(struct ident_agent *a, uint64_t now_ms)
{
	if (a->backoff_ms < IDENT_BACKOFF_MIN_MS)
		a->backoff_ms = IDENT_BACKOFF_MIN_MS;
	a->next_ms = now_ms + a->backoff_ms;
	a->backoff_ms = a->backoff_ms * 2 > IDENT_BACKOFF_MAX_MS ? IDENT_BACKOFF_MAX_MS : a->backoff_ms * 2;
}

/*
 * A failure. A transient one (network, issuer down, unreadable file) keeps
 * a good token that has not expired and says so in the warning; a definitive
 * one (a token that does not verify, a client the issuer refuses) drops it:
 * disabling the client at the provider must take the access away.
 */
static void failed(struct ident_agent *a, uint64_t now_ms, bool definitive, const char *reason)
{
	schedule_retry(a, now_ms);
	if (!definitive && a->token && real_now() < a->tok_exp) {
		snprintf(a->pr.warning, sizeof(a->pr.warning), "%s", reason);
		return;
	}
	set_unverified(a, "%s", reason);
}

static void succeeded(struct ident_agent *a)
{
	a->backoff_ms = IDENT_BACKOFF_MIN_MS;
	a->force_jwks = false;
}

/* A held token stops being good at its exp, refresh or no refresh. */
static void expire_check(struct ident_agent *a)
{
	if (a->token && real_now() >= a->tok_exp) {
		char last[IDENT_REASON_MAX];

		const char *what = a->tok_ages_out ? "token too old (issued more than 24 h ago)"
						   : "token expired";

		snprintf(last, sizeof(last), "%s", a->pr.warning);
		if (last[0])
			set_unverified(a, "%s; last refresh failed: %s", what, last);
		else
			set_unverified(a, "%s", what);
	}
}

/* Errors of issuer_verify() that a retry can cure: the issuer or its keys
 * could not be had, or we could not compute. Everything else is a verdict
 * on the token. */
static bool verify_transient(int err)
{
	return err == -EHOSTUNREACH || err == -ETIMEDOUT || err == -ESTALE || err == -EPROTO ||
	       err == -EIO || err == -ENOMEM;
}

int ident_own_check(const struct policy_identity *id, const struct jwt_claims *c, char *why, size_t whylen)
{
	const char *want = id->client_id;

	/* The agent's own token names the agent. A token that says someone
	 * acts for another (RFC 8693 act: a delegation token, issued for a
	 * user) is never one, and with a token file the agent may write (or
	 * be handed a user's token it accepts in-band), taking it would make
	 * the agent that user (review, stop 34). */
	if (c->act_sub) {
		ident_setwhy(why, whylen, "a delegation token (claim 'act') is not an agent's own token");
		return -EPERM;
	}
	/* identity.client_id pins whose token a token file may hold: its
	 * sub. Not azp or client_id: a token the agent's client obtained for a
	 * user by token exchange carries the agent's client in both. */
	if (id->source == IDENT_TOKEN_FILE && want && strcmp(c->sub, want) != 0) {
		ident_setwhy(why, whylen, "the token's sub is not '%s' (identity.client_id)", want);
		return -EPERM;
	}
	return 0;
}

/* Verify tok with the agent's issuer. 0, or -errno with the reason. */
static int verify_token(struct ident_agent *a, const char *tok, size_t len, struct jwt_claims *c,
			char *why, size_t whylen)
{
	struct jwt_policy jp;
	const char *aud[1];
	char r[IDENT_REASON_MAX];
	int ret;

	if (a->force_jwks)
		issuer_refresh(a->iss, true, r, sizeof(r));   /* the verdict below tells */
	ident_jwt_policy(&a->id, real_now(), aud, &jp);
	if ((ret = issuer_verify(a->iss, tok, len, &jp, c, why, whylen)) < 0)
		return ret;
	ret = ident_own_check(&a->id, c, why, whylen);
	if (ret < 0)
		jwt_claims_free(c);
	return ret;
}

/* ---- HTTP (the rules of ident_jwks.c; its fetcher is static there) ----- */


static bool is_json(const char *ct)
{
	size_t n = strcspn(ct, "; \t");

	return n == 16 && strncasecmp(ct, "application/json", 16) == 0;
}

/* application/x-www-form-urlencoded (RFC 6749 §2.3.1 wants it for the
 * Basic credentials too). Returns a malloc'd string or NULL. */
static char *form_encode(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = strlen(s), k = 0;
	char *out = malloc(3 * n + 1);

	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~') {
			out[k++] = (char)ch;
		} else {
			out[k++] = '%';
			out[k++] = hex[ch >> 4];
			out[k++] = hex[ch & 15];
		}
	}
	out[k] = '\0';
	return out;
}

/* ---- local --------------------------------------------------------------- */

static int local_open(struct ident_agent *a, const struct policy_identity *id,
		      const char *state_dir, char *why, size_t whylen)
{
	(void)id;
	(void)state_dir;
	(void)why;
	(void)whylen;
	snprintf(a->pr.iss, sizeof(a->pr.iss), "local");
	snprintf(a->pr.sub, sizeof(a->pr.sub), "%s", a->name);
	a->pr.exp = 0;
	a->pr.verified = false;
	snprintf(a->pr.reason, sizeof(a->pr.reason), "identity source 'local' is not verified");
	return 0;
}

static int local_tick(struct ident_agent *a, uint64_t now_ms)
{
	(void)a;
	(void)now_ms;
	return 0;
}

static void nothing_to_close(struct ident_agent *a)
{
	(void)a;
}

/* ---- shared by the verifying sources ------------------------------------- */

static int dupstr(char **dst, const char *src)
{
	if (!src)
		return 0;
	*dst = strdup(src);
	return *dst ? 0 : -ENOMEM;
}

static int issuer_open(struct ident_agent *a, const struct policy_identity *id,
		       const char *state_dir, char *why, size_t whylen)
{
	struct issuer_opts opts = { 0 };
	char cache[PATH_MAX], r[IDENT_REASON_MAX];

	if (!id->issuer || !id->audience) {
		ident_setwhy(why, whylen, "identity source '%s' needs an issuer and an audience", a->ops->name);
		return -EINVAL;
	}
	a->id.source = id->source;
	if (dupstr(&a->id.issuer, id->issuer) || dupstr(&a->id.audience, id->audience) ||
	    dupstr(&a->id.client_id, id->client_id) || dupstr(&a->id.groups_claim, id->groups_claim) ||
	    dupstr(&a->id.client_secret_file, id->client_secret_file) ||
	    dupstr(&a->id.private_key_file, id->private_key_file) ||
	    dupstr(&a->id.token_file, id->token_file)) {
		ident_setwhy(why, whylen, "out of memory");
		return -ENOMEM;
	}
	ident_jwks_cache_path(state_dir, id->issuer, cache, sizeof(cache));
	opts.cache_file = cache[0] ? cache : NULL;
	a->iss = issuer_new(id->issuer, &opts, r, sizeof(r));
	if (!a->iss) {
		int err = errno ? errno : EINVAL;

		ident_setwhy(why, whylen, "issuer '%s': %s", id->issuer, r);
		return -err;
	}
	snprintf(a->pr.iss, sizeof(a->pr.iss), "%s", id->issuer);
	snprintf(a->pr.reason, sizeof(a->pr.reason), "not obtained yet");
	a->backoff_ms = IDENT_BACKOFF_MIN_MS;
	return 0;
}

static void issuer_close(struct ident_agent *a)
{
	issuer_free(a->iss);
	a->iss = NULL;
}

/* ---- client_credentials -------------------------------------------------- */

static int cc_open(struct ident_agent *a, const struct policy_identity *id,
		   const char *state_dir, char *why, size_t whylen)
{
	if (!id->client_id || !id->client_secret_file == !id->private_key_file) {
		ident_setwhy(why, whylen, "identity source 'client_credentials' needs client_id and "
		       "one of client_secret_file, private_key_file");
		return -EINVAL;
	}
	return issuer_open(a, id, state_dir, why, whylen);
}

/*
 * Reads the secret (trailing whitespace trimmed) into a malloc'd buffer of
 * IDENT_SECRET_MAX + 1 bytes the caller wipes. Notes a file open to group
 * or others in the principal. Re-read on every fetch, so a rotated secret
 * is picked up without a reload.
 */
static char *read_secret_file(struct ident_agent *a, const char *path, const char *what, size_t max,
			      size_t *lenp, char *why, size_t whylen)
{
	char owhy[300];
	mode_t mode = 0;
	char *buf = secret_read(path, max, lenp, &mode, owhy, sizeof(owhy));

	if (!buf) {
		ident_setwhy(why, whylen, "%s: %s", what, owhy);
		return NULL;
	}
	a->pr.secret_file_exposed = (mode & (S_IRWXG | S_IRWXO)) != 0;
	while (*lenp && is_space(buf[*lenp - 1]))
		buf[--*lenp] = '\0';
	if (*lenp == 0) {
		ident_setwhy(why, whylen, "%s '%s': empty", what, path);
		wipe_free(buf, max + 1);
		return NULL;
	}
	return buf;
}

static char *read_secret(struct ident_agent *a, char *why, size_t whylen)
{
	size_t n;

	return read_secret_file(a, a->id.client_secret_file, "client secret file", IDENT_SECRET_MAX, &n,
				why, whylen);
}

/* token_endpoint from discovery, checked like a jwks_uri. */
static int cc_discover(struct ident_agent *a, char *why, size_t whylen)
{
	struct ident_http_resp resp;
	char url[IDENT_URL_MAX + 64], r[IDENT_REASON_MAX];
	size_t n = strlen(a->id.issuer);
	const char *s;
	json_error_t jerr;
	json_t *doc;
	int ret;

	while (n > 0 && a->id.issuer[n - 1] == '/')
		n--;
	if ((size_t)snprintf(url, sizeof(url), "%.*s/.well-known/openid-configuration", (int)n,
			     a->id.issuer) >= sizeof(url)) {
		ident_setwhy(why, whylen, "discovery: issuer URL too long");
		return -ENAMETOOLONG;
	}
	ret = ident_http(url, NULL, NULL, NULL, &resp, r, sizeof(r));
	if (ret < 0) {
		ident_setwhy(why, whylen, "discovery: %s", r);
		return ret;
	}
	if (resp.status != 200 || !is_json(resp.content_type) || !resp.body) {
		long status = resp.status;

		ident_setwhy(why, whylen, "discovery: HTTP status %ld%s", status,
		       status == 200 ? ", not JSON" : "");
		ident_http_resp_clear(&resp);
		return status >= 500 || status == 0 ? -EHOSTUNREACH : -EPROTO;
	}
	doc = json_loadb(resp.body, resp.len, JSON_REJECT_DUPLICATES, &jerr);
	ident_http_resp_clear(&resp);
	if (!json_is_object(doc)) {
		ident_setwhy(why, whylen, "discovery: not a JSON object");
		ret = -EPROTO;
		goto out;
	}
	s = json_string_value(json_object_get(doc, "issuer"));
	if (!s || strcmp(s, a->id.issuer) != 0) {
		ident_setwhy(why, whylen, "discovery: the document's issuer differs from the configured issuer");
		ret = -EPROTO;
		goto out;
	}
	s = json_string_value(json_object_get(doc, "token_endpoint"));
	if (!s) {
		ident_setwhy(why, whylen, "discovery: no token_endpoint");
		ret = -EPROTO;
		goto out;
	}
	ret = ident_url_check(s, a->id.issuer, r, sizeof(r));
	if (ret < 0) {
		ident_setwhy(why, whylen, "discovery: token_endpoint refused: %s", r);
		ret = -EPROTO;
		goto out;
	}
	snprintf(a->token_endpoint, sizeof(a->token_endpoint), "%s", s);
	ret = 0;
out:
	json_decref(doc);
	return ret;
}

/* An OAuth error code (RFC 6749 §5.2) is a short token; anything else from
 * the body is not worth quoting. */
static const char *oauth_error(json_t *doc)
{
	const char *e = json_string_value(json_object_get(doc, "error"));
	size_t n;

	if (!e)
		return NULL;
	n = strlen(e);
	if (n == 0 || n > 64)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (!(islower((unsigned char)e[i]) || e[i] == '_'))
			return NULL;
	return e;
}

/* "Authorization: Basic base64(enc(id):enc(secret))"; malloc'd, wiped by the caller. */
static char *basic_auth(const char *client_id, const char *secret, size_t *lenp)
{
	char *eid = form_encode(client_id), *esec = form_encode(secret), *pair = NULL, *hdr = NULL;
	size_t plen = 0, hlen = 0;

	if (!eid || !esec)
		goto out;
	plen = strlen(eid) + 1 + strlen(esec);
	pair = malloc(plen + 1);
	if (!pair)
		goto out;
	snprintf(pair, plen + 1, "%s:%s", eid, esec);
	hlen = 21 + 4 * ((plen + 2) / 3) + 1;
	hdr = malloc(hlen);
	if (!hdr)
		goto out;
	memcpy(hdr, "Authorization: Basic ", 21);
	EVP_EncodeBlock((unsigned char *)hdr + 21, (const unsigned char *)pair, (int)plen);
	*lenp = hlen;
out:
	wipe_free(eid, eid ? strlen(eid) + 1 : 0);
	wipe_free(esec, esec ? strlen(esec) + 1 : 0);
	wipe_free(pair, plen + 1);
	return hdr;
}

#define IDENT_KEY_MAX 16384   /* bytes of a private key PEM file */

/* A fresh private_key_jwt assertion for the token endpoint; the key is
 * re-read every time (rotation without reload) and wiped. */
static char *client_assertion(struct ident_agent *a, char *why, size_t whylen)
{
	size_t n = 0;
	char *pem = read_secret_file(a, a->id.private_key_file, "private key file", IDENT_KEY_MAX, &n,
				     why, whylen);
	EVP_PKEY *key = NULL;
	const char *alg;
	char *jwt = NULL;

	if (!pem)
		return NULL;
	if (ident_assert_key_load(pem, n, &key, &alg, why, whylen) == 0)
		jwt = ident_client_assertion(key, alg, a->id.client_id, a->token_endpoint, real_now(),
					     why, whylen);
	EVP_PKEY_free(key);
	wipe_free(pem, IDENT_KEY_MAX + 1);
	return jwt;
}

/*
 * POST the client_credentials grant. On success *tokp is the access token
 * (malloc'd, the caller wipes it). definitive is set when the issuer said
 * no (4xx: bad secret, disabled client, unknown resource).
 */
static int cc_request(struct ident_agent *a, char **tokp, size_t *lenp, bool *definitive,
		      char *why, size_t whylen)
{
	struct ident_http_resp resp;
	char *secret, *auth = NULL, *eaud = NULL, *body = NULL, r[IDENT_REASON_MAX];
	char *assertion = NULL, *eid = NULL;
	size_t authlen = 0, blen;
	int n;
	json_error_t jerr;
	json_t *doc = NULL;
	const char *tok, *e;
	long status;
	int ret;

	*definitive = false;
	if (a->id.private_key_file) {
		/* private_key_jwt: the assertion goes in the body, no Authorization. */
		assertion = client_assertion(a, why, whylen);
		if (!assertion)
			return -EACCES;
	} else {
		secret = read_secret(a, why, whylen);
		if (!secret)
			return -EACCES;
		auth = basic_auth(a->id.client_id, secret, &authlen);
		wipe_free(secret, IDENT_SECRET_MAX + 1);
		if (!auth) {
			ident_setwhy(why, whylen, "out of memory");
			return -ENOMEM;
		}
	}
	eaud = form_encode(a->id.audience);
	if (!eaud) {
		ident_setwhy(why, whylen, "out of memory");
		ret = -ENOMEM;
		goto out;
	}
	/* RFC 8707 resource, and the "audience" most other issuers (Auth0,
	 * Okta custom servers) read instead. */
	blen = strlen(eaud) * 2 + 64;
	if (assertion) {
		eid = form_encode(a->id.client_id);
		if (!eid) {
			ident_setwhy(why, whylen, "out of memory");
			ret = -ENOMEM;
			goto out;
		}
		blen += strlen(eid) + strlen(assertion) + 128;
	}
	body = malloc(blen);
	if (!body) {
		ident_setwhy(why, whylen, "out of memory");
		ret = -ENOMEM;
		goto out;
	}
	n = snprintf(body, blen, "grant_type=client_credentials&resource=%s&audience=%s", eaud, eaud);
	if (assertion)
		snprintf(body + n, blen - n, "&client_id=%s&client_assertion_type=urn%%3Aietf%%3Aparams%%3A"
			 "oauth%%3Aclient-assertion-type%%3Ajwt-bearer&client_assertion=%s", eid, assertion);
	ret = ident_http(a->token_endpoint, NULL, body, auth, &resp, r, sizeof(r));
	if (ret < 0) {
		ident_setwhy(why, whylen, "token endpoint: %s", r);
		goto out;
	}
	status = resp.status;
	if (resp.body && is_json(resp.content_type))
		doc = json_loadb(resp.body, resp.len, JSON_REJECT_DUPLICATES, &jerr);
	ident_http_resp_clear(&resp);
	if (status != 200) {
		e = json_is_object(doc) ? oauth_error(doc) : NULL;
		ident_setwhy(why, whylen, "token endpoint: HTTP status %ld%s%s", status,
		       e ? ": " : "", e ? e : "");
		*definitive = status >= 400 && status < 500 && status != 429 && status != 408;
		ret = *definitive ? -EACCES : -EHOSTUNREACH;
		goto out;
	}
	tok = json_is_object(doc) ? json_string_value(json_object_get(doc, "access_token")) : NULL;
	if (!tok) {
		ident_setwhy(why, whylen, "token endpoint: no access_token in the response");
		ret = -EPROTO;
		goto out;
	}
	*lenp = strlen(tok);
	*tokp = strdup(tok);
	if (!*tokp) {
		ident_setwhy(why, whylen, "out of memory");
		ret = -ENOMEM;
		goto out;
	}
	ret = 0;
out:
	if (doc) {
		/* jansson holds the token in its own string; wipe it there too. */
		json_t *at = json_object_get(doc, "access_token");

		if (json_is_string(at))
			OPENSSL_cleanse((char *)json_string_value(at), json_string_length(at));
		json_decref(doc);
	}
	wipe_free(auth, authlen);
	if (assertion)
		wipe_free(assertion, strlen(assertion));
	free(eid);
	free(eaud);
	if (body)
		wipe_free(body, strlen(body));
	return ret;
}

static int cc_tick(struct ident_agent *a, uint64_t now_ms)
{
	struct jwt_claims c = { 0 };
	char why[IDENT_REASON_MAX], vwhy[200];
	bool definitive = false;
	char *tok = NULL;
	size_t len = 0;
	int64_t now, lifetime, at;
	int ret;

	expire_check(a);
	if (now_ms < a->next_ms)
		return 0;
	if (!a->token_endpoint[0]) {
		ret = cc_discover(a, why, sizeof(why));
		if (ret < 0) {
			failed(a, now_ms, false, why);
			return ret;
		}
	}
	ret = cc_request(a, &tok, &len, &definitive, why, sizeof(why));
	if (ret < 0) {
		if (!definitive)
			a->token_endpoint[0] = '\0';    /* rediscover: the issuer may have moved on */
		failed(a, now_ms, definitive, why);
		return ret;
	}
	ret = verify_token(a, tok, len, &c, vwhy, sizeof(vwhy));
	if (ret < 0) {
		/* An unknown kid may be a key rotated in since the last JWKS
		 * fetch, which the refetch limit (one per 30 s) can hold back:
		 * keep retrying with backoff instead of waiting for the file
		 * to change again. */
		bool transient = verify_transient(ret) || ret == -ENOKEY;

		if (ret == -EHOSTUNREACH || ret == -ENOKEY)
			a->force_jwks = true;
		snprintf(why, sizeof(why), "access token refused: %s", vwhy);
		failed(a, now_ms, !transient, why);
		goto out;
	}
	ret = set_verified(a, tok, len, &c);
	if (ret < 0) {
		failed(a, now_ms, false, "out of memory");
		goto out;
	}
	succeeded(a);
	/* Refresh at IDENT_REFRESH_PCT of the lifetime (from iat, which
	 * at+jwt requires), never sooner than a second from now. */
	now = real_now();
	at = c.has_iat ? c.iat : now;
	lifetime = a->tok_exp - at;   /* its exp, or its age limit when sooner */
	at += lifetime * IDENT_REFRESH_PCT / 100;
	a->next_ms = now_ms + (uint64_t)(at - now > 1 ? at - now : 1) * 1000;
out:
	jwt_claims_free(&c);
	wipe_free(tok, len + 1);
	return ret;
}

/* ---- token_file ---------------------------------------------------------- */

static int tf_open(struct ident_agent *a, const struct policy_identity *id,
		   const char *state_dir, char *why, size_t whylen)
{
	if (!id->token_file) {
		ident_setwhy(why, whylen, "identity source 'token_file' needs token_file");
		return -EINVAL;
	}
	return issuer_open(a, id, state_dir, why, whylen);
}

static bool same_file(const struct stat *x, const struct stat *y)
{
	return x->st_dev == y->st_dev && x->st_ino == y->st_ino && x->st_size == y->st_size &&
	       x->st_mtim.tv_sec == y->st_mtim.tv_sec && x->st_mtim.tv_nsec == y->st_mtim.tv_nsec &&
	       x->st_ctim.tv_sec == y->st_ctim.tv_sec && x->st_ctim.tv_nsec == y->st_ctim.tv_nsec;
}

/* Reads at most JWT_MAX_TOKEN + 64 bytes: enough for jwt_verify to call a
 * larger token too large. Buffer of that size + 1, wiped by the caller. */
static char *tf_read(const char *path, size_t *lenp, char *why, size_t whylen)
{
	size_t cap = JWT_MAX_TOKEN + 64, n = 0;
	char *buf;
	int fd, err;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		err = errno;
		ident_setwhy(why, whylen, "token file '%s': %s", path, strerror(err));
		return NULL;
	}
	buf = malloc(cap + 1);
	if (!buf) {
		close(fd);
		ident_setwhy(why, whylen, "out of memory");
		return NULL;
	}
	while (n < cap) {
		ssize_t r = read(fd, buf + n, cap - n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			err = errno;
			close(fd);
			wipe_free(buf, cap + 1);
			ident_setwhy(why, whylen, "token file '%s': %s", path, strerror(err));
			return NULL;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	buf[n] = '\0';
	*lenp = n;
	return buf;
}

static int tf_tick(struct ident_agent *a, uint64_t now_ms)
{
	struct jwt_claims c = { 0 };
	char why[IDENT_REASON_MAX], vwhy[200];
	size_t len = 0, off = 0, n;
	struct stat st;
	char *buf;
	int ret, err;

	expire_check(a);
	/* Read with root's rights for the agent: only from a path no one but
	 * root can re-point (an agent that may write the token's directory
	 * could swap in a symlink to another agent's root-only token). */
	if ((err = path_trusted(a->id.token_file, why, sizeof(why))) < 0 && err != -ENOENT) {
		char pw[IDENT_REASON_MAX - 32];

		a->have_stat = false;
		if (a->token == NULL && now_ms < a->next_ms)
			return 0;
		snprintf(pw, sizeof(pw), "%s", why);
		snprintf(why, sizeof(why), "token file refused: %s", pw);
		failed(a, now_ms, true, why);   /* a held token goes too */
		return err;
	}
	if (stat(a->id.token_file, &st) < 0) {
		err = errno;
		a->have_stat = false;
		if (now_ms < a->next_ms)
			return 0;
		snprintf(why, sizeof(why), "token file '%s': %s", a->id.token_file, strerror(err));
		failed(a, now_ms, false, why);
		return -err;
	}
	if (a->have_stat && same_file(&st, &a->st) && (!a->retry || now_ms < a->next_ms))
		return 0;
	a->st = st;
	a->have_stat = true;
	buf = tf_read(a->id.token_file, &len, why, sizeof(why));
	if (!buf) {
		a->retry = true;
		failed(a, now_ms, false, why);
		return -EIO;
	}
	n = len;
	while (off < n && is_space(buf[off]))
		off++;
	while (n > off && is_space(buf[n - 1]))
		n--;
	if (n == off) {
		/* A writer that truncates then writes: look again next tick. */
		a->retry = true;
		failed(a, now_ms, false, "token file is empty");
		ret = -ENODATA;
		goto out;
	}
	ret = verify_token(a, buf + off, n - off, &c, vwhy, sizeof(vwhy));
	if (ret != -ENOKEY)
		a->nokey_since = 0;
	else if (!a->nokey_since)
		a->nokey_since = now_ms;
	if (ret < 0) {
		/* An unknown kid may be a key rotated in since the last JWKS
		 * fetch, which the refetch limit (one per 30 s) can hold back:
		 * keep retrying with backoff instead of waiting for the file
		 * to change again, and keep the last good token meanwhile. But
		 * only for as long as a refetch takes to be allowed: a kid
		 * still unknown after that is a token that does not verify,
		 * and the file no longer holds the token the agent was
		 * verified with (review, stop 48). */
		bool nokey_long = ret == -ENOKEY &&
				  now_ms - a->nokey_since > (uint64_t)(IDENT_REFETCH_MIN + 5) * 1000;
		bool transient = verify_transient(ret) || (ret == -ENOKEY && !nokey_long);

		if (ret == -EHOSTUNREACH || ret == -ENOKEY)
			a->force_jwks = true;
		a->retry = transient || ret == -ENOKEY;
		snprintf(why, sizeof(why), "token file token refused: %s", vwhy);
		failed(a, now_ms, !transient, why);
		goto out;
	}
	ret = set_verified(a, buf + off, n - off, &c);
	if (ret < 0) {
		a->retry = true;
		failed(a, now_ms, false, "out of memory");
		goto out;
	}
	a->retry = false;
	succeeded(a);
out:
	jwt_claims_free(&c);
	wipe_free(buf, JWT_MAX_TOKEN + 64 + 1);
	return ret;
}

/* ---- the table and the agent --------------------------------------------- */

static const struct ident_source_ops ident_sources[] = {
	[IDENT_LOCAL] = { "local", local_open, local_tick, nothing_to_close },
	[IDENT_CLIENT_CREDENTIALS] = { "client_credentials", cc_open, cc_tick, issuer_close },
	[IDENT_TOKEN_FILE] = { "token_file", tf_open, tf_tick, issuer_close },
};

static void free_identity(struct policy_identity *id)
{
	free(id->issuer);
	free(id->client_id);
	free(id->client_secret_file);
	free(id->private_key_file);
	free(id->audience);
	free(id->token_file);
	free(id->groups_claim);
	memset(id, 0, sizeof(*id));
}

struct ident_agent *ident_agent_new(const char *agent_name, const struct policy_identity *id,
				    const char *state_dir, char *why, size_t whylen)
{
	struct ident_agent *a;
	int ret;

	if (!agent_name || !id || (unsigned)id->source >= sizeof(ident_sources) / sizeof(ident_sources[0])) {
		ident_setwhy(why, whylen, "bad arguments");
		errno = EINVAL;
		return NULL;
	}
	a = calloc(1, sizeof(*a));
	if (!a || !(a->name = strdup(agent_name))) {
		free(a);
		ident_setwhy(why, whylen, "out of memory");
		errno = ENOMEM;
		return NULL;
	}
	a->ops = &ident_sources[id->source];
	a->pr.source = a->ops->name;
	ret = a->ops->open(a, id, state_dir, why, whylen);
	if (ret < 0) {
		ident_agent_free(a);
		errno = -ret;
		return NULL;
	}
	if (why && whylen)
		why[0] = '\0';
	return a;
}

static bool principal_equal(const struct ident_principal *x, const struct ident_principal *y)
{
	if (x->verified != y->verified || x->exp != y->exp || x->ngroups != y->ngroups ||
	    x->groups_truncated != y->groups_truncated ||
	    x->secret_file_exposed != y->secret_file_exposed ||
	    strcmp(x->iss, y->iss) || strcmp(x->sub, y->sub) || strcmp(x->client_id, y->client_id) ||
	    strcmp(x->reason, y->reason) || strcmp(x->warning, y->warning))
		return false;
	for (size_t i = 0; i < x->ngroups; i++)
		if (strcmp(x->groups[i], y->groups[i]))
			return false;
	return true;
}

/*
 * A held token is checked again whenever the issuer's keys change, and the
 * keys are refreshed at their TTL while a token is held: an issuer that
 * withdraws a key (rotated away from, compromised) takes away the identity
 * of every token it signed, instead of leaving it until the token's exp or
 * 24 h (review, stop 48). An outage keeps the token, as a failed refresh
 * does. A client_credentials agent asks for a new token at once; a token
 * file is read again with backoff, so that an issuer that publishes the
 * key again gets its agent back without waiting for a new token.
 */
static void held_recheck(struct ident_agent *a, uint64_t now_ms)
{
	struct jwt_policy jp;
	const char *aud[1];
	char why[200];
	int ret;

	if (!a->token || !a->iss)
		return;
	ident_jwt_policy(&a->id, real_now(), aud, &jp);
	ret = issuer_recheck(a->iss, &a->keys_gen, a->token, a->toklen, &jp, why, sizeof(why));
	if (ret == 0 || verify_transient(ret))
		return;
	set_unverified(a, "the held token no longer verifies: %s", why);
	a->next_ms = now_ms;
	a->retry = true;
}

int ident_agent_tick(struct ident_agent *a, uint64_t now_ms)
{
	struct ident_principal before;

	if (!a)
		return -EINVAL;
	before = a->pr;
	a->ops->tick(a, now_ms);
	held_recheck(a, now_ms);
	if (atomic_exchange(&a->user_refresh, false) && a->iss) {
		char why[256];

		issuer_refresh(a->iss, false, why, sizeof(why));
	}
	return principal_equal(&before, &a->pr) ? 0 : 1;
}

int ident_user_check(const struct jwt_claims *c, const char *agent_iss, const char *agent_sub,
		     char *why, size_t whylen)
{
	/* RFC 8693 §4.1: act names the party acting for the subject. A token
	 * whose actor is another agent was exchanged for that agent, not this
	 * one: replayed here it would borrow someone else's delegation. */
	if (c->act_sub && (!agent_sub || !agent_sub[0] || strcmp(c->act_sub, agent_sub) != 0)) {
		ident_setwhy(why, whylen, "the token's act.sub names another actor than this agent's principal");
		return -EACCES;
	}
	/* act.sub is a name in act.iss's namespace when the token says so: the
	 * same name at another issuer (a federating token service) is another
	 * party, not this agent */
	if (c->act_iss && (!agent_iss || strcmp(c->act_iss, agent_iss) != 0)) {
		ident_setwhy(why, whylen, "the token's act.iss names another issuer than this agent's principal's");
		return -EACCES;
	}
	/* the agent's own token (it can read its token_file) is not a user's:
	 * presented as one it would satisfy a delegation gate with the agent's
	 * own roles, and name the agent as the user in audit */
	if (agent_sub && agent_sub[0] && strcmp(c->sub, agent_sub) == 0) {
		ident_setwhy(why, whylen, "the token's subject is the agent's own principal, not a user");
		return -EACCES;
	}
	return 0;
}

void ident_principal_from_claims(const struct jwt_claims *c, const char *source, struct ident_principal *out)
{
	size_t n = 0;

	memset(out, 0, sizeof(*out));
	out->source = source;
	snprintf(out->iss, sizeof(out->iss), "%s", c->iss);
	snprintf(out->sub, sizeof(out->sub), "%s", c->sub);
	snprintf(out->client_id, sizeof(out->client_id), "%s",
		 c->client_id ? c->client_id : c->azp ? c->azp : "");
	out->exp = c->exp;
	out->key = c->key;
	for (size_t i = 0; i < c->ngroups; i++) {
		if (n == IDENT_MAX_GROUPS || strlen(c->groups[i]) >= IDENT_GROUP_MAX) {
			out->groups_truncated = true;
			continue;
		}
		snprintf(out->groups[n++], IDENT_GROUP_MAX, "%s", c->groups[i]);
	}
	out->ngroups = n;
	out->verified = true;
}

int ident_user_verify(struct ident_agent *a, const char *tok, size_t len, const char *agent_iss,
		      const char *agent_sub, struct ident_principal *user, char *why, size_t whylen)
{
	struct jwt_claims c;
	struct jwt_policy jp;
	const char *aud[1];
	bool want = false;
	int ret;

	memset(user, 0, sizeof(*user));
	if (!a || a->id.source == IDENT_LOCAL || !a->iss) {
		ident_setwhy(why, whylen, "the agent has no identity provider to verify user tokens with");
		return -ENOTSUP;
	}
	ident_jwt_policy(&a->id, real_now(), aud, &jp);
	jp.typ = NULL;   /* a user's access token or ID-token-shaped JWT; never another explicit typ */
	ret = issuer_verify_cached(a->iss, tok, len, &jp, &c, &want, why, whylen);
	if (want)
		atomic_store(&a->user_refresh, true);
	if (ret == 0 && (ret = ident_user_check(&c, agent_iss, agent_sub, why, whylen)) == 0) {
		ident_principal_from_claims(&c, "user_token", user);
		/* a session that holds the principal (postgres) stops acting
		 * for the user when verification would refuse the token */
		if (c.has_iat && c.iat + IDENT_MAX_AGE_S + IDENT_LEEWAY_S < user->exp)
			user->exp = c.iat + IDENT_MAX_AGE_S + IDENT_LEEWAY_S;
	}
	jwt_claims_free(&c);
	return ret;
}

int ident_user_recheck(struct ident_agent *a, const struct ident_principal *user, uint64_t *gen,
		       char *why, size_t whylen)
{
	bool want = false;
	int ret;

	if (!a || !a->iss || !user || !user->key.set) {
		ident_setwhy(why, whylen, "the session holds no verified user token");
		return -EINVAL;
	}
	ret = issuer_key_check(a->iss, gen, &user->key, &want, why, whylen);
	if (want)
		atomic_store(&a->user_refresh, true);
	return ret;
}

void ident_agent_principal(const struct ident_agent *a, struct ident_principal *out)
{
	*out = a->pr;
}

const char *ident_agent_token(const struct ident_agent *a)
{
	return a && a->pr.verified ? a->token : NULL;
}

void ident_agent_free(struct ident_agent *a)
{
	if (!a)
		return;
	if (a->ops)
		a->ops->close(a);
	drop_token(a);
	free_identity(&a->id);
	free(a->name);
	OPENSSL_cleanse(&a->pr, sizeof(a->pr));
	free(a);
}
