/* SPDX-License-Identifier: Apache-2.0 */
/*
 * syslog sink: each event is one RFC 5424 message
 *     <PRI>1 TIMESTAMP HOST agentgate PID CLASS [agentgate@32473 seq="N"] BOM JSON
 * (32473 is the private enterprise number RFC 5612 reserves for examples:
 * there is no registered one yet).
 *
 * transport tcp / tls: RFC 6587 octet counting ("LEN SP MSG"), TLS by
 * OpenSSL verifying the server against ca_file (or the system CAs) and the
 * host or IP in address. Neither has an application acknowledgement, so an
 * event counts as delivered once the peer's TCP acknowledged its last byte:
 * SIOCOUTQ gives the bytes the kernel still holds (unsent or unacknowledged),
 * and bytes written minus that is what arrived. After a reconnect everything
 * not confirmed is sent again (duplicates allowed). What rsyslog had
 * received but not yet processed when it died is lost: only RELP closes
 * that gap.
 *
 * transport relp: librelp. A batch is sent on a fresh session and
 * confirmed by the session's orderly close: rsyslog answers the close only
 * after answering every message before it, and librelp reports a close that
 * timed out or broke through the OnErr callback, in which case the whole
 * batch is sent again.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <librelp.h>
#include <linux/sockios.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "audit_sink.h"
#include "util.h"

#define SYSLOG_PEN "32473"
#define CONNECT_TIMEOUT_MS 2000
#define CONFIRM_TIMEOUT_MS 2000
#define CHUNK (16 * 1024)
#define RELP_TIMEOUT_S 5

enum transport { T_TCP, T_TLS, T_RELP };

struct ssink {
	enum transport t;
	char host[256], port[8];
	char hostname[256];
	int pid;
	/* tcp / tls connection */
	int fd;
	SSL_CTX *ctx;
	SSL *ssl;
	uint64_t written;       /* bytes handed to the socket on this connection */
	uint64_t next_seq;      /* first sequence not yet written on it (0: none) */
	uint64_t *ends;         /* socket byte offset at which event (first_seq + i) is complete */
	uint64_t first_seq;
	size_t nends, ends_cap;
	char *msg;              /* one formatted message */
	size_t msg_cap;
	char *chunk;
	size_t chunk_len;
	/* relp */
	relpEngine_t *relp;
};

static __thread bool relp_failed;

static void relp_on_err(void *usr, char *obj, char *msg, relpRetVal code)
{
	relp_failed = true;
}

static void relp_on_generic_err(char *obj, char *msg, relpRetVal code)
{
	relp_failed = true;
}

static void relp_dbg(char *fmt, ...)
{
}

/* "host:port", "[v6]:port" or "host" (default port per transport). */
static int split_address(const char *a, char *host, size_t hl, char *port, size_t pl,
			 const char *defport)
{
	const char *colon;

	if (a[0] == '[') {
		const char *end = strchr(a, ']');

		if (!end || (size_t)(end - a - 1) >= hl)
			return -EINVAL;
		snprintf(host, hl, "%.*s", (int)(end - a - 1), a + 1);
		snprintf(port, pl, "%s", end[1] == ':' ? end + 2 : defport);
		return 0;
	}
	colon = strrchr(a, ':');
	if (colon && strchr(a, ':') == colon) {
		if ((size_t)(colon - a) >= hl)
			return -EINVAL;
		snprintf(host, hl, "%.*s", (int)(colon - a), a);
		snprintf(port, pl, "%s", colon + 1);
	} else {
		snprintf(host, hl, "%s", a);
		snprintf(port, pl, "%s", defport);
	}
	return 0;
}

static int syslog_init(struct audit_sink *s)
{
	const char *tr = s->cfg->transport ? s->cfg->transport : "tcp";
	struct ssink *k = calloc(1, sizeof(*k));
	int err;

	if (!k)
		return -ENOMEM;
	s->priv = k;
	k->fd = -1;
	k->t = !strcmp(tr, "tls") ? T_TLS : !strcmp(tr, "relp") ? T_RELP : T_TCP;
	if ((err = split_address(s->cfg->address, k->host, sizeof(k->host), k->port, sizeof(k->port),
				 k->t == T_TLS ? "6514" : k->t == T_RELP ? "2514" : "514")))
		return err;
	snprintf(s->desc, sizeof(s->desc), "syslog %s://%s", tr, s->cfg->address);
	gethostname(k->hostname, sizeof(k->hostname) - 1);
	if (!k->hostname[0])
		snprintf(k->hostname, sizeof(k->hostname), "-");
	k->pid = getpid();
	if (!(k->chunk = malloc(CHUNK)))
		return -ENOMEM;
	if (k->t == T_TLS) {
		k->ctx = SSL_CTX_new(TLS_client_method());
		if (!k->ctx)
			return -ENOMEM;
		SSL_CTX_set_min_proto_version(k->ctx, TLS1_2_VERSION);
		SSL_CTX_set_verify(k->ctx, SSL_VERIFY_PEER, NULL);
		if (s->cfg->ca_file ? !SSL_CTX_load_verify_locations(k->ctx, s->cfg->ca_file, NULL)
				    : !SSL_CTX_set_default_verify_paths(k->ctx)) {
			ag_log(LOG_LVL_ERR, "audit: %s: cannot load CA file '%s'", s->desc,
			       s->cfg->ca_file ? s->cfg->ca_file : "(system)");
			return -EINVAL;
		}
	}
	if (k->t == T_RELP) {
		if (relpEngineConstruct(&k->relp) != RELP_RET_OK)
			return -ENOMEM;
		relpEngineSetDbgprint(k->relp, relp_dbg);
		relpEngineSetOnErr(k->relp, relp_on_err);
		relpEngineSetOnGenericErr(k->relp, relp_on_generic_err);
		relpEngineSetEnableCmd(k->relp, (unsigned char *)"syslog", eRelpCmdState_Required);
		relpEngineSetDnsLookupMode(k->relp, 0);
	}
	return 0;
}

static void conn_drop(struct ssink *k)
{
	if (k->ssl) {
		SSL_free(k->ssl);
		k->ssl = NULL;
	}
	if (k->fd >= 0)
		close(k->fd);
	k->fd = -1;
	k->written = 0;
	k->next_seq = 0;
	k->nends = 0;
	k->chunk_len = 0;
}

static void syslog_fini(struct audit_sink *s)
{
	struct ssink *k = s->priv;

	if (!k)
		return;
	conn_drop(k);
	SSL_CTX_free(k->ctx);
	if (k->relp)
		relpEngineDestruct(&k->relp);
	free(k->ends);
	free(k->msg);
	free(k->chunk);
	free(k);
	s->priv = NULL;
}

static int dial(struct ssink *k, char *why, size_t wl)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV }, *ai;
	struct pollfd pfd;
	int fd, rc, soerr = 0, one = 1;
	socklen_t sl = sizeof(soerr);

	if ((rc = getaddrinfo(k->host, k->port, &hints, &ai))) {
		snprintf(why, wl, "resolving '%s': %s", k->host, gai_strerror(rc));
		return -EHOSTUNREACH;
	}
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		freeaddrinfo(ai);
		return -errno;
	}
	rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
	freeaddrinfo(ai);
	if (rc && errno != EINPROGRESS) {
		soerr = errno;
	} else if (rc) {
		pfd = (struct pollfd){ .fd = fd, .events = POLLOUT };
		if (poll(&pfd, 1, CONNECT_TIMEOUT_MS) != 1)
			soerr = ETIMEDOUT;
		else
			getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
	}
	if (soerr) {
		close(fd);
		snprintf(why, wl, "connect: %s", strerror(soerr));
		return -soerr;
	}
	/* blocking from here, with timeouts: this is the sink's own thread */
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	struct timeval tv = { .tv_sec = 2 };
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	k->fd = fd;
	return 0;
}

static int tls_start(struct ssink *k, char *why, size_t wl)
{
	struct in6_addr a6;
	struct in_addr a4;
	bool ip = inet_pton(AF_INET, k->host, &a4) == 1 || inet_pton(AF_INET6, k->host, &a6) == 1;

	if (!(k->ssl = SSL_new(k->ctx)))
		return -ENOMEM;
	/* a DNS SAN only, never the CN, and no partial wildcard (RFC 9525) */
	SSL_set_hostflags(k->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS | X509_CHECK_FLAG_NEVER_CHECK_SUBJECT);
	/* without the name, any certificate the CA signed would pass: a name
	 * that cannot be set is a failed connection (http_upstream.c does so) */
	if (!SSL_set_fd(k->ssl, k->fd) ||
	    (ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(k->ssl), k->host) != 1
		: SSL_set_tlsext_host_name(k->ssl, k->host) != 1 || SSL_set1_host(k->ssl, k->host) != 1)) {
		snprintf(why, wl, "TLS: cannot set the name to verify (%s)", k->host);
		ERR_clear_error();
		return -EPROTO;
	}
	if (SSL_connect(k->ssl) != 1) {
		long v = SSL_get_verify_result(k->ssl);

		snprintf(why, wl, "TLS handshake: %s", v != X509_V_OK ?
			 X509_verify_cert_error_string(v) : ERR_reason_error_string(ERR_peek_last_error())
			 ? ERR_reason_error_string(ERR_peek_last_error()) : "failed");
		ERR_clear_error();
		return -EPROTO;
	}
	return 0;
}

/* Bytes the kernel has taken and the peer acknowledged: for TLS, counted
 * on the wire (records), which is what SIOCOUTQ counts too. */
static uint64_t wire_written(struct ssink *k)
{
	return k->ssl ? BIO_number_written(SSL_get_wbio(k->ssl)) : k->written;
}

static int put(struct ssink *k, const void *buf, size_t len)
{
	if (k->ssl) {
		size_t done = 0;

		while (done < len) {
			int n = SSL_write(k->ssl, (const char *)buf + done, len - done);

			if (n <= 0) {
				ERR_clear_error();
				return -EPIPE;
			}
			done += n;
		}
	} else {
		size_t done = 0;

		/* Every byte the kernel took counts as written, a partial
		 * write's too: confirm() subtracts SIOCOUTQ, which holds them,
		 * and a count without them wrapped below zero, so events the
		 * peer never acknowledged passed as delivered (review, stop 34). */
		while (done < len) {
			ssize_t n = send(k->fd, (const char *)buf + done, len - done, MSG_NOSIGNAL);

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				return n < 0 ? -errno : -EPIPE;
			done += n;
			k->written += (uint64_t)n;
		}
		return 0;
	}
	k->written += len;
	return 0;
}

static int chunk_flush(struct ssink *k)
{
	int err = 0;

	if (k->chunk_len && (err = put(k, k->chunk, k->chunk_len)))
		return err;
	k->chunk_len = 0;
	/* every event written since the last flush ends here */
	uint64_t w = wire_written(k);
	for (size_t i = k->nends; i > 0 && !k->ends[i - 1]; i--)
		k->ends[i - 1] = w;
	return 0;
}

static const char *find_num(const char *line, size_t len, const char *key, long long *out)
{
	const char *p = memmem(line, len, key, strlen(key));

	if (p)
		*out = strtoll(p + strlen(key), NULL, 10);
	return p;
}

/* <PRI>1 TIMESTAMP HOST APP PROCID MSGID [SD] BOM MSG into k->msg. */
static int format(struct ssink *k, uint64_t seq, const char *line, size_t len, size_t *out)
{
	static const int sev[] = { 6, 6, 5, 4, 3, 2, 1 };   /* OCSF severity_id -> syslog */
	long long sid = 1, ms = 0, cls = 0;
	char ts[40];
	time_t t;
	struct tm tm;

	find_num(line, len, "\"severity_id\":", &sid);
	if (!find_num(line, len, "\"time\":", &ms))
		ms = now_ms_realtime();
	find_num(line, len, "\"class_uid\":", &cls);
	t = ms / 1000;
	gmtime_r(&t, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	size_t need = len + 512;
	if (need > k->msg_cap) {
		char *m = realloc(k->msg, need);

		if (!m)
			return -ENOMEM;
		k->msg = m;
		k->msg_cap = need;
	}
	/* facility 13 (log audit) */
	int n = snprintf(k->msg, k->msg_cap, "<%d>1 %s.%03lldZ %s agentgate %d %lld [agentgate@"
			 SYSLOG_PEN " seq=\"%" PRIu64 "\"] \xEF\xBB\xBF",
			 13 * 8 + sev[sid >= 0 && sid <= 6 ? sid : 1], ts, ms % 1000, k->hostname,
			 k->pid, cls, seq);
	memcpy(k->msg + n, line, len);
	*out = n + len;
	return 0;
}

static int ensure_ends(struct ssink *k, size_t n)
{
	if (n <= k->ends_cap)
		return 0;
	uint64_t *e = realloc(k->ends, n * sizeof(*e));
	if (!e)
		return -ENOMEM;
	k->ends = e;
	k->ends_cap = n;
	return 0;
}

/* Marks what the peer acknowledged; waits until everything is or the
 * connection fails. Returns the number of leading events confirmed. */
static size_t confirm(struct ssink *k, struct sink_batch *b, char *why, size_t wl)
{
	uint64_t end = now_ns_mono() / 1000000ull + CONFIRM_TIMEOUT_MS;
	size_t done = 0;

	for (;;) {
		int outq = 0;

		if (ioctl(k->fd, SIOCOUTQ, &outq) == 0 && outq >= 0) {
			uint64_t w = wire_written(k);
			/* never below zero: nothing is acknowledged then */
			uint64_t acked = w > (uint64_t)outq ? w - (uint64_t)outq : 0;

			while (done < k->nends && k->ends[done] && k->ends[done] <= acked)
				done++;
		}
		if (done == k->nends)
			break;
		/* a reset or a close from the peer ends the connection. POLLRDHUP,
		 * not POLLIN: bytes the peer sent and nobody reads (a TLS 1.3
		 * session ticket; any byte from a collector) made every poll
		 * return at once, a spin until the deadline (review, stop 27) */
		struct pollfd pfd = { .fd = k->fd, .events = POLLRDHUP };
		if (poll(&pfd, 1, 5) == 1 && (pfd.revents & (POLLERR | POLLHUP | POLLRDHUP))) {
			snprintf(why, wl, "connection closed by the peer");
			conn_drop(k);
			break;
		}
		if (now_ns_mono() / 1000000ull >= end || audit_sink_stopping()) {
			snprintf(why, wl, "peer slow to acknowledge");
			break;
		}
	}
	/* map connection-wide confirmation onto this batch */
	for (size_t i = 0; i < b->n; i++) {
		uint64_t seq = b->first + i;

		if (seq < k->first_seq || seq - k->first_seq >= done)
			break;
		b->st[i] = SINK_ACK;
	}
	/* drop what is confirmed from the connection's list */
	if (k->fd >= 0 && done) {
		memmove(k->ends, k->ends + done, (k->nends - done) * sizeof(*k->ends));
		k->nends -= done;
		k->first_seq += done;
	}
	return done;
}

static int stream_send(struct audit_sink *s, struct ssink *k, struct sink_batch *b)
{
	int err;

	/* The runner resends from its cursor; on the same connection the
	 * events already written are not written again, only awaited. */
	if (k->fd >= 0 && (b->first < k->first_seq || b->first > k->next_seq))
		conn_drop(k);
	if (k->fd < 0) {
		if ((err = dial(k, b->why, sizeof(b->why))))
			return err;
		if (k->t == T_TLS && (err = tls_start(k, b->why, sizeof(b->why)))) {
			conn_drop(k);
			return err;
		}
		k->first_seq = k->next_seq = b->first;
		k->nends = 0;
	}
	size_t start = k->next_seq - b->first;
	if (start > b->n)
		start = b->n;
	if ((err = ensure_ends(k, k->nends + b->n - start)))
		return err;
	for (size_t i = start; i < b->n; i++) {
		size_t len, base = k->nends;
		char hdr[24];

		if ((err = format(k, b->first + i, b->line[i], b->len[i], &len)))
			return err;
		int hl = snprintf(hdr, sizeof(hdr), "%zu ", len);
		if (k->chunk_len + hl + len > CHUNK && (err = chunk_flush(k)))
			goto broken;
		k->ends[k->nends++] = 0;
		if (hl + len > CHUNK) {   /* a large event goes out on its own */
			if ((err = put(k, hdr, hl)) || (err = put(k, k->msg, len)))
				goto broken;
			k->ends[base] = wire_written(k);
		} else {
			memcpy(k->chunk + k->chunk_len, hdr, hl);
			memcpy(k->chunk + k->chunk_len + hl, k->msg, len);
			k->chunk_len += hl + len;
		}
		k->next_seq = b->first + i + 1;
	}
	if ((err = chunk_flush(k)))
		goto broken;
	confirm(k, b, b->why, sizeof(b->why));
	return 0;
broken:
	snprintf(b->why, sizeof(b->why), "write: %s", strerror(-err));
	confirm(k, b, b->why, sizeof(b->why));   /* what did arrive is kept */
	conn_drop(k);
	return 0;
}

static int relp_send(struct audit_sink *s, struct ssink *k, struct sink_batch *b)
{
	relpClt_t *clt = NULL;
	int family = strchr(k->host, ':') ? AF_INET6 : AF_INET;
	bool ok = true;

	relp_failed = false;
	if (relpEngineCltConstruct(k->relp, &clt) != RELP_RET_OK)
		return -ENOMEM;
	relpCltSetTimeout(clt, RELP_TIMEOUT_S);
	relpCltSetConnTimeout(clt, CONNECT_TIMEOUT_MS / 1000);
	if (relpCltConnect(clt, family, (unsigned char *)k->port, (unsigned char *)k->host) !=
	    RELP_RET_OK) {
		relpEngineCltDestruct(k->relp, &clt);
		snprintf(b->why, sizeof(b->why), "relp: cannot open a session");
		return -ECONNREFUSED;
	}
	for (size_t i = 0; i < b->n && ok && !relp_failed; i++) {
		size_t len;

		if (format(k, b->first + i, b->line[i], b->len[i], &len) ||
		    relpCltSendSyslog(clt, (unsigned char *)k->msg, len) != RELP_RET_OK)
			ok = false;
	}
	/* the orderly close confirms every message before it */
	relpEngineCltDestruct(k->relp, &clt);
	if (!ok || relp_failed) {
		snprintf(b->why, sizeof(b->why), "relp: session broken before every message was "
			 "acknowledged");
		return -EPIPE;
	}
	memset(b->st, SINK_ACK, b->n);
	return 0;
}

static int syslog_send(struct audit_sink *s, struct sink_batch *b)
{
	struct ssink *k = s->priv;

	return k->t == T_RELP ? relp_send(s, k, b) : stream_send(s, k, b);
}

const struct audit_sink_ops audit_sink_syslog_ops = {
	.type = "syslog",
	.init = syslog_init,
	.send = syslog_send,
	.fini = syslog_fini,
	.batch_max = 1024,
};
