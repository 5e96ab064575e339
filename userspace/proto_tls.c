/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tls: TLS passed through untouched, allowed by SNI. The ClientHello is read
 * (bounded by CONN_BUF, which equals TLS_HELLO_MAX), the server name checked
 * against the target's names, and then every byte, the ClientHello first, is
 * relayed as it came. Names: the host of a host-name target, and
 * upstream.server_name when given. A target addressed by IP with no
 * server_name accepts any SNI (recorded in audit).
 *
 * TLS 1.3 lets the server answer the first ClientHello with a
 * HelloRetryRequest, and the client then sends a second ClientHello, in
 * the clear too, which the server takes its certificate and virtual host
 * from: a client could name an allowed host first and another one second
 * (RFC 8446 wants them equal; the server does not check). So only the
 * first ClientHello goes up at first, nothing after it; the server's first
 * handshake message is read, and when it is a HelloRetryRequest the second
 * ClientHello is judged like the first and must name the same host. Only
 * then is the connection relayed.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "audit.h"
#include "conn.h"
#include "enforcer.h"
#include "proto.h"
#include "tls_hello.h"

_Static_assert(CONN_BUF >= TLS_HELLO_MAX, "a whole ClientHello must fit the agent buffer");

static const char *sni_verdict(const struct policy_target *t, const struct tls_hello *h)
{
	const char *names[2] = {
		t && t->addr.kind == ADDR_HOST ? t->addr.host : NULL,
		t ? t->upstream.server_name : NULL,
	};

	if (!names[0] && !names[1])
		return NULL;   /* an IP target without server_name: any SNI, recorded */
	/* With ECH the SNI is only the outer, public name: the real server could
	 * be any host behind it. A name-checked target cannot allow that. */
	if (h->has_ech)
		return "ClientHello uses Encrypted Client Hello: the real server name is hidden";
	if (!h->has_sni)
		return "ClientHello has no server name (SNI)";
	for (int i = 0; i < 2; i++)
		if (names[i] && strcasecmp(h->sni, names[i]) == 0)
			return NULL;
	return "server name (SNI) is not one of the target's names";
}

static void audit_sni(struct conn *c, const struct tls_hello *h, bool allowed, const char *reason)
{
	struct audit_w *w = enforcer_conn_event(c, allowed ? 1 : 5, allowed ? "Open" : "Refuse");

	if (h && h->has_sni) {
		aobj_open(&w->top, "tls");
		aobj_str(&w->top, "sni", h->sni);
		aobj_close(&w->top);
	}
	if (!allowed)
		enforcer_count_refused(c);
	else
		c->opened = true;
	audit_w_verdict(w, allowed, c->would_deny, enforcer_rule_name(c), reason);
	audit_commit(w);
}

enum { T_HELLO, T_SERVER, T_RETRY };

struct tls_state {
	int phase;
	uint32_t hello_left;   /* bytes of the first ClientHello not yet sent up */
	bool has_sni;
	char sni[256];
};

static struct tls_state *T(struct conn *c)
{
	return c->proto_state;
}

static int tls_start(struct conn *c)
{
	return (c->proto_state = calloc(1, sizeof(struct tls_state))) ? 0 : -ENOMEM;
}

static void tls_release(struct conn *c)
{
	free(c->proto_state);
	c->proto_state = NULL;
}

static int refuse(struct conn *c, const struct tls_hello *h, const char *why)
{
	audit_sni(c, h, false, why);
	conn_refuse(c);
	return 0;
}

/* The first ClientHello. */
static int first_hello(struct conn *c)
{
	const struct policy_target *t = c->target_idx >= 0 ? &c->policy->targets[c->target_idx] : NULL;
	struct tls_hello h;
	const uint8_t *buf;
	uint32_t len;
	const char *why;
	int n = conn_agent_fill(c), st, err;

	if (n == -EAGAIN)
		return 0;
	if (n < 0)
		return n;
	buf = conn_agent_buf(c, &len);
	st = len ? tls_hello_parse(buf, len, &h) : TLS_HELLO_NEED_MORE;
	if (st == TLS_HELLO_NEED_MORE && (n == 0 || len >= CONN_BUF))
		st = TLS_HELLO_MALFORMED;   /* EOF or bound reached mid-hello */
	if (st == TLS_HELLO_NEED_MORE)
		return 0;
	if (st != TLS_HELLO_OK) {
		why = "not a well-formed TLS ClientHello";
		if (enforcer_should_refuse(c, why))
			return refuse(c, NULL, why);
		audit_sni(c, NULL, true, why);
		/* observe mode: not TLS we can follow; relayed as it comes */
		if ((err = conn_connect_upstream(c)))
			return err;
		conn_relay(c);
		return 0;
	}
	why = sni_verdict(t, &h);
	if (why && enforcer_should_refuse(c, why))
		return refuse(c, &h, why);
	audit_sni(c, &h, true, why);
	T(c)->has_sni = h.has_sni;
	memcpy(T(c)->sni, h.sni, sizeof(T(c)->sni));
	T(c)->hello_left = (uint32_t)h.consumed;
	T(c)->phase = T_SERVER;
	return conn_connect_upstream(c);   /* the hello goes up once connected */
}

/* HelloRetryRequest is a ServerHello whose random is SHA-256 of the
 * string "HelloRetryRequest" (RFC 8446 §4.1.3). */
static const uint8_t hrr_random[32] = {
	0xCF, 0x21, 0xAD, 0x74, 0xE5, 0x9A, 0x61, 0x11, 0xBE, 0x1D, 0x8C, 0x02, 0x1E, 0x65, 0xB8, 0x91,
	0xC2, 0xA2, 0x11, 0x16, 0x7A, 0xBB, 0x8C, 0x5E, 0x07, 0x9E, 0x09, 0xE2, 0xC8, 0xA8, 0x33, 0x9C,
};

/* The server's first record, once the hello is up. */
static int server_first(struct conn *c)
{
	struct tls_state *s = T(c);
	const uint8_t *b;
	uint32_t len;
	int n;

	if (s->hello_left && (n = conn_push(c, DIR_UP, s->hello_left)) != 0) {
		if (n < 0)
			return n;
		s->hello_left = (uint32_t)n;   /* the rest at the next event */
		return 0;
	}
	s->hello_left = 0;
	n = conn_upstream_fill(c);
	if (n == -EAGAIN)
		return 0;
	if (n < 0)
		return n;
	b = conn_upstream_buf(c, &len);
	/* record: type, version(2), length(2); handshake: type, length(3),
	 * legacy_version(2), random(32) */
	if (len >= 1 && b[0] != 22) {
		conn_relay(c);   /* an alert, or not TLS: nothing to follow */
		return 0;
	}
	if (len < 5 + 4 + 2 + 32) {
		if (n == 0 || len >= CONN_BUF) {
			conn_relay(c);   /* closed early: the agent gets what there is */
			return 0;
		}
		return 0;
	}
	if (((uint32_t)b[3] << 8 | b[4]) < 4 + 2 + 32 || b[5] != 2)
		return refuse(c, NULL, "the server's first handshake message is not a ServerHello the "
			      "enforcer can read");
	if (memcmp(b + 11, hrr_random, 32) != 0) {
		conn_relay(c);   /* a ServerHello: the names are settled */
		return 0;
	}
	/* HelloRetryRequest: to the agent, and wait for its second hello */
	s->phase = T_RETRY;
	n = conn_push(c, DIR_DOWN, len);
	if (n < 0)
		return n;
	return n > 0 ? -ENOBUFS : 0;   /* a few hundred bytes to a fresh socket: all go */
}

/* The agent's second ClientHello, after a HelloRetryRequest: the same
 * name, no ECH, or the connection goes. A ChangeCipherSpec record may come
 * first (middlebox compatibility mode). */
static int second_hello(struct conn *c)
{
	struct tls_state *s = T(c);
	struct tls_hello h;
	const uint8_t *buf;
	uint32_t len, off = 0;
	int n = conn_agent_fill(c), st;

	if (n == -EAGAIN)
		return 0;
	if (n < 0)
		return n;
	buf = conn_agent_buf(c, &len);
	while (len - off >= 6 && buf[off] == 20 && buf[off + 1] == 3 && buf[off + 3] == 0 &&
	       buf[off + 4] == 1)
		off += 6;
	st = len > off ? tls_hello_parse(buf + off, len - off, &h) : TLS_HELLO_NEED_MORE;
	if (st == TLS_HELLO_NEED_MORE && (n == 0 || len >= CONN_BUF))
		st = TLS_HELLO_MALFORMED;
	if (st == TLS_HELLO_NEED_MORE)
		return 0;
	/* ECH is refused only where the first hello's was (sni_verdict()): a
	 * target that checks no name accepts it, and clients that send GREASE
	 * ECH send it in both hellos (review, stop 36) */
	const struct policy_target *t = c->target_idx >= 0 ? &c->policy->targets[c->target_idx] : NULL;
	bool names = !t || t->addr.kind == ADDR_HOST || t->upstream.server_name;
	const char *why = st != TLS_HELLO_OK ?
		"the second ClientHello (after a HelloRetryRequest) is not well formed" :
		h.has_ech && names ? "the second ClientHello (after a HelloRetryRequest) uses Encrypted Client Hello" :
		h.has_sni != s->has_sni || strcmp(h.sni, s->sni) != 0 ?
		"the second ClientHello (after a HelloRetryRequest) names another server than the first" :
		NULL;

	if (why && enforcer_should_refuse(c, why))
		return refuse(c, st == TLS_HELLO_OK ? &h : NULL, why);
	conn_relay(c);   /* (observe mode: the first hello's event was written) */
	return 0;
}

static int tls_on_agent_data(struct conn *c)
{
	switch (T(c)->phase) {
	case T_HELLO:
		return first_hello(c);
	case T_RETRY:
		return second_hello(c);
	default: {
		/* held, not sent, until the server's first message is read */
		int n = conn_agent_fill(c);

		return n == -EAGAIN || n >= 0 ? 0 : n;
	}
	}
}

static int tls_on_upstream_data(struct conn *c)
{
	if (T(c)->phase == T_SERVER)
		return server_first(c);
	if (T(c)->phase == T_RETRY) {
		int n = conn_upstream_fill(c);   /* held until the second hello is judged */

		return n == -EAGAIN || n >= 0 ? 0 : n;
	}
	return 0;
}

const struct proto_ops proto_tls_ops = {
	.name = "tls",
	.start = tls_start,
	.on_agent_data = tls_on_agent_data,
	.on_upstream_data = tls_on_upstream_data,
	.release = tls_release,
};
