/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tls: TLS passed through untouched, allowed by SNI. The ClientHello is read
 * (bounded by CONN_BUF, which equals TLS_HELLO_MAX), the server name checked
 * against the target's names, and then every byte, the ClientHello first, is
 * relayed as it came. Names: the host of a host-name target, and
 * upstream.server_name when given. A target addressed by IP with no
 * server_name accepts any SNI (recorded in audit).
 */
#include <errno.h>
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

static int tls_start(struct conn *c)
{
	return 0;   /* nothing to do until the ClientHello arrives */
}

static int tls_on_agent_data(struct conn *c)
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
		if (enforcer_should_refuse(c, why)) {
			audit_sni(c, NULL, false, why);
			conn_refuse(c);
			return 0;
		}
		audit_sni(c, NULL, true, why);
	} else {
		why = sni_verdict(t, &h);
		if (why && enforcer_should_refuse(c, why)) {
			audit_sni(c, &h, false, why);
			conn_refuse(c);
			return 0;
		}
		audit_sni(c, &h, true, why);
	}
	err = conn_connect_upstream(c);
	if (err)
		return err;
	conn_relay(c);
	return 0;
}

const struct proto_ops proto_tls_ops = {
	.name = "tls",
	.start = tls_start,
	.on_agent_data = tls_on_agent_data,
};
