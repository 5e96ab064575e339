/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ident_jwks: OIDC discovery and the JWKS cache of one issuer. The rules
 * are in ident_jwks.h; the comments here say why the code looks the way it
 * does.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <curl/curl.h>
#include <openssl/crypto.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ident_jwks.h"
#include "util.h"

struct ident_issuer {
	pthread_mutex_t mu;
	char *issuer, *ca_file, *cache_file;
	int64_t (*now_mono)(void *ctx);
	int64_t (*now_real)(void *ctx);
	void *clock_ctx;
	ident_fetch_fn fetch;
	void *fetch_ctx;

	struct jwks *keys;           /* last known good; NULL before the first fetch */
	char *jwks_text;             /* its source text, for the cache file */
	size_t jwks_len;
	int64_t fetched_mono;        /* when keys were fetched */
	int64_t ttl;
	bool attempted;              /* a fetch was tried by this object */
	int64_t last_attempt_mono;
	char jwks_uri[IDENT_URL_MAX];
	char last_error[256];
	uint64_t fetches, failures;
	bool refreshing;             /* a fetch is under way (without the lock) */
	uint64_t gen;                /* counts changes of keys (issuer_recheck) */
	bool withdrawn;              /* the last answer was a key set with no usable key */
};

int ident_refetch_min(void)
{
	static _Atomic uint64_t v;

	return (int)env_u64("AGENTGATE_JWKS_REFETCH_S", 1, 3600, 30, &v);
}

static int64_t clock_s(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec;
}

static int64_t default_mono(void *ctx) { return clock_s(CLOCK_MONOTONIC); }
static int64_t default_real(void *ctx) { return clock_s(CLOCK_REALTIME); }

static int64_t now_mono(const struct ident_issuer *iss) { return iss->now_mono(iss->clock_ctx); }
static int64_t now_real(const struct ident_issuer *iss) { return iss->now_real(iss->clock_ctx); }

void ident_setwhy(char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;

	if (!why || !whylen)
		return;
	va_start(ap, fmt);
	vsnprintf(why, whylen, fmt, ap);
	va_end(ap);
}

/* Appends " (text)" to why when there is room. */
static void addwhy(char *why, size_t whylen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void addwhy(char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;
	size_t n;

	if (!why || !whylen)
		return;
	n = strnlen(why, whylen);
	if (n + 1 >= whylen)
		return;
	va_start(ap, fmt);
	vsnprintf(why + n, whylen - n, fmt, ap);
	va_end(ap);
}

/* ---- URL rules ---------------------------------------------------------- */

struct url_parts {
	bool https;
	bool loopback;
	char host[256];
};

/* Splits scheme://authority and classifies the host. Userinfo, query and
 * fragment are refused: none has a place in an issuer or a key URL, and
 * userinfo is a classic way to make a URL read as another host. */
static int url_parse(const char *url, struct url_parts *u, char *why, size_t whylen)
{
	const char *a, *end, *h, *hend, *p;
	size_t n;

	memset(u, 0, sizeof(*u));
	if (strnlen(url, IDENT_URL_MAX) >= IDENT_URL_MAX) {
		ident_setwhy(why, whylen, "URL longer than %d bytes", IDENT_URL_MAX - 1);
		return -EINVAL;
	}
	if (strncmp(url, "https://", 8) == 0) {
		u->https = true;
		a = url + 8;
	} else if (strncmp(url, "http://", 7) == 0) {
		a = url + 7;
	} else {
		ident_setwhy(why, whylen, "only https:// URLs are allowed (http:// on a loopback literal)");
		return -EPROTO;
	}
	for (p = url; *p; p++) {
		if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f || *p == '\\') {
			ident_setwhy(why, whylen, "URL has a space, control or non-ASCII byte");
			return -EINVAL;
		}
		if (*p == '?' || *p == '#') {
			ident_setwhy(why, whylen, "URL has a query or fragment");
			return -EINVAL;
		}
	}
	end = a + strcspn(a, "/");
	if (memchr(a, '@', (size_t)(end - a))) {
		ident_setwhy(why, whylen, "URL has userinfo");
		return -EINVAL;
	}
	if (*a == '[') {
		h = a + 1;
		hend = memchr(h, ']', (size_t)(end - h));
		if (!hend) {
			ident_setwhy(why, whylen, "URL has an unterminated [IPv6] host");
			return -EINVAL;
		}
		p = hend + 1;
	} else {
		h = a;
		hend = memchr(a, ':', (size_t)(end - a));
		if (!hend)
			hend = end;
		p = hend;
	}
	n = (size_t)(hend - h);
	if (n == 0 || n >= sizeof(u->host)) {
		ident_setwhy(why, whylen, "URL has an empty or overlong host");
		return -EINVAL;
	}
	memcpy(u->host, h, n);
	u->host[n] = '\0';
	if (p < end) {
		const char *d;
		unsigned long port = 0;

		if (*p != ':' || p + 1 == end || end - (p + 1) > 5) {
			ident_setwhy(why, whylen, "URL has a bad port");
			return -EINVAL;
		}
		for (d = p + 1; d < end; d++) {
			if (!isdigit((unsigned char)*d)) {
				ident_setwhy(why, whylen, "URL has a bad port");
				return -EINVAL;
			}
			port = port * 10 + (unsigned long)(*d - '0');
		}
		if (port == 0 || port > 65535) {
			ident_setwhy(why, whylen, "URL has a bad port");
			return -EINVAL;
		}
	}
	if (*a == '[') {
		struct in6_addr a6;

		if (inet_pton(AF_INET6, u->host, &a6) != 1) {
			ident_setwhy(why, whylen, "URL has a bad IPv6 literal");
			return -EINVAL;
		}
		u->loopback = IN6_IS_ADDR_LOOPBACK(&a6);
	} else {
		struct in_addr a4;

		/* inet_pton takes only a canonical dotted quad: "127.1" and
		 * "0x7f.0.0.1" are names here, and names are not loopback. */
		if (inet_pton(AF_INET, u->host, &a4) == 1)
			u->loopback = (ntohl(a4.s_addr) >> 24) == 127;
	}
	return 0;
}

int ident_url_check(const char *url, const char *issuer, char *why, size_t whylen)
{
	struct url_parts u, iu;
	char r[160];
	int ret;

	if (!url) {
		ident_setwhy(why, whylen, "no URL");
		return -EINVAL;
	}
	ret = url_parse(url, &u, r, sizeof(r));
	if (ret < 0) {
		ident_setwhy(why, whylen, "%s", r);
		return ret;
	}
	if (!u.https && !u.loopback) {
		ident_setwhy(why, whylen, "http:// is allowed only on a loopback literal (127.0.0.0/8, [::1]); "
		       "use https://");
		return -EPROTO;
	}
	if (issuer) {
		ret = url_parse(issuer, &iu, r, sizeof(r));
		if (ret < 0) {
			ident_setwhy(why, whylen, "issuer: %s", r);
			return ret;
		}
		if (iu.https != u.https) {
			ident_setwhy(why, whylen, "jwks_uri scheme differs from the issuer's");
			return -EPROTO;
		}
		if (!iu.https && !u.loopback) {
			ident_setwhy(why, whylen, "jwks_uri of a loopback issuer is not on loopback");
			return -EPROTO;
		}
	}
	if (why && whylen)
		why[0] = '\0';
	return 0;
}

/* ---- libcurl fetcher ---------------------------------------------------- */

struct recv_buf {
	struct ident_http_resp *resp;
	bool too_big;
	bool oom;
};

/* Grows the body by copying, wiping the old copy: a response may be a token. */
static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
	struct recv_buf *b = arg;
	size_t n = size * nmemb, old = b->resp->len;
	char *nb;

	if (n > IDENT_FETCH_MAX || old + n > IDENT_FETCH_MAX) {
		b->too_big = true;
		return 0;       /* aborts the transfer with CURLE_WRITE_ERROR */
	}
	nb = malloc(old + n + 1);
	if (!nb) {
		b->oom = true;
		return 0;
	}
	if (old)
		memcpy(nb, b->resp->body, old);
	memcpy(nb + old, data, n);
	nb[old + n] = '\0';
	if (b->resp->body) {
		OPENSSL_cleanse(b->resp->body, old + 1);
		free(b->resp->body);
	}
	b->resp->body = nb;
	b->resp->len = old + n;
	return n;
}

/* Copies the value of header 'name' (case-insensitive) into out, trimmed. */
static void take_header(const char *line, size_t n, const char *name, char *out, size_t outlen)
{
	size_t nl = strlen(name), k;

	if (n <= nl || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
		return;
	line += nl + 1;
	n -= nl + 1;
	while (n && (*line == ' ' || *line == '\t')) {
		line++;
		n--;
	}
	while (n && (line[n - 1] == '\r' || line[n - 1] == '\n' || line[n - 1] == ' '))
		n--;
	k = n < outlen - 1 ? n : outlen - 1;
	memcpy(out, line, k);
	out[k] = '\0';
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *arg)
{
	struct ident_http_resp *r = arg;
	size_t n = size * nmemb;

	/* A new status line (no redirect is followed, but 100 Continue may
	 * precede) starts a new header block. */
	if (n >= 5 && strncmp(data, "HTTP/", 5) == 0) {
		r->content_type[0] = '\0';
		r->cache_control[0] = '\0';
	}
	take_header(data, n, "content-type", r->content_type, sizeof(r->content_type));
	take_header(data, n, "cache-control", r->cache_control, sizeof(r->cache_control));
	return n;
}

/*
 * Plain http is allowed only to a loopback literal (ident_url_check), for
 * an issuer on this host, and nothing authenticates it: a local process
 * that binds the issuer's port while the issuer is down (a restart, a
 * crash) would serve its own keys, and be sent the client secret of a
 * token request. The kernel knows who owns the socket that answers us:
 * the server's end of our connection carries the uid of its listening
 * socket, in /proc/net/tcp{,6} (this network namespace's). The first owner
 * seen for an address and port is pinned for the life of the process; a
 * connection later answered by another uid is dropped before a byte of
 * the request is sent. (Root could bind the port as any uid; an agent
 * running as the issuer's own uid is not told apart.)
 */
#define LOOPBACK_PINS_MAX 32

static struct loopback_pin {
	char addr[INET6_ADDRSTRLEN + 8];     /* "ip|port" */
	uid_t uid;
} loopback_pins[LOOPBACK_PINS_MAX];
static size_t loopback_npins;
static pthread_mutex_t loopback_mu = PTHREAD_MUTEX_INITIALIZER;

/* The /proc/net/tcp form of an address and port ("0100007F:1F90"). */
static bool proc_addr(const char *ip, int port, bool *v6, char *out, size_t outlen)
{
	unsigned char b[16];
	uint32_t w[4];
	int n;

	if (port <= 0 || port > 65535)
		return false;
	if (inet_pton(AF_INET, ip, b) == 1) {
		*v6 = false;
		memcpy(w, b, 4);
		n = snprintf(out, outlen, "%08X:%04X", w[0], (unsigned)port);
	} else if (inet_pton(AF_INET6, ip, b) == 1) {
		*v6 = true;
		memcpy(w, b, 16);
		n = snprintf(out, outlen, "%08X%08X%08X%08X:%04X", w[0], w[1], w[2], w[3], (unsigned)port);
	} else {
		return false;
	}
	return n > 0 && (size_t)n < outlen;
}

static int scan_proc_net(const char *path, const char *want_l, const char *want_r, uid_t *uid);

/* The uid owning the server's end of the connection server <- client. */
int ident_loopback_owner(const char *server_ip, int server_port, const char *client_ip, int client_port,
			 uid_t *uid)
{
	char want_l[64], want_r[64];
	bool v6, v6c;
	int ret;

	if (!proc_addr(server_ip, server_port, &v6, want_l, sizeof(want_l)) ||
	    !proc_addr(client_ip, client_port, &v6c, want_r, sizeof(want_r)) || v6 != v6c)
		return -EINVAL;
	if (!v6 && (ret = scan_proc_net("/proc/net/tcp", want_l, want_r, uid)) != -ENOENT)
		return ret;
	if (!v6) {
		/* A dual-stack listener ([::], Node's default) answers IPv4 from
		 * an IPv6 socket: /proc/net/tcp6 has it, as ::ffff:a.b.c.d. */
		char ms[64], mc[64];

		snprintf(ms, sizeof(ms), "::ffff:%s", server_ip);
		snprintf(mc, sizeof(mc), "::ffff:%s", client_ip);
		if (!proc_addr(ms, server_port, &v6, want_l, sizeof(want_l)) ||
		    !proc_addr(mc, client_port, &v6c, want_r, sizeof(want_r)))
			return -EINVAL;
	}
	return scan_proc_net("/proc/net/tcp6", want_l, want_r, uid);
}

/* The uid of the /proc/net/tcp{,6} line with local address l and remote r. */
static int scan_proc_net(const char *path, const char *want_l, const char *want_r, uid_t *uid)
{
	char line[512];
	int ret = -ENOENT;
	FILE *f;

	if (!(f = fopen(path, "re")))
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		char l[64], r[64];
		unsigned long u;

		if (sscanf(line, " %*s %63s %63s %*s %*s %*s %*s %lu", l, r, &u) != 3)
			continue;
		if (strcmp(l, want_l) == 0 && strcmp(r, want_r) == 0) {
			*uid = (uid_t)u;
			ret = 0;
			break;
		}
	}
	fclose(f);
	return ret;
}

struct owner_check {
	char why[192];
};

static int check_owner(void *arg, char *server_ip, char *client_ip, int server_port, int client_port)
{
	struct owner_check *oc = arg;
	char key[sizeof(loopback_pins[0].addr)];
	uid_t uid;
	int ret = CURL_PREREQFUNC_ABORT, err;
	size_t i;

	if ((err = ident_loopback_owner(server_ip, server_port, client_ip, client_port, &uid)) < 0) {
		snprintf(oc->why, sizeof(oc->why), "cannot tell who answers on %s port %d: %s", server_ip,
			 server_port, strerror(-err));
		return CURL_PREREQFUNC_ABORT;
	}
	snprintf(key, sizeof(key), "%s|%d", server_ip, server_port);
	pthread_mutex_lock(&loopback_mu);
	for (i = 0; i < loopback_npins && strcmp(loopback_pins[i].addr, key) != 0; i++)
		;
	if (i == loopback_npins && i < LOOPBACK_PINS_MAX) {
		snprintf(loopback_pins[i].addr, sizeof(loopback_pins[i].addr), "%s", key);
		loopback_pins[i].uid = uid;
		loopback_npins++;
	}
	if (i == LOOPBACK_PINS_MAX)
		snprintf(oc->why, sizeof(oc->why), "more than %d loopback issuer addresses", LOOPBACK_PINS_MAX);
	else if (loopback_pins[i].uid != uid)
		snprintf(oc->why, sizeof(oc->why), "%s port %d is answered by uid %u, not uid %u as before: "
			 "another local process may hold the issuer's port", server_ip, server_port,
			 (unsigned)uid, (unsigned)loopback_pins[i].uid);
	else
		ret = CURL_PREREQFUNC_OK;
	pthread_mutex_unlock(&loopback_mu);
	return ret;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

int ident_http(const char *url, const char *ca_file, const char *post, const char *auth,
	       struct ident_http_resp *resp, char *why, size_t whylen)
{
	struct recv_buf b = { .resp = resp };
	const char *proto = strncmp(url, "https://", 8) == 0 ? "https" : "http";
	bool plain = proto[4] == '\0';
	struct owner_check oc = { "" };
	char errbuf[CURL_ERROR_SIZE] = "";
	struct curl_slist *hdrs = NULL, *h;
	CURLcode rc;
	CURL *c;
	int ret = 0;

	memset(resp, 0, sizeof(*resp));
	pthread_once(&curl_once, curl_init_once);
	c = curl_easy_init();
	if (!c) {
		ident_setwhy(why, whylen, "curl_easy_init failed");
		return -ENOMEM;
	}
	if (auth) {
		h = curl_slist_append(NULL, auth);
		if (!h) {
			curl_easy_cleanup(c);
			ident_setwhy(why, whylen, "out of memory");
			return -ENOMEM;
		}
		hdrs = h;
		h = curl_slist_append(hdrs, "Accept: application/json");
		if (h)
			hdrs = h;
	}
	if (curl_easy_setopt(c, CURLOPT_URL, url) ||
	    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, proto) ||
	    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, proto) ||
	    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L) ||
	    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 0L) ||
	    curl_easy_setopt(c, CURLOPT_PROXY, "") ||
	    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) ||
	    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L) ||
	    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L) ||
	    curl_easy_setopt(c, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2) ||
	    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)IDENT_CONNECT_TIMEOUT_MS) ||
	    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)IDENT_TOTAL_TIMEOUT_MS) ||
	    curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)IDENT_FETCH_MAX) ||
	    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body) ||
	    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b) ||
	    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header) ||
	    curl_easy_setopt(c, CURLOPT_HEADERDATA, resp) ||
	    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf) ||
	    curl_easy_setopt(c, CURLOPT_USERAGENT, "agentgate") ||
	    (ca_file && curl_easy_setopt(c, CURLOPT_CAINFO, ca_file)) ||
	    (hdrs && curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs)) ||
	    (post && curl_easy_setopt(c, CURLOPT_POSTFIELDS, post)) ||
	    (plain && curl_easy_setopt(c, CURLOPT_PREREQFUNCTION, check_owner)) ||
	    (plain && curl_easy_setopt(c, CURLOPT_PREREQDATA, &oc))) {
		ident_setwhy(why, whylen, "libcurl refused an option (too old?)");
		ret = -ENOTSUP;
		goto out;
	}
	rc = curl_easy_perform(c);
	if (b.too_big || rc == CURLE_FILESIZE_EXCEEDED) {
		ident_setwhy(why, whylen, "response larger than %u bytes", IDENT_FETCH_MAX);
		ret = -EMSGSIZE;
	} else if (b.oom) {
		ident_setwhy(why, whylen, "out of memory");
		ret = -ENOMEM;
	} else if (oc.why[0]) {
		ident_setwhy(why, whylen, "%s", oc.why);
		ret = -EPERM;
	} else if (rc != CURLE_OK) {
		ident_setwhy(why, whylen, "%s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
		ret = rc == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT : -EHOSTUNREACH;
	} else {
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp->status);
	}
out:
	curl_easy_cleanup(c);
	for (h = hdrs; h; h = h->next)
		OPENSSL_cleanse(h->data, strlen(h->data));
	curl_slist_free_all(hdrs);
	if (ret < 0)
		ident_http_resp_clear(resp);
	return ret;
}

static int curl_fetch(void *ctx, const char *url, const char *ca_file,
		      struct ident_http_resp *resp, char *why, size_t whylen)
{
	return ident_http(url, ca_file, NULL, NULL, resp, why, whylen);
}

/* ---- fetch and parse ---------------------------------------------------- */

void ident_http_resp_clear(struct ident_http_resp *r)
{
	if (r->body) {
		OPENSSL_cleanse(r->body, r->len + 1);
		free(r->body);
	}
	memset(r, 0, sizeof(*r));
}


/* True when the media type (before any ';') is one of the two JSON types we
 * take; application/jwk-set+json only where JWKS is. */
static bool json_type_ok(const char *ct, bool jwks)
{
	size_t n = strcspn(ct, "; \t");

	if (n == 16 && strncasecmp(ct, "application/json", 16) == 0)
		return true;
	return jwks && n == 24 && strncasecmp(ct, "application/jwk-set+json", 24) == 0;
}

static int get_json(struct ident_issuer *iss, const char *what, const char *url, bool jwks,
		    struct ident_http_resp *resp, char *why, size_t whylen)
{
	char r[200];
	int ret;

	memset(resp, 0, sizeof(*resp));
	r[0] = '\0';
	ret = iss->fetch(iss->fetch_ctx, url, iss->ca_file, resp, r, sizeof(r));
	if (ret < 0) {
		ident_setwhy(why, whylen, "%s: %s", what, r[0] ? r : strerror(-ret));
		ident_http_resp_clear(resp);
		return ret;
	}
	if (resp->status != 200) {
		ident_setwhy(why, whylen, "%s: HTTP status %ld", what, resp->status);
		ident_http_resp_clear(resp);
		return -EHOSTUNREACH;
	}
	if (!json_type_ok(resp->content_type, jwks)) {
		ident_setwhy(why, whylen, "%s: content type is not JSON", what);
		ident_http_resp_clear(resp);
		return -EPROTO;
	}
	if (!resp->body || resp->len > IDENT_FETCH_MAX) {
		ident_setwhy(why, whylen, "%s: empty or oversized body", what);
		ident_http_resp_clear(resp);
		return -EPROTO;
	}
	return 0;
}

/* max-age from Cache-Control, clamped; no-store / no-cache mean the minimum
 * (we cannot go without a cache, so "revalidate often" is the honest
 * reading). */
static int64_t ttl_from(const char *cc)
{
	const char *p = cc;
	int64_t ttl = IDENT_TTL_DEFAULT;

	while (*p) {
		size_t n;

		while (*p == ' ' || *p == ',' || *p == '\t')
			p++;
		n = strcspn(p, ",");
		if (n >= 8 && strncasecmp(p, "max-age=", 8) == 0) {
			const char *d = p + 8;
			int64_t v = 0;

			if (!isdigit((unsigned char)*d))
				return IDENT_TTL_MIN;
			for (; d < p + n && isdigit((unsigned char)*d); d++)
				if (v < INT64_C(1) << 40)
					v = v * 10 + (*d - '0');
			ttl = v;
		} else if (n >= 8 && (strncasecmp(p, "no-store", 8) == 0 ||
				      strncasecmp(p, "no-cache", 8) == 0)) {
			return IDENT_TTL_MIN;
		}
		p += n;
	}
	if (ttl < IDENT_TTL_MIN)
		ttl = IDENT_TTL_MIN;
	if (ttl > IDENT_TTL_MAX)
		ttl = IDENT_TTL_MAX;
	/* test knob: a shorter TTL, so that tests see a refresh (and a held
	 * token checked again) in seconds */
	static _Atomic uint64_t knob;
	int64_t cap = (int64_t)env_u64("AGENTGATE_JWKS_TTL_S", 1, IDENT_TTL_MAX, IDENT_TTL_MAX, &knob);

	return ttl < cap ? ttl : cap;
}

/* The discovery URL: the issuer with any terminating '/' removed, then the
 * well-known suffix (OpenID Connect Discovery 1.0 §4). The document must
 * still name the issuer exactly as configured, slash included. */
static int discovery_url(const char *issuer, char *out, size_t outlen)
{
	size_t n = strlen(issuer);

	while (n > 0 && issuer[n - 1] == '/')
		n--;
	if ((size_t)snprintf(out, outlen, "%.*s/.well-known/openid-configuration", (int)n, issuer) >= outlen)
		return -ENAMETOOLONG;
	return 0;
}

static int discover(struct ident_issuer *iss, char *jwks_uri, size_t urilen, char *why, size_t whylen)
{
	struct ident_http_resp resp;
	char url[IDENT_URL_MAX + 64], r[200];
	json_error_t jerr;
	const char *s;
	json_t *doc;
	int ret;

	if (discovery_url(iss->issuer, url, sizeof(url)) < 0) {
		ident_setwhy(why, whylen, "discovery: issuer URL too long");
		return -ENAMETOOLONG;
	}
	ret = get_json(iss, "discovery", url, false, &resp, why, whylen);
	if (ret < 0)
		return ret;
	doc = json_loadb(resp.body, resp.len, JSON_REJECT_DUPLICATES, &jerr);
	ident_http_resp_clear(&resp);
	if (!json_is_object(doc)) {
		ident_setwhy(why, whylen, "discovery: not a JSON object");
		json_decref(doc);
		return -EPROTO;
	}
	s = json_string_value(json_object_get(doc, "issuer"));
	if (!s || strcmp(s, iss->issuer) != 0) {
		/* The document's value is attacker-influenced text: not quoted. */
		ident_setwhy(why, whylen, "discovery: the document's issuer differs from the configured issuer");
		json_decref(doc);
		return -EPROTO;
	}
	s = json_string_value(json_object_get(doc, "jwks_uri"));
	if (!s) {
		ident_setwhy(why, whylen, "discovery: no jwks_uri");
		json_decref(doc);
		return -EPROTO;
	}
	ret = ident_url_check(s, iss->issuer, r, sizeof(r));
	if (ret < 0) {
		ident_setwhy(why, whylen, "discovery: jwks_uri refused: %s", r);
		json_decref(doc);
		return -EPROTO;
	}
	snprintf(jwks_uri, urilen, "%s", s);
	json_decref(doc);
	return 0;
}

/* ---- the persisted last good set ---------------------------------------- */

static void cache_save(struct ident_issuer *iss, int64_t fetched_real)
{
	char tmp[PATH_MAX];
	json_t *o;
	char *text;
	int fd;

	if (!iss->cache_file || !iss->jwks_text)
		return;
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.%d", iss->cache_file, (int)getpid()) >= sizeof(tmp))
		return;
	o = json_pack("{s:i, s:s, s:s, s:I, s:I, s:s%}", "v", 1, "issuer", iss->issuer,
		      "jwks_uri", iss->jwks_uri, "fetched_at", (json_int_t)fetched_real,
		      "ttl", (json_int_t)iss->ttl, "jwks", iss->jwks_text, iss->jwks_len);
	text = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (!text)
		return;
	/* Best effort: a cache we cannot write only costs a fetch later. */
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd >= 0) {
		size_t len = strlen(text), off = 0;
		bool ok = true;

		while (off < len) {
			ssize_t w = write(fd, text + off, len - off);

			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0) {
				ok = false;
				break;
			}
			off += (size_t)w;
		}
		if (close(fd) < 0)
			ok = false;
		if (!ok || rename(tmp, iss->cache_file) < 0)
			unlink(tmp);
	}
	free(text);
}

/* Reads a trusted cache file into the issuer. Silently ignores anything
 * that is not exactly ours: the cache is an optimisation and a fallback,
 * never a reason to fail. */
static void cache_load(struct ident_issuer *iss)
{
	const char *s, *jt;
	struct jwks *keys = NULL;
	json_error_t jerr;
	json_int_t at, ttl;
	struct stat st;
	size_t len = 0, jl, cap = IDENT_FETCH_MAX * 2 + 8192;
	json_t *o = NULL;
	char *buf = NULL;
	int64_t age;
	int fd;

	fd = open(iss->cache_file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
	    (st.st_uid != geteuid() && st.st_uid != 0) || (st.st_mode & 022) ||
	    st.st_size <= 0 || (size_t)st.st_size >= cap)
		goto out;
	buf = malloc((size_t)st.st_size + 1);
	if (!buf)
		goto out;
	while (len < (size_t)st.st_size) {
		ssize_t r = read(fd, buf + len, (size_t)st.st_size - len);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		len += (size_t)r;
	}
	o = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(o) || json_integer_value(json_object_get(o, "v")) != 1)
		goto out;
	s = json_string_value(json_object_get(o, "issuer"));
	if (!s || strcmp(s, iss->issuer) != 0)
		goto out;
	s = json_string_value(json_object_get(o, "jwks_uri"));
	if (!s || ident_url_check(s, iss->issuer, NULL, 0) < 0)
		goto out;
	at = json_integer_value(json_object_get(o, "fetched_at"));
	ttl = json_integer_value(json_object_get(o, "ttl"));
	jt = json_string_value(json_object_get(o, "jwks"));
	jl = json_string_length(json_object_get(o, "jwks"));
	if (at <= 0)   /* before the subtraction: INT64_MIN would overflow it */
		goto out;
	age = now_real(iss) - (int64_t)at;
	/* A copy from the future or past the bound is not a last known good. */
	if (!jt || age < 0 || age > IDENT_LKG_MAX || ttl < IDENT_TTL_MIN ||
	    ttl > IDENT_TTL_MAX || jl > IDENT_FETCH_MAX)
		goto out;
	if (jwks_parse(jt, jl, &keys, NULL, 0) < 0)
		goto out;
	iss->jwks_text = malloc(jl + 1);
	if (!iss->jwks_text) {
		jwks_free(keys);
		goto out;
	}
	memcpy(iss->jwks_text, jt, jl);
	iss->jwks_text[jl] = '\0';
	iss->jwks_len = jl;
	iss->keys = keys;
	iss->gen++;
	iss->ttl = ttl;
	iss->fetched_mono = now_mono(iss) - age;
	snprintf(iss->jwks_uri, sizeof(iss->jwks_uri), "%s", s);
out:
	json_decref(o);
	free(buf);
	close(fd);
}

/* ---- the cache ---------------------------------------------------------- */

/* Discovery then JWKS. Called with the mutex held. On success the new set
 * replaces the old one; on failure the old one stays (last known good). */
static int refresh_locked(struct ident_issuer *iss, char *why, size_t whylen)
{
	struct ident_http_resp resp = { 0 };
	char uri[IDENT_URL_MAX], r[256];
	struct jwks *keys = NULL;
	int64_t ttl = IDENT_TTL_DEFAULT;
	bool withdrawn = false;
	int ret;

	if (iss->refreshing) {
		ident_setwhy(why, whylen, "a JWKS fetch is already under way");
		return -EAGAIN;
	}
	iss->refreshing = true;
	iss->attempted = true;
	iss->last_attempt_mono = now_mono(iss);
	iss->fetches++;
	/* The network part runs without the lock (it reads only what never
	 * changes after issuer_new), so verifying with the cached keys, from
	 * other threads, never waits for an issuer to answer. */
	pthread_mutex_unlock(&iss->mu);
	ret = discover(iss, uri, sizeof(uri), r, sizeof(r));
	if (ret == 0)
		ret = get_json(iss, "jwks", uri, true, &resp, r, sizeof(r));
	if (ret == 0) {
		char pr[160] = "";

		ttl = ttl_from(resp.cache_control);
		ret = jwks_parse(resp.body, resp.len, &keys, pr, sizeof(pr));
		if (ret < 0) {
			withdrawn = ret == -ENOKEY;
			snprintf(r, sizeof(r), "jwks: %s%s", withdrawn ? "the issuer withdrew its keys: " : "", pr);
			ident_http_resp_clear(&resp);
		}
	}
	pthread_mutex_lock(&iss->mu);
	iss->refreshing = false;
	if (withdrawn) {
		/* The issuer answered, with a well-formed key set that holds no
		 * key we can use: it no longer vouches for the keys we hold (a
		 * rotation away from a compromised key, or to a type we do not
		 * support). Keeping them as the last known good would trust
		 * them for up to a day more, so they go, with the copy on disk;
		 * tokens are refused until the issuer publishes a usable key.
		 * An answer we cannot read (not JSON, no "keys" array, an
		 * error status) is an outage, not a statement: the keys stay. */
		jwks_free(iss->keys);
		iss->keys = NULL;
		iss->gen++;
		iss->withdrawn = true;
		free(iss->jwks_text);
		iss->jwks_text = NULL;
		iss->jwks_len = 0;
		if (iss->cache_file)
			unlink(iss->cache_file);
	}
	if (ret < 0) {
		iss->failures++;
		snprintf(iss->last_error, sizeof(iss->last_error), "%s", r);
		ident_setwhy(why, whylen, "%s", r);
		return ret;
	}
	jwks_free(iss->keys);
	free(iss->jwks_text);
	iss->keys = keys;
	iss->gen++;
	iss->withdrawn = false;
	iss->jwks_text = resp.body;     /* the body is the cache text */
	iss->jwks_len = resp.len;
	iss->ttl = ttl;
	iss->fetched_mono = iss->last_attempt_mono;
	iss->last_error[0] = '\0';
	snprintf(iss->jwks_uri, sizeof(iss->jwks_uri), "%s", uri);
	cache_save(iss, now_real(iss));
	if (why && whylen)
		why[0] = '\0';
	return 0;
}

static bool may_attempt(const struct ident_issuer *iss)
{
	return !iss->attempted || now_mono(iss) - iss->last_attempt_mono >= IDENT_REFETCH_MIN;
}

int issuer_refresh(struct ident_issuer *iss, bool force, char *why, size_t whylen)
{
	int ret;

	if (!iss)
		return -EINVAL;
	pthread_mutex_lock(&iss->mu);
	/* force skips the refetch limit only while there are no keys at all:
	 * with keys, a token with an unknown kid (which an agent can write
	 * into its token file as often as it likes) waits like any other */
	if ((!force || iss->keys) && !may_attempt(iss)) {
		ident_setwhy(why, whylen, "refetch rate limited (one per %d s)", IDENT_REFETCH_MIN);
		ret = -EAGAIN;
	} else {
		ret = refresh_locked(iss, why, whylen);
	}
	pthread_mutex_unlock(&iss->mu);
	return ret;
}

int issuer_verify(struct ident_issuer *iss, const char *token, size_t len,
		  const struct jwt_policy *pol, struct jwt_claims *out,
		  char *why, size_t whylen)
{
	char fr[256] = "";
	bool fetched = false;
	int64_t age;
	int ret, fret = 0;

	if (out)
		memset(out, 0, sizeof(*out));
	if (!iss || !pol || !pol->issuer || strcmp(pol->issuer, iss->issuer) != 0) {
		ident_setwhy(why, whylen, "policy: the verification policy names another issuer");
		return -EINVAL;
	}
	pthread_mutex_lock(&iss->mu);
	if ((!iss->keys || now_mono(iss) - iss->fetched_mono >= iss->ttl) && may_attempt(iss)) {
		fret = refresh_locked(iss, fr, sizeof(fr));
		fetched = true;
	}
	if (!iss->keys) {
		ident_setwhy(why, whylen, "no keys for the issuer: %s",
		       fret < 0 ? fr : (iss->last_error[0] ? iss->last_error : "not fetched yet"));
		ret = fret == -EPROTO ? -EPROTO : -EHOSTUNREACH;
		goto out;
	}
	age = now_mono(iss) - iss->fetched_mono;
	if (age > IDENT_LKG_MAX) {
		ident_setwhy(why, whylen, "the issuer's keys were last fetched %" PRId64 " s ago, over the "
		       "%d s bound: %s", age, IDENT_LKG_MAX,
		       iss->last_error[0] ? iss->last_error : "not refreshed");
		ret = -ESTALE;
		goto out;
	}
	ret = jwt_verify(token, len, iss->keys, pol, out, why, whylen);
	if (ret == -ENOKEY && !fetched) {
		if (!may_attempt(iss)) {
			addwhy(why, whylen, " (JWKS refetch rate limited: one per %d s)", IDENT_REFETCH_MIN);
			goto out;
		}
		fret = refresh_locked(iss, fr, sizeof(fr));
		if (fret < 0) {
			addwhy(why, whylen, " (JWKS refetch failed: %s)", fr);
			goto out;
		}
		ret = jwt_verify(token, len, iss->keys, pol, out, why, whylen);
	}
out:
	pthread_mutex_unlock(&iss->mu);
	return ret;
}

int issuer_recheck(struct ident_issuer *iss, uint64_t *gen, const char *token, size_t len,
		   const struct jwt_policy *pol, char *why, size_t whylen)
{
	struct jwt_claims c;
	char fr[256];
	int ret = 0;

	if (!iss || !pol || !pol->issuer || strcmp(pol->issuer, iss->issuer) != 0) {
		ident_setwhy(why, whylen, "policy: the verification policy names another issuer");
		return -EINVAL;
	}
	pthread_mutex_lock(&iss->mu);
	/* at most one attempt per TTL, failed or not: while the issuer is
	 * down, each one may hold the main loop for two request timeouts */
	if (iss->keys && now_mono(iss) - iss->fetched_mono >= iss->ttl &&
	    now_mono(iss) - iss->last_attempt_mono >= iss->ttl && may_attempt(iss) && !iss->refreshing)
		refresh_locked(iss, fr, sizeof(fr));   /* a failure keeps the keys: an outage */
	if (iss->gen == *gen)
		goto out;
	if (!iss->keys) {
		if (iss->withdrawn) {
			ident_setwhy(why, whylen, "the issuer withdrew its keys: %s", iss->last_error);
			ret = -EKEYREVOKED;
		}
		goto out;   /* otherwise none were had yet: nothing to say */
	}
	ret = jwt_verify(token, len, iss->keys, pol, &c, why, whylen);
	jwt_claims_free(&c);
	if (ret == 0)
		*gen = iss->gen;
	else if (ret == -ENOKEY) {   /* its kid is gone from the set: withdrawn */
		snprintf(fr, sizeof(fr), "%s", why ? why : "");
		ident_setwhy(why, whylen, "the issuer no longer publishes the token's key (%s)", fr);
		ret = -EKEYREVOKED;
	}
out:
	pthread_mutex_unlock(&iss->mu);
	return ret;
}

int issuer_key_check(struct ident_issuer *iss, uint64_t *gen, const struct jwt_keyref *ref,
		     bool *want_refresh, char *why, size_t whylen)
{
	char fr[256];
	int ret = 0;

	*want_refresh = false;
	if (!iss || !ref || !ref->set) {
		ident_setwhy(why, whylen, "bad arguments");
		return -EINVAL;
	}
	pthread_mutex_lock(&iss->mu);
	if (now_mono(iss) - iss->fetched_mono >= iss->ttl)
		*want_refresh = true;
	if (iss->gen == *gen)
		goto out;
	/* the reasons go to the agent: the issuer's own error text (a URL,
	 * a host name, an HTTP status) is left out */
	if (!iss->keys) {
		if (iss->withdrawn) {
			ident_setwhy(why, whylen, "the issuer withdrew its keys");
			ret = -EKEYREVOKED;
		}
		goto out;   /* otherwise none were had yet: nothing to say */
	}
	ret = jwt_key_still(iss->keys, ref, fr, sizeof(fr));
	if (ret == 0) {
		*gen = iss->gen;
	} else if (ret == -EINVAL) {
		/* a kid-less token and a set of several usable keys: jwt_verify
		 * refuses it too (which key?) */
		ident_setwhy(why, whylen, "the issuer's keys no longer verify the token (%s)", fr);
		ret = -EKEYREVOKED;
	} else {   /* -ENOKEY, -EKEYREJECTED: that key is gone */
		ident_setwhy(why, whylen, "the issuer no longer publishes the token's key (%s)", fr);
		ret = -EKEYREVOKED;
	}
out:
	pthread_mutex_unlock(&iss->mu);
	return ret;
}

int issuer_verify_cached(struct ident_issuer *iss, const char *token, size_t len,
			 const struct jwt_policy *pol, struct jwt_claims *out, bool *want_refresh,
			 char *why, size_t whylen)
{
	int ret;

	*want_refresh = false;
	if (out)
		memset(out, 0, sizeof(*out));
	if (!iss || !pol || !pol->issuer || strcmp(pol->issuer, iss->issuer) != 0) {
		ident_setwhy(why, whylen, "policy: the verification policy names another issuer");
		return -EINVAL;
	}
	pthread_mutex_lock(&iss->mu);
	if (!iss->keys) {
		ident_setwhy(why, whylen, "no keys for the issuer yet: %s",
			     iss->last_error[0] ? iss->last_error : "not fetched yet");
		*want_refresh = true;
		ret = -EHOSTUNREACH;
		goto out;
	}
	if (now_mono(iss) - iss->fetched_mono > IDENT_LKG_MAX) {
		ident_setwhy(why, whylen, "the issuer's keys are older than the %d s bound: %s", IDENT_LKG_MAX,
			     iss->last_error[0] ? iss->last_error : "not refreshed");
		*want_refresh = true;
		ret = -ESTALE;
		goto out;
	}
	if (now_mono(iss) - iss->fetched_mono >= iss->ttl)
		*want_refresh = true;
	ret = jwt_verify(token, len, iss->keys, pol, out, why, whylen);
	if (ret == -ENOKEY) {
		*want_refresh = may_attempt(iss) && !iss->refreshing;
		addwhy(why, whylen, *want_refresh ? " (JWKS refetch requested)" :
			" (JWKS refetch rate limited: one per %d s)", IDENT_REFETCH_MIN);
	}
out:
	pthread_mutex_unlock(&iss->mu);
	return ret;
}

int issuer_status(struct ident_issuer *iss, struct issuer_status *st)
{
	if (!iss || !st)
		return -EINVAL;
	memset(st, 0, sizeof(*st));
	pthread_mutex_lock(&iss->mu);
	st->have_keys = iss->keys != NULL;
	st->age_s = iss->keys ? now_mono(iss) - iss->fetched_mono : -1;
	st->ttl_s = iss->ttl;
	st->stale = iss->keys && st->age_s >= iss->ttl;
	st->nkeys = iss->keys ? jwks_usable(iss->keys) : 0;
	st->fetches = iss->fetches;
	st->failures = iss->failures;
	snprintf(st->last_error, sizeof(st->last_error), "%s", iss->last_error);
	snprintf(st->jwks_uri, sizeof(st->jwks_uri), "%s", iss->jwks_uri);
	pthread_mutex_unlock(&iss->mu);
	return 0;
}

struct ident_issuer *issuer_new(const char *issuer, const struct issuer_opts *opts,
				char *why, size_t whylen)
{
	struct ident_issuer *iss;
	int ret;

	ret = ident_url_check(issuer, NULL, why, whylen);
	if (ret < 0) {
		errno = -ret;
		return NULL;
	}
	iss = calloc(1, sizeof(*iss));
	if (!iss)
		goto oom;
	pthread_mutex_init(&iss->mu, NULL);
	iss->ttl = IDENT_TTL_DEFAULT;
	iss->now_mono = opts && opts->now_mono ? opts->now_mono : default_mono;
	iss->now_real = opts && opts->now_real ? opts->now_real : default_real;
	iss->clock_ctx = opts ? opts->clock_ctx : NULL;
	iss->fetch = opts && opts->fetch ? opts->fetch : curl_fetch;
	iss->fetch_ctx = opts ? opts->fetch_ctx : NULL;
	iss->issuer = strdup(issuer);
	if (!iss->issuer)
		goto oom;
	if (opts && opts->ca_file && !(iss->ca_file = strdup(opts->ca_file)))
		goto oom;
	if (opts && opts->cache_file && !(iss->cache_file = strdup(opts->cache_file)))
		goto oom;
	if (iss->cache_file)
		cache_load(iss);
	if (why && whylen)
		why[0] = '\0';
	return iss;
oom:
	issuer_free(iss);
	ident_setwhy(why, whylen, "out of memory");
	errno = ENOMEM;
	return NULL;
}

void issuer_free(struct ident_issuer *iss)
{
	if (!iss)
		return;
	pthread_mutex_destroy(&iss->mu);
	jwks_free(iss->keys);
	free(iss->jwks_text);
	free(iss->issuer);
	free(iss->ca_file);
	free(iss->cache_file);
	free(iss);
}
