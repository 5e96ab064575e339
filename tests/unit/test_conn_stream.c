/* SPDX-License-Identifier: Apache-2.0 */
/*
 * conn stream mode and the local CA, over real sockets: socketpairs stand for
 * the agent and the upstream, a real epoll drives conn_on_event() as the
 * worker loop does, and a small test module (defined here) transforms bytes.
 * TLS legs run a real OpenSSL peer on a thread.
 */
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "unit.h"
#include "conn.h"
#include "local_ca.h"
#include "loop.h"
#include "proto.h"
#include "util.h"

/* an http target dialled by address: it answers to any name */
static const struct policy_target ip_target = { .name = "t", .addr = { .kind = ADDR_IP } };
static char ca_why[300];

static struct worker W;

static void set_nonblock(int fd)
{
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}
static int a_peer, u_peer;     /* the agent's and the upstream's ends */
static int mode;               /* what the test module does */
static int tls_rc;
static char ca_dir[] = "/tmp/ag-unit-ca-XXXXXX";

enum { M_UPPER, M_AMPLIFY, M_EOF, M_FINISH, M_STARTTLS, M_HOLD, M_UPTLS, M_SENDNOW, M_FLUSH, M_STARTTLS_SLOW };

#define NOW_LEN (1u << 20)   /* more than a socketpair takes at once */
static uint8_t *now_buf;
static int now_rc[3];
static uint32_t flush_left[2];   /* M_FLUSH: queued after each conn_flush() */

/* After the server's last flight is flushed (TLS 1.3: its Finished), the
 * server waits: the client's Finished and its first record arrive
 * together, and the handshake's read takes both. */
static void tls_slow_cb(const SSL *ssl, int where, int ret)
{
	(void)ret;
	if ((where & SSL_CB_ACCEPT_LOOP) && SSL_get_state(ssl) == TLS_ST_SW_FINISHED)
		usleep(200 * 1000);
}

static int mod_agent(struct conn *c)
{
	uint32_t len;
	const uint8_t *p = conn_in(c, SIDE_AGENT, &len);
	char buf[65536];

	switch (mode) {
	case M_UPPER:
		for (uint32_t i = 0; i < len && i < sizeof(buf); i++)
			buf[i] = p[i] >= 'a' && p[i] <= 'z' ? p[i] - 32 : p[i];
		if (len > sizeof(buf))
			len = sizeof(buf);
		conn_in_consume(c, SIDE_AGENT, len);
		return conn_send(c, SIDE_UP, buf, len);
	case M_AMPLIFY:
		/* Each byte becomes four: the module stops reading when told. */
		while (len && !conn_out_pending(c, SIDE_UP)) {
			uint32_t n = len > 4096 ? 4096 : len;

			for (int k = 0; k < 4; k++)
				if (conn_send(c, SIDE_UP, p, n))
					return -EIO;
			conn_in_consume(c, SIDE_AGENT, n);
			p = conn_in(c, SIDE_AGENT, &len);
		}
		if (len && conn_out_pending(c, SIDE_UP) <= CONN_OUT_HIGH) {
			uint32_t n = len > 4096 ? 4096 : len;

			for (int k = 0; k < 4; k++)
				conn_send(c, SIDE_UP, p, n);
			conn_in_consume(c, SIDE_AGENT, n);
		}
		return 0;
	case M_EOF:
		conn_in_consume(c, SIDE_AGENT, len);
		if (len)
			conn_send(c, SIDE_UP, p, len);
		if (conn_in_eof(c, SIDE_AGENT))
			conn_shutdown(c, SIDE_UP);
		return 0;
	case M_FINISH:
		conn_in_consume(c, SIDE_AGENT, len);
		conn_send(c, SIDE_AGENT, "bye", 3);
		conn_finish(c);
		return 0;
	case M_STARTTLS:
		if (!conn_tls_ready(c, SIDE_AGENT) && len >= 8 && memcmp(p, "STARTTLS", 8) == 0) {
			SSL *ssl = local_ca_server_ssl(&ip_target, false, "127.0.0.1", NULL, ca_why, sizeof(ca_why));

			conn_in_consume(c, SIDE_AGENT, 8);
			conn_send(c, SIDE_AGENT, "OK", 2);
			tls_rc = conn_tls(c, SIDE_AGENT, ssl, true);
			return tls_rc;
		}
		conn_in_consume(c, SIDE_AGENT, len);
		return len ? conn_send(c, SIDE_UP, p, len) : 0;
	case M_STARTTLS_SLOW:
		/* The agent answers at once, in one pass of the loop: "OK"
		 * is written and the ClientHello is in the socket before the
		 * handshake starts, and the client's Finished and first
		 * record are there when it reads again (tls_slow_cb) */
		if (!conn_tls_ready(c, SIDE_AGENT) && len >= 8 && memcmp(p, "STARTTLS", 8) == 0) {
			SSL *ssl = local_ca_server_ssl(&ip_target, false, "127.0.0.1", NULL, ca_why, sizeof(ca_why));

			SSL_set_info_callback(ssl, tls_slow_cb);
			conn_in_consume(c, SIDE_AGENT, 8);
			conn_send(c, SIDE_AGENT, "OK", 2);
			conn_flush(c, SIDE_AGENT);
			usleep(200 * 1000);
			tls_rc = conn_tls(c, SIDE_AGENT, ssl, true);
			return tls_rc;
		}
		conn_in_consume(c, SIDE_AGENT, len);
		return len ? conn_send(c, SIDE_UP, p, len) : 0;
	case M_HOLD:
		return 0;   /* never consumes */
	case M_UPTLS:
		conn_in_consume(c, SIDE_AGENT, len);
		return len ? conn_send(c, SIDE_UP, p, len) : 0;
	case M_SENDNOW:
		/* queued bytes, then two big writes: the first fills the socket
		 * (the rest is queued), the second finds a queue ahead of it */
		conn_in_consume(c, SIDE_AGENT, len);
		if (!len)
			return 0;
		now_rc[0] = conn_send(c, SIDE_UP, "head", 4);
		now_rc[1] = conn_send_now(c, SIDE_UP, now_buf, NOW_LEN);
		now_rc[2] = conn_send_now(c, SIDE_UP, now_buf + 7, NOW_LEN - 7);
		return 0;
	case M_FLUSH:
		/* a small answer is written by conn_flush() itself (nothing is
		 * left for the loop); a big one only as far as the socket takes */
		conn_in_consume(c, SIDE_AGENT, len);
		if (!len)
			return 0;
		now_rc[0] = conn_send(c, SIDE_UP, "head", 4);
		conn_flush(c, SIDE_UP);
		flush_left[0] = conn_out_pending(c, SIDE_UP);
		now_rc[1] = conn_send(c, SIDE_UP, now_buf, NOW_LEN);
		conn_flush(c, SIDE_UP);
		flush_left[1] = conn_out_pending(c, SIDE_UP);
		return 0;
	}
	return 0;
}

static int mod_up(struct conn *c)
{
	uint32_t len;
	const uint8_t *p = conn_in(c, SIDE_UP, &len);
	int err = 0;

	if (len)
		err = conn_send(c, SIDE_AGENT, p, len);
	conn_in_consume(c, SIDE_UP, len);
	if (mode == M_EOF && conn_in_eof(c, SIDE_UP))
		conn_shutdown(c, SIDE_AGENT);
	return err;
}

static const struct proto_ops test_ops = {
	.name = "test", .on_agent_data = mod_agent, .on_upstream_data = mod_up,
};

static struct conn *new_conn(void)
{
	int ap[2], up[2];
	struct conn *c = calloc(1, sizeof(*c));

	socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ap);
	socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, up);
	set_nonblock(ap[1]);
	set_nonblock(up[1]);
	a_peer = ap[0];
	u_peer = up[0];
	worker_link(&W, c);
	c->agent = (struct conn_end){ .fd = ap[1], .c = c, .is_agent = true };
	c->up = (struct conn_end){ .fd = up[1], .c = c, .is_agent = false };
	c->agent_idx = c->target_idx = -1;
	c->ops = &test_ops;
	conn_stream(c);
	worker_watch(&W, &c->agent, EPOLLIN | EPOLLOUT | EPOLLRDHUP);
	worker_watch(&W, &c->up, EPOLLIN | EPOLLOUT | EPOLLRDHUP);
	return c;
}

/* Runs the loop for up to ms, or until *flag turns true. */
static void drive(int ms, volatile bool *flag)
{
	uint64_t end = now_ns_mono() / 1000000ull + ms;

	while (now_ns_mono() / 1000000ull < end && !(flag && *flag)) {
		struct epoll_event ev[8];
		int n = epoll_wait(W.epfd, ev, 8, 10);

		for (int i = 0; i < n; i++)
			conn_on_event(ev[i].data.ptr, ev[i].events);
		while (W.dead) {
			struct conn *d = W.dead;

			W.dead = d->next;
			conn_free(d);
		}
	}
}

/* Reads exactly n bytes from a blocking fd, driving the loop meanwhile. */
static ssize_t read_n(int fd, char *buf, size_t n, int ms)
{
	size_t got = 0;
	uint64_t end = now_ns_mono() / 1000000ull + ms;

	set_nonblock(fd);
	while (got < n && now_ns_mono() / 1000000ull < end) {
		ssize_t r = recv(fd, buf + got, n - got, 0);

		if (r > 0)
			got += r;
		else if (r == 0)
			break;
		else
			drive(5, NULL);
	}
	return got;
}

static void t_transform(void)
{
	struct conn *c;
	char buf[16] = "";

	mode = M_UPPER;
	c = new_conn();
	CHECK(write(a_peer, "hello", 5) == 5);
	CHECK(read_n(u_peer, buf, 5, 2000) == 5 && memcmp(buf, "HELLO", 5) == 0);
	CHECK(write(u_peer, "world", 5) == 5);
	CHECK(read_n(a_peer, buf, 5, 2000) == 5 && memcmp(buf, "world", 5) == 0);
	CHECK(c->bytes[DIR_UP] == 5 && c->bytes[DIR_DOWN] == 5);
	conn_close(c, false);
	drive(10, NULL);
	close(a_peer);
	close(u_peer);
}

static void t_backpressure(void)
{
	struct conn *c;
	static char chunk[65536];
	size_t sent = 0, got = 0;
	char *rbuf = malloc(1 << 20);

	mode = M_AMPLIFY;
	c = new_conn();
	memset(chunk, 'x', sizeof(chunk));
	set_nonblock(a_peer);
	/* The upstream reads nothing: the agent must soon be unable to send. */
	for (int i = 0; i < 400; i++) {
		ssize_t n = send(a_peer, chunk, sizeof(chunk), MSG_DONTWAIT);

		if (n > 0)
			sent += n;
		drive(2, NULL);
	}
	CHECK(sent < 8u << 20);   /* bounded: not everything the agent offered */
	CHECK(conn_out_pending(c, SIDE_UP) <= CONN_OUT_HIGH + 4 * 4096 + 4 * 65536);
	set_nonblock(u_peer);
	uint64_t end = now_ns_mono() / 1000000ull + 5000;

	while (got < 4 * sent && now_ns_mono() / 1000000ull < end) {
		ssize_t n = recv(u_peer, rbuf, 1 << 20, 0);

		if (n > 0)
			got += n;
		drive(1, NULL);
	}
	CHECK(got == 4 * sent);
	conn_close(c, false);
	drive(10, NULL);
	free(rbuf);
	close(a_peer);
	close(u_peer);
}

static void t_eof(void)
{
	struct conn *c;
	char buf[8];

	mode = M_EOF;
	c = new_conn();
	CHECK(write(a_peer, "abc", 3) == 3);
	shutdown(a_peer, SHUT_WR);
	CHECK(read_n(u_peer, buf, 3, 2000) == 3);
	CHECK(read_n(u_peer, buf, 1, 500) == 0);   /* the half-close came through */
	CHECK(!c->closing);
	CHECK(write(u_peer, "de", 2) == 2);
	CHECK(read_n(a_peer, buf, 2, 2000) == 2 && memcmp(buf, "de", 2) == 0);
	shutdown(u_peer, SHUT_WR);
	drive(200, NULL);
	CHECK(W.conns == NULL);   /* both sides done: closed and freed */
	close(a_peer);
	close(u_peer);
}

/* The upstream answers and closes while the agent's bytes are still going
 * up (queued, the socket full): the write fails with EPIPE, and the answer
 * waiting in the socket still reaches the agent (left open at stop 36: the
 * connection was closed on the failed write, the answer unread). */
static void t_upstream_refuses_more(void)
{
	static char chunk[65536];
	struct conn *c;
	char buf[8] = "";

	mode = M_UPPER;
	c = new_conn();
	memset(chunk, 'x', sizeof(chunk));
	set_nonblock(a_peer);
	for (int i = 0; i < 400 && conn_out_pending(c, SIDE_UP) == 0; i++) {
		if (send(a_peer, chunk, sizeof(chunk), MSG_DONTWAIT) < 0 && errno != EAGAIN)
			break;
		drive(2, NULL);
	}
	CHECK(conn_out_pending(c, SIDE_UP) > 0);   /* a write upstream is waiting for room */
	CHECK(write(u_peer, "answer", 6) == 6);
	close(u_peer);                              /* with the agent's bytes unread */
	CHECK(read_n(a_peer, buf, 6, 2000) == 6 && memcmp(buf, "answer", 6) == 0);
	/* then the reset (the upstream closed with bytes unread) ends it */
	drive(200, NULL);
	CHECK(W.conns == NULL);   /* both sides ended: closed and freed */
	close(a_peer);
}

static void t_finish(void)
{
	char buf[8] = "";

	mode = M_FINISH;
	new_conn();
	CHECK(write(a_peer, "q", 1) == 1);
	CHECK(read_n(a_peer, buf, 3, 2000) == 3 && memcmp(buf, "bye", 3) == 0);
	CHECK(read_n(a_peer, buf, 1, 500) == 0);
	CHECK(W.conns == NULL);
	close(a_peer);
	close(u_peer);
}

static void t_hold_limit(void)
{
	static char chunk[65536];
	size_t sent = 0;

	mode = M_HOLD;
	new_conn();
	set_nonblock(a_peer);
	for (int i = 0; i < 200 && W.conns; i++) {
		ssize_t n = send(a_peer, chunk, sizeof(chunk), MSG_DONTWAIT | MSG_NOSIGNAL);

		if (n > 0)
			sent += n;
		drive(2, NULL);
	}
	CHECK(W.conns == NULL);           /* over CONN_IN_MAX unconsumed: closed */
	CHECK(sent >= CONN_IN_MAX);
	close(a_peer);
	close(u_peer);
}

/* ---- TLS ---------------------------------------------------------------- */

static volatile bool client_done;
static char client_err[200];

static SSL_CTX *client_ctx(void)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	SSL_CTX_load_verify_locations(ctx, local_ca_cert_path(), NULL);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	return ctx;
}

static void *starttls_client(void *arg)
{
	const char *sni = arg;
	SSL_CTX *ctx = client_ctx();
	SSL *ssl = SSL_new(ctx);
	char ok[3] = "";
	int fd = a_peer;

	if (write(fd, "STARTTLS", 8) != 8 || recv(fd, ok, 2, MSG_WAITALL) != 2 || memcmp(ok, "OK", 2)) {
		snprintf(client_err, sizeof(client_err), "no OK");
		goto out;
	}
	if (sni) {
		SSL_set_tlsext_host_name(ssl, sni);
		SSL_set1_host(ssl, sni);
	} else {
		X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), "127.0.0.1");
	}
	SSL_set_fd(ssl, fd);
	if (SSL_connect(ssl) != 1) {
		ERR_error_string_n(ERR_get_error(), client_err, sizeof(client_err));
		goto out;
	}
	SSL_write(ssl, "secret", 6);
out:
	client_done = true;
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	return NULL;
}

static void tls_agent_case(const char *sni, int m)
{
	pthread_t th;
	char buf[8] = "";

	mode = m;
	new_conn();
	client_done = false;
	client_err[0] = 0;
	pthread_create(&th, NULL, starttls_client, (void *)sni);
	drive(3000, &client_done);
	drive(50, NULL);
	pthread_join(th, NULL);
	CHECK_STR(client_err, "");
	CHECK(read_n(u_peer, buf, 6, 2000) == 6 && memcmp(buf, "secret", 6) == 0);
	if (W.conns)
		conn_close(W.conns, false);
	drive(10, NULL);
	close(a_peer);
	close(u_peer);
}

/* conn_send_now: every byte arrives once, in order, after what was queued. */
static void t_send_now(void)
{
	size_t total = 4 + NOW_LEN + NOW_LEN - 7;
	char *got = malloc(total);
	struct conn *c;
	bool ok;

	now_buf = malloc(NOW_LEN);
	for (size_t i = 0; i < NOW_LEN; i++)
		now_buf[i] = (uint8_t)(i * 31 + i / 251);
	mode = M_SENDNOW;
	c = new_conn();
	CHECK(write(a_peer, "go", 2) == 2);
	CHECK(read_n(u_peer, got, total, 5000) == (ssize_t)total);
	CHECK(now_rc[0] == 0 && now_rc[1] == 0 && now_rc[2] == 0);
	ok = memcmp(got, "head", 4) == 0 && memcmp(got + 4, now_buf, NOW_LEN) == 0 &&
	     memcmp(got + 4 + NOW_LEN, now_buf + 7, NOW_LEN - 7) == 0;
	CHECK(ok);
	CHECK(c->bytes[DIR_UP] == total && c->tx[SIDE_UP] == total);
	CHECK(conn_out_pending(c, SIDE_UP) == 0);
	/* after a shutdown request it refuses as conn_send does */
	conn_shutdown(c, SIDE_UP);
	CHECK(conn_send_now(c, SIDE_UP, "x", 1) == -EPIPE);
	conn_close(c, false);
	drive(10, NULL);
	close(a_peer);
	close(u_peer);
	free(now_buf);
	free(got);
}

static void t_flush(void)
{
	size_t total = 4 + NOW_LEN;
	char *got = malloc(total);
	struct conn *c;

	now_buf = malloc(NOW_LEN);
	for (size_t i = 0; i < NOW_LEN; i++)
		now_buf[i] = (uint8_t)(i * 29 + i / 241);
	mode = M_FLUSH;
	c = new_conn();
	CHECK(write(a_peer, "go", 2) == 2);
	CHECK(read_n(u_peer, got, total, 5000) == (ssize_t)total);
	CHECK(now_rc[0] == 0 && now_rc[1] == 0);
	CHECK(flush_left[0] == 0);
	CHECK(flush_left[1] > 0 && flush_left[1] < NOW_LEN);
	CHECK(memcmp(got, "head", 4) == 0 && memcmp(got + 4, now_buf, NOW_LEN) == 0);
	CHECK(c->bytes[DIR_UP] == total && c->tx[SIDE_UP] == total);
	CHECK(conn_out_pending(c, SIDE_UP) == 0);
	conn_close(c, false);
	drive(10, NULL);
	close(a_peer);
	close(u_peer);
	free(now_buf);
	free(got);
}

static void t_tls_agent_leg(void)
{
	tls_agent_case(NULL, M_STARTTLS);           /* no SNI: the fallback name (an IP SAN) */
	tls_agent_case("db.example", M_STARTTLS);   /* SNI picks the name */
}

/* The whole handshake in one pass of the loop, the client's first record
 * read with its Finished (read ahead): no epoll edge follows, yet the
 * record reaches the module (it stalled the connection: pgbench with
 * sslmode=require, stop 25). */
static void t_tls_agent_leg_one_pass(void)
{
	tls_agent_case(NULL, M_STARTTLS_SLOW);
}

static void t_tls_smuggled(void)
{
	mode = M_STARTTLS;
	new_conn();
	tls_rc = 0;
	/* Bytes sent ahead of the handshake are refused (CVE-2021-23214). */
	CHECK(write(a_peer, "STARTTLSjunk", 12) == 12);
	drive(300, NULL);
	CHECK(tls_rc == -EPROTO);
	CHECK(W.conns == NULL);
	close(a_peer);
	close(u_peer);
}

struct srv { int fd; const char *name; const struct policy_target *t; char got[8]; };
/* who pays for the names the next cases mint, and whether any SNI goes */
static const struct local_ca_asker *case_who;
static bool case_any;

static void *tls_server(void *arg)
{
	struct srv *s = arg;
	SSL *ssl = local_ca_server_ssl(s->t ? s->t : &ip_target, case_any, s->name, case_who, ca_why, sizeof(ca_why));

	SSL_set_fd(ssl, s->fd);
	if (SSL_accept(ssl) == 1)
		SSL_read(ssl, s->got, 4);
	SSL_free(ssl);
	client_done = true;
	return NULL;
}

static void uptls_case_for(const struct policy_target *t, const char *fallback, const char *sni,
			   const char *host, bool want_ok)
{
	struct srv s = { 0 };
	pthread_t th;
	struct conn *c;
	SSL_CTX *ctx = client_ctx();
	SSL *ssl = SSL_new(ctx);

	mode = M_UPTLS;
	c = new_conn();
	s.fd = u_peer;
	s.name = fallback;
	s.t = t;
	client_done = false;
	/* The server (the local CA) mints for the SNI it sees when the target
	 * answers to it (any, for an IP target): send sni, expect host. */
	SSL_set_tlsext_host_name(ssl, sni);
	SSL_set1_host(ssl, host);
	CHECK(conn_tls(c, SIDE_UP, ssl, false) == 0);
	SSL_CTX_free(ctx);
	pthread_create(&th, NULL, tls_server, &s);
	CHECK(write(a_peer, "ping", 4) == 4);
	drive(3000, &client_done);
	if (want_ok) {
		drive(100, NULL);
		CHECK(memcmp(s.got, "ping", 4) == 0);
		if (W.conns)
			conn_close(W.conns, false);
	} else {
		drive(300, NULL);
		CHECK(W.conns == NULL);   /* verification failed: closed, nothing sent */
		CHECK(s.got[0] == 0);
	}
	shutdown(u_peer, SHUT_RDWR);
	pthread_join(th, NULL);
	drive(10, NULL);
	close(a_peer);
	close(u_peer);
}

static void uptls_case(const char *host, bool want_ok)
{
	uptls_case_for(NULL, "localhost", "localhost", host, want_ok);
}

static void t_tls_upstream_leg(void)
{
	uptls_case("localhost", true);
	uptls_case("wrong.example", false);
}

/* A target with a name: a certificate is minted for that name only; another
 * SNI gets the target's own (review, stop 29: any SNI was minted, 0.8 ms
 * each, pushing other agents' names out of the cache). An IP target mints
 * for any name. */
static void t_tls_agent_leg_names(void)
{
	static char host[] = "api.internal";
	static const struct policy_target named = { .name = "api", .addr = { .kind = ADDR_HOST, .host = host } };

	uptls_case_for(&named, "api.internal", "api.internal", "api.internal", true);
	uptls_case_for(&named, "api.internal", "other.example", "other.example", false);
	uptls_case_for(&named, "api.internal", "other.example", "api.internal", true);   /* the fallback */
	uptls_case_for(&ip_target, "127.0.0.1", "other.example", "other.example", true);
}

/* An asker that may mint while budget lasts, and counts what it paid. */
struct budget { int left, asked, paid; uint64_t ns; };

static bool budget_may(void *arg, char *why, size_t whylen)
{
	struct budget *b = arg;

	b->asked++;
	snprintf(why, whylen, "over");
	return b->left > 0;
}

static void budget_spent(void *arg, uint64_t ns)
{
	struct budget *b = arg;

	b->left--;
	b->paid++;
	b->ns += ns;
}

/*
 * Names the agent chooses (any SNI toward postgres, or toward a target
 * without a name; a CIDR target's addresses) are minted at its expense:
 * past its budget the target's own certificate stands, and its leaves
 * take at most LOCAL_CA_PER_AGENT cache slots, so cycling through names
 * pushes out its own, not the target's (review, stop 30: any SNI was
 * minted free, 0.8 ms each, and could empty the cache of every agent's).
 */
static void t_tls_agent_leg_budget(void)
{
	static char host[] = "db.internal";
	static const struct policy_target named = { .name = "db", .addr = { .kind = ADDR_HOST, .host = host } };
	static const struct policy_target cidr = { .name = "net", .addr = { .kind = ADDR_CIDR } };
	struct budget b = { .left = 1 };
	struct local_ca_asker who = { .may = budget_may, .spent = budget_spent, .arg = &b, .tag = 3 };
	char name[64];
	uint64_t m0;

	case_who = &who;
	case_any = true;
	/* the target's own name: free, whatever the budget, in any case */
	m0 = local_ca_minted();
	uptls_case_for(&named, "db.internal", "db.internal", "db.internal", true);
	uptls_case_for(&named, "db.internal", "DB.Internal", "db.internal", true);
	CHECK(b.asked == 0 && b.paid == 0);
	/* an alias: minted and paid for (thread CPU time) */
	uptls_case_for(&named, "db.internal", "alias1.example", "alias1.example", true);
	CHECK(b.paid == 1 && b.ns > 0 && b.left == 0);
	CHECK(local_ca_minted() == m0 + 2);
	/* past the budget: nothing minted, the target's own certificate stands */
	uptls_case_for(&named, "db.internal", "alias2.example", "alias2.example", false);
	uptls_case_for(&named, "db.internal", "alias2.example", "db.internal", true);
	CHECK(local_ca_minted() == m0 + 2 && b.paid == 1);
	/* a cached alias costs nothing */
	uptls_case_for(&named, "db.internal", "alias1.example", "alias1.example", true);
	CHECK(local_ca_minted() == m0 + 2 && b.paid == 1);
	/* a CIDR target's address is the agent's choice: no SSL past the budget */
	CHECK(local_ca_server_ssl(&cidr, true, "10.9.8.7", &who, ca_why, sizeof(ca_why)) == NULL);
	CHECK(strstr(ca_why, "limits.parse_cpu") != NULL);
	CHECK(local_ca_minted() == m0 + 2);

	/* 20 names cycled: the agent keeps its last 16, the target's stays */
	b.left = 1000;
	for (int i = 0; i < 20; i++) {
		snprintf(name, sizeof(name), "cycle%d.example", i);
		uptls_case_for(&named, "db.internal", name, name, true);
	}
	CHECK(local_ca_minted() == m0 + 22);
	uptls_case_for(&named, "db.internal", "db.internal", "db.internal", true);
	uptls_case_for(&named, "db.internal", "cycle19.example", "cycle19.example", true);
	uptls_case_for(&named, "db.internal", "cycle4.example", "cycle4.example", true);
	CHECK(local_ca_minted() == m0 + 22);   /* all three still cached */
	uptls_case_for(&named, "db.internal", "cycle0.example", "cycle0.example", true);
	CHECK(local_ca_minted() == m0 + 23);   /* pushed out by its own later names */
	case_who = NULL;
	case_any = false;
}

/* A full cache: names agents asked for go before the targets' own. */
static void t_ca_full_cache_keeps_target_names(void)
{
	static const struct policy_target cidr = { .name = "net", .addr = { .kind = ADDR_CIDR } };
	struct budget b1 = { .left = 1000 }, b2 = { .left = 1000 };
	struct local_ca_asker a1 = { .may = budget_may, .spent = budget_spent, .arg = &b1, .tag = 1 };
	struct local_ca_asker a2 = { .may = budget_may, .spent = budget_spent, .arg = &b2, .tag = 2 };
	char name[64];
	uint64_t m;
	SSL *ssl;

	/* targets' own names fill the cache but for 8 places (what earlier
	 * tests left is pushed out first) */
	for (int i = 0; i < 248; i++) {
		snprintf(name, sizeof(name), "own%d.example", i);
		ssl = local_ca_server_ssl(NULL, false, name, NULL, ca_why, sizeof(ca_why));
		CHECK(ssl != NULL);
		SSL_free(ssl);
	}
	/* two agents cycle through addresses of a CIDR target, 40 each */
	for (int i = 0; i < 40; i++) {
		snprintf(name, sizeof(name), "10.1.0.%d", i + 1);
		ssl = local_ca_server_ssl(&cidr, true, name, &a1, ca_why, sizeof(ca_why));
		CHECK(ssl != NULL);
		SSL_free(ssl);
		snprintf(name, sizeof(name), "10.2.0.%d", i + 1);
		ssl = local_ca_server_ssl(&cidr, true, name, &a2, ca_why, sizeof(ca_why));
		CHECK(ssl != NULL);
		SSL_free(ssl);
	}
	CHECK(b1.paid == 40 && b2.paid == 40);
	/* every target name is still cached: asking again mints nothing */
	m = local_ca_minted();
	for (int i = 0; i < 248; i++) {
		snprintf(name, sizeof(name), "own%d.example", i);
		ssl = local_ca_server_ssl(NULL, false, name, NULL, ca_why, sizeof(ca_why));
		CHECK(ssl != NULL);
		SSL_free(ssl);
	}
	CHECK(local_ca_minted() == m);
	/* the last of each agent's are too; the first are gone */
	ssl = local_ca_server_ssl(&cidr, true, "10.2.0.40", &a2, ca_why, sizeof(ca_why));
	SSL_free(ssl);
	CHECK(local_ca_minted() == m && b2.paid == 40);
	ssl = local_ca_server_ssl(&cidr, true, "10.1.0.1", &a1, ca_why, sizeof(ca_why));
	SSL_free(ssl);
	CHECK(local_ca_minted() == m + 1 && b1.paid == 41);
}

static void t_ca_persists(void)
{
	char path[300], why[200];
	char a[4096] = "", b[4096] = "";
	int fd;

	snprintf(path, sizeof(path), "%s/ca/ca.crt", ca_dir);
	fd = open(path, O_RDONLY);
	CHECK(fd >= 0 && read(fd, a, sizeof(a) - 1) > 0);
	close(fd);
	local_ca_close();
	CHECK(local_ca_open(ca_dir, why, sizeof(why)) == 0);
	fd = open(path, O_RDONLY);
	CHECK(fd >= 0 && read(fd, b, sizeof(b) - 1) > 0);
	close(fd);
	CHECK(a[0] && strcmp(a, b) == 0);   /* the same CA after a restart */
	struct stat st;

	snprintf(path, sizeof(path), "%s/ca/ca.key", ca_dir);
	CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
	CHECK(local_ca_server_ssl(&ip_target, false, "bad name!", NULL, why, sizeof(why)) == NULL);   /* agent-controlled names are checked */

	/* One file missing is an error, not a first start: a new CA then
	 * overwrote the key every agent's trust store holds (review, stop 36). */
	char key[4096] = "", key2[4096] = "", crt[300], moved[320];

	fd = open(path, O_RDONLY);
	CHECK(fd >= 0 && read(fd, key, sizeof(key) - 1) > 0);
	close(fd);
	snprintf(crt, sizeof(crt), "%s/ca/ca.crt", ca_dir);
	snprintf(moved, sizeof(moved), "%s.moved", crt);
	CHECK(rename(crt, moved) == 0);
	local_ca_close();
	why[0] = 0;
	CHECK(local_ca_open(ca_dir, why, sizeof(why)) != 0 && strstr(why, "incomplete") && strstr(why, "ca.crt"));
	fd = open(path, O_RDONLY);
	CHECK(fd >= 0 && read(fd, key2, sizeof(key2) - 1) > 0);
	close(fd);
	CHECK(key[0] && strcmp(key, key2) == 0);   /* the key is the one it was */
	CHECK(access(crt, F_OK) != 0);
	CHECK(rename(moved, crt) == 0);
	CHECK(local_ca_open(ca_dir, why, sizeof(why)) == 0 && !local_ca_created());
}

/* A reservation is for one message: afterwards the bound and the buffer
 * go back (a connection kept 16 MiB for having once carried 16 MiB). */
static void t_in_release(void)
{
	struct conn c;
	struct conn_side *sd = &c.side[SIDE_AGENT];

	memset(&c, 0, sizeof(c));
	conn_stream(&c);
	CHECK(conn_in_reserve(&c, SIDE_AGENT, 16u << 20) == 0);
	CHECK(sd->in_max == 16u << 20);
	CHECK((sd->in = malloc(16u << 20)) != NULL);
	sd->in_cap = 16u << 20;
	sd->in_off = (16u << 20) - 100000;   /* the big message consumed; 100,000 bytes of the next */
	sd->in_len = 16u << 20;
	memset(sd->in + sd->in_off, 'x', 100000);
	sd->in[sd->in_len - 1] = 'y';
	conn_in_release(&c, SIDE_AGENT);
	CHECK(sd->in_max == CONN_IN_MAX);
	CHECK(sd->in_cap == 2 * CONN_BUF && sd->in_off == 0 && sd->in_len == 100000);
	CHECK(sd->in[0] == 'x' && sd->in[99999] == 'y');
	uint32_t len;
	CHECK(conn_in(&c, SIDE_AGENT, &len) == sd->in && len == 100000);

	/* more than CONN_IN_MAX still buffered: nothing changes */
	CHECK(conn_in_reserve(&c, SIDE_AGENT, 4u << 20) == 0);
	CHECK((sd->in = realloc(sd->in, 4u << 20)) != NULL);
	sd->in_cap = sd->in_len = 4u << 20;
	sd->in_off = 0;
	conn_in_release(&c, SIDE_AGENT);
	CHECK(sd->in_max == 4u << 20 && sd->in_cap == 4u << 20);

	/* empty: freed; grows again from nothing */
	conn_in_consume(&c, SIDE_AGENT, 4u << 20);
	conn_in_release(&c, SIDE_AGENT);
	CHECK(sd->in == NULL && sd->in_cap == 0 && sd->in_max == CONN_IN_MAX);
	CHECK(conn_in(&c, SIDE_AGENT, &len) == NULL && len == 0);

	/* never reserved, small buffer: untouched */
	CHECK((sd->in = malloc(CONN_BUF)) != NULL);
	sd->in_cap = CONN_BUF;
	conn_in_release(&c, SIDE_AGENT);
	CHECK(sd->in != NULL && sd->in_cap == CONN_BUF);
	free(sd->in);
}

int main(int argc, char **argv)
{
	char why[200];

	W.epfd = epoll_create1(EPOLL_CLOEXEC);
	if (!mkdtemp(ca_dir) || local_ca_open(ca_dir, why, sizeof(why))) {
		fprintf(stderr, "local CA: %s\n", why);
		return 1;
	}
	RUN(t_transform);
	RUN(t_backpressure);
	RUN(t_eof);
	RUN(t_finish);
	RUN(t_upstream_refuses_more);
	RUN(t_hold_limit);
	RUN(t_send_now);
	RUN(t_flush);
	RUN(t_tls_agent_leg);
	RUN(t_tls_agent_leg_one_pass);
	RUN(t_tls_smuggled);
	RUN(t_tls_upstream_leg);
	RUN(t_tls_agent_leg_names);
	RUN(t_tls_agent_leg_budget);
	RUN(t_ca_full_cache_keeps_target_names);
	RUN(t_ca_persists);
	RUN(t_in_release);
	local_ca_close();
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", ca_dir);
	if (system(cmd)) {}
	UNIT_DONE("conn_stream");
}
