// SPDX-License-Identifier: Apache-2.0
/*
 * http_upstream: per-target TLS client contexts and credential lines for
 * the http module, cached per policy. See http_upstream.h.
 */
#include "http_upstream.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "http_msg.h"
#include "util.h"

struct up_entry {
	SSL_CTX *ctx;
	bool ctx_done;
	uint64_t ctx_stamp;        /* files_stamp() of its files when it was built */
	uint64_t ctx_checked_ms;   /* when that was last compared (monotonic) */
	char *cred;                /* the header line, wiped on release */
	size_t cred_len;
	bool cred_done;
	const char *cred_err;
	uint64_t cred_at_ms;       /* when the files were read (monotonic) */
};

/* Credential files are read again when the last read is this old, so a
 * rotated token (a Kubernetes service account's, renewed hourly) is sent
 * within a second of its rotation, and a file that was missing or bad is
 * tried again, without a reload; at most one read a second per target. */
#define CRED_REREAD_MS 1000

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

/* One cache per policy: after agentgate reload, connections opened before
 * it still use the previous policy (c->policy) beside the new one; with a
 * single cache the two would evict each other on every request. The least
 * recently used of UP_CACHES is replaced. */
#define UP_CACHES 4
static struct up_cache {
	const struct policy *policy;
	char hash[65];
	struct up_entry *e;
	size_t n;
	uint64_t used;
} caches[UP_CACHES];
static uint64_t cache_clock;

static void entry_free(struct up_entry *e)
{
	SSL_CTX_free(e->ctx);
	if (e->cred) {
		OPENSSL_cleanse(e->cred, e->cred_len);
		free(e->cred);
	}
	memset(e, 0, sizeof(*e));
}

static void cache_free(struct up_cache *c)
{
	for (size_t i = 0; i < c->n; i++)
		entry_free(&c->e[i]);
	free(c->e);
	memset(c, 0, sizeof(*c));
}

void http_upstream_reset(void)
{
	pthread_mutex_lock(&lock);
	for (int i = 0; i < UP_CACHES; i++)
		cache_free(&caches[i]);
	pthread_mutex_unlock(&lock);
}

/* The entry of target t under policy p; lock held. Connections keep their
 * SSL (which holds a reference on its context) when a cache is replaced. */
static struct up_entry *entry(const struct policy *p, int t)
{
	struct up_cache *c = NULL, *lru = &caches[0];

	for (int i = 0; i < UP_CACHES && !c; i++) {
		if (caches[i].policy == p && strcmp(caches[i].hash, p->hash) == 0 && caches[i].n == p->ntargets)
			c = &caches[i];
		else if (caches[i].used < lru->used)
			lru = &caches[i];
	}
	if (!c) {
		c = lru;
		cache_free(c);
		c->e = calloc(p->ntargets ? p->ntargets : 1, sizeof(*c->e));
		if (!c->e)
			return NULL;
		c->n = p->ntargets;
		c->policy = p;
		snprintf(c->hash, sizeof(c->hash), "%s", p->hash);
	}
	c->used = ++cache_clock;
	return t >= 0 && (size_t)t < c->n ? &c->e[t] : NULL;
}

/* A small secret file into buf (secret_read: trusted path, no NUL, trailing
 * newline removed). 0 or -errno; on error buf holds nothing of the file. */
static int read_secret(const char *path, char *buf, size_t cap, size_t *len)
{
	char why[300];
	char *t = secret_read(path, cap - 1, len, NULL, why, sizeof(why));

	if (!t) {
		int err = errno ? errno : EIO;

		ag_log(LOG_LVL_WARN, "http: upstream credential: %s", why);
		return -err;
	}
	memcpy(buf, t, *len + 1);
	OPENSSL_cleanse(t, cap);
	free(t);
	return 0;
}

/* Builds the credential line of target t into e. Lock held. */
static void load_cred(const struct policy_target *t, struct up_entry *e)
{
	const struct policy_upstream *u = &t->upstream;
	char secret[HTTP_CRED_MAX], line[HTTP_CRED_MAX * 2];
	size_t slen = 0;
	int n = 0;

	e->cred_done = true;
	if (u->bearer_agent_token)
		return;   /* per agent, per request: the http module adds it */
	if (u->bearer_token_file) {
		if (read_secret(u->bearer_token_file, secret, sizeof(secret), &slen) < 0) {
			e->cred_err = "cannot read the target's bearer_token_file";
			return;
		}
		n = snprintf(line, sizeof(line), "Authorization: Bearer %s\r\n", secret);
	} else if (u->basic_auth_file) {
		unsigned char *b64 = (unsigned char *)line + 21;

		if (read_secret(u->basic_auth_file, secret, sizeof(secret), &slen) < 0) {
			e->cred_err = "cannot read the target's basic_auth_file";
			return;
		}
		if (!memchr(secret, ':', slen)) {
			OPENSSL_cleanse(secret, sizeof(secret));
			e->cred_err = "the target's basic_auth_file must hold user:password";
			return;
		}
		memcpy(line, "Authorization: Basic ", 21);
		n = 21 + EVP_EncodeBlock(b64, (const unsigned char *)secret, (int)slen);
		memcpy(line + n, "\r\n", 3);
		n += 2;
	} else if (u->header_name && u->header_value_file) {
		if (read_secret(u->header_value_file, secret, sizeof(secret), &slen) < 0) {
			e->cred_err = "cannot read the target's header_value_file";
			return;
		}
		n = snprintf(line, sizeof(line), "%s: %s\r\n", u->header_name, secret);
	} else {
		return;   /* nothing to inject */
	}
	/* A secret with a CR, LF or control byte would split the header. */
	if (n <= 0 || (size_t)n >= HTTP_CRED_MAX ||
	    !http_value_ok((const uint8_t *)secret, slen) ||
	    (u->header_name && !u->bearer_token_file && !u->basic_auth_file &&
	     !http_token_ok((const uint8_t *)u->header_name, strlen(u->header_name)))) {
		e->cred_err = "the target's credential is too long or not a valid header value";
	} else if ((e->cred = malloc((size_t)n))) {
		memcpy(e->cred, line, (size_t)n);
		e->cred_len = (size_t)n;
	} else {
		e->cred_err = "out of memory";
	}
	OPENSSL_cleanse(secret, sizeof(secret));
	OPENSSL_cleanse(line, sizeof(line));
}

static bool has_cred_file(const struct policy_target *t)
{
	const struct policy_upstream *u = &t->upstream;

	return !u->bearer_agent_token &&
	       (u->bearer_token_file || u->basic_auth_file || (u->header_name && u->header_value_file));
}

int http_upstream_cred(const struct policy *p, int t, char *buf, size_t cap, const char **why)
{
	struct up_entry *e;
	int ret = 0;

	*why = NULL;
	pthread_mutex_lock(&lock);
	e = entry(p, t);
	if (!e) {
		*why = "out of memory";
		ret = -ENOMEM;
	} else {
		uint64_t now = now_ns_mono() / 1000000;

		if (e->cred_done && now - e->cred_at_ms >= CRED_REREAD_MS && has_cred_file(&p->targets[t])) {
			if (e->cred) {
				OPENSSL_cleanse(e->cred, e->cred_len);
				free(e->cred);
			}
			e->cred = NULL;
			e->cred_len = 0;
			e->cred_err = NULL;
			e->cred_done = false;
		}
		if (!e->cred_done) {
			load_cred(&p->targets[t], e);
			e->cred_at_ms = now;
		}
		if (e->cred_err) {
			*why = e->cred_err;
			ret = -EINVAL;
		} else if (e->cred_len > cap) {
			*why = "credential too long";
			ret = -ENOBUFS;
		} else if (e->cred_len) {
			memcpy(buf, e->cred, e->cred_len);
			ret = (int)e->cred_len;
		}
	}
	pthread_mutex_unlock(&lock);
	return ret;
}

static SSL_CTX *make_ctx(const struct policy_upstream *u, char *why, size_t whylen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	/* require with a ca_file checks the chain (not the name), as libpq's
	 * sslmode=require does with a root certificate file */
	bool verify = policy_tls_check(u) >= POLICY_TLS_CHAIN;

	if (!ctx) {
		snprintf(why, whylen, "upstream TLS: cannot make a context");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	/* An upstream that closes without close_notify (many servers and load
	 * balancers do) is an EOF, as a plain FIN is: the module judges whether
	 * an answer was cut. As an error it reset the agent's connection, also
	 * for an idle keep-alive leg that should just be dialled again (review,
	 * stop 36). conn.c makes it that EOF, marked (conn_in_eof_bare()), so
	 * no SSL_OP_IGNORE_UNEXPECTED_EOF here: it hid the mark, and an answer
	 * ended only by the close was passed on as whole when cut (stop 66). */
	SSL_CTX_set_verify(ctx, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
	if (verify) {
		int ok = u->ca_file ? SSL_CTX_load_verify_locations(ctx, u->ca_file, NULL)
				    : SSL_CTX_set_default_verify_paths(ctx);

		if (ok != 1) {
			snprintf(why, whylen, "upstream TLS: cannot load ca_file '%s'", u->ca_file ? u->ca_file : "");
			SSL_CTX_free(ctx);
			return NULL;
		}
	}
	SSL_CTX_set_default_passwd_cb(ctx, ag_no_passphrase);   /* encrypted: refused, never prompted */
	if (u->cert_file) {
		/* the key is read by OpenSSL, by path: that path must be one
		 * only root can change (a trusted path stays trusted) */
		char kwhy[300];
		int fd = secret_open(u->key_file ? u->key_file : u->cert_file, kwhy, sizeof(kwhy));

		if (fd < 0) {
			snprintf(why, whylen, "upstream TLS: client key refused: %s", kwhy);
			SSL_CTX_free(ctx);
			return NULL;
		}
		close(fd);
	}
	if (u->cert_file && (SSL_CTX_use_certificate_chain_file(ctx, u->cert_file) != 1 ||
			     SSL_CTX_use_PrivateKey_file(ctx, u->key_file ? u->key_file : u->cert_file,
							 SSL_FILETYPE_PEM) != 1 ||
			     SSL_CTX_check_private_key(ctx) != 1)) {
		snprintf(why, whylen, "upstream TLS: cannot load the client certificate '%s'", u->cert_file);
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

/* The name the upstream's certificate must carry (and the SNI): without a
 * name, the address dialled: the agent's destination, which on a CIDR
 * target is not the network's address (review, stop 36: 10.0.0.0 was
 * checked for a server at 10.1.2.3, as proto_pg.c never did). */
static void peer_name(const struct policy_target *t, const uint8_t dialled[16], char *out, size_t outlen)
{
	const struct policy_upstream *u = &t->upstream;

	if (u->server_name)
		snprintf(out, outlen, "%s", u->server_name);
	else if (u->has_address && u->address.kind == ADDR_HOST)
		snprintf(out, outlen, "%s", u->address.host);
	else if (t->addr.kind == ADDR_HOST)
		snprintf(out, outlen, "%s", t->addr.host);
	else if (u->has_address)
		addr_str(u->address.addr, out, outlen);
	else
		addr_str(dialled, out, outlen);
}

static uint64_t tls_stamp(const struct policy_upstream *u)
{
	const char *files[] = { u->ca_file, u->cert_file, u->key_file };

	return files_stamp(files, 3);
}

/*
 * A context is rebuilt when its files changed (a CA bundle or client
 * certificate rotated on disk): compared at most once a second per target,
 * as credential files are. A rotation that cannot be loaded (a half-written
 * file) keeps the context in use, says so once, and is tried again when the
 * files change again. Lock held.
 */
static void tls_refresh(const struct policy_target *t, struct up_entry *e)
{
	uint64_t now = now_ns_mono() / 1000000ull, stamp;
	char why[300];
	SSL_CTX *ctx;

	if (!e->ctx || now - e->ctx_checked_ms < CRED_REREAD_MS)
		return;
	e->ctx_checked_ms = now;
	if ((stamp = tls_stamp(&t->upstream)) == e->ctx_stamp)
		return;
	e->ctx_stamp = stamp;
	if (!(ctx = make_ctx(&t->upstream, why, sizeof(why)))) {
		ag_log(LOG_LVL_WARN, "http: target '%s': its TLS files changed and cannot be loaded (%s); "
		       "the previous ones stay in use", t->name, why);
		return;
	}
	SSL_CTX_free(e->ctx);   /* connections' SSLs keep their own reference */
	e->ctx = ctx;
	ag_log(LOG_LVL_INFO, "http: target '%s': its TLS files changed; loaded again", t->name);
}

int http_upstream_ssl(const struct policy *p, int t, const uint8_t dialled[16], SSL **out, char *why,
		      size_t whylen)
{
	const struct policy_target *tg = &p->targets[t];
	const char *mode = tg->upstream.tls;
	struct up_entry *e;
	char name[256];
	unsigned char ip[16];
	SSL *ssl = NULL;

	*out = NULL;
	if (!mode || strcmp(mode, "disable") == 0)
		return 0;
	pthread_mutex_lock(&lock);
	e = entry(p, t);
	/* A context that fails to build is not kept: the next request tries
	 * again (a ca_file written after the start, by cert-manager say), and
	 * says why it failed each time. */
	if (e && !e->ctx_done) {
		e->ctx_stamp = tls_stamp(&tg->upstream);   /* before: a change while loading is seen */
		e->ctx_checked_ms = now_ns_mono() / 1000000ull;
		e->ctx = make_ctx(&tg->upstream, why, whylen);
		e->ctx_done = e->ctx != NULL;
	} else if (e) {
		tls_refresh(tg, e);
	}
	bool have_ctx = e && e->ctx, have_e = e != NULL;   /* e is not ours once unlocked */

	if (have_ctx)
		ssl = SSL_new(e->ctx);
	pthread_mutex_unlock(&lock);
	if (!ssl) {
		if (have_ctx)
			snprintf(why, whylen, "upstream TLS: out of memory");
		else if (!have_e)
			snprintf(why, whylen, "out of memory");
		return -EPROTO;
	}
	peer_name(tg, dialled, name, sizeof(name));
	bool check = policy_tls_check(&tg->upstream) == POLICY_TLS_FULL, named = true;
	if (inet_pton(AF_INET, name, ip) != 1 && inet_pton(AF_INET6, name, ip) != 1) {
		SSL_set_tlsext_host_name(ssl, name);
		/* a DNS SAN only, never the subject's CN (OpenSSL's fallback when
		 * there is none), and no partial wildcard (f*.example.com): RFC 9525 */
		SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS | X509_CHECK_FLAG_NEVER_CHECK_SUBJECT);
		if (check)
			named = SSL_set1_host(ssl, name) == 1;
	} else if (check) {
		named = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) == 1;
	}
	if (!named) {
		/* without the name, any certificate the CA signed would pass */
		SSL_free(ssl);
		ERR_clear_error();
		snprintf(why, whylen, "upstream TLS: cannot set the name to verify");
		return -EPROTO;
	}
	*out = ssl;
	return 0;
}
