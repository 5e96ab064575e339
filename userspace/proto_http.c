// SPDX-License-Identifier: Apache-2.0
/*
 * http: an HTTP/1.1 proxy that decides every request on its canonical
 * method and path, in stream mode (conn.h).
 *
 * One agent connection has one upstream connection of its own (no reuse
 * across agents). Requests are parsed by http_msg (strict framing) and
 * http_path (canonical target); each is judged against every rule the agent
 * holds for the target (enforcer_rules_for): allowed when some rule's
 * allow.http pattern matches. A denied request is answered here with 403
 * and the JSON body of DESIGN.md §3, and never reaches the upstream; a
 * malformed one gets 400 and the connection closes. Answers go back in
 * request order (pipelining): a queue of requests in flight holds local
 * answers until the forwarded requests before them are answered.
 *
 * What goes upstream is re-serialised from the parsed request, never the
 * agent's bytes: "METHOD canonical-target HTTP/1.1", Host, the agent's
 * end-to-end fields minus the ones below, our own framing (Content-Length,
 * or chunked re-encoded), and the target's credential. Stripped: hop-by-hop
 * fields (Connection and what it names, Keep-Alive, TE, Trailer,
 * Transfer-Encoding, Upgrade unless allowed, Proxy-*), Authorization,
 * Cookie, X-Forwarded-*, Forwarded, X-Real-IP, method overrides
 * (X-HTTP-Method-Override, X-HTTP-Method, X-Method-Override),
 * Impersonate-* and X-Remote-* (Kubernetes front-proxy identity). With
 * upstream.forwarded_for, one X-Forwarded-For of ours is added: the address
 * the agent's connection came from.
 *
 * Bodies stream through (backpressure is conn.c's): Content-Length bodies
 * as they come, chunked bodies decoded and re-encoded, never buffered
 * whole. Expect: 100-continue is decided on the head: a denial is a final
 * 403 with Connection: close before any body byte is read; an allowed one
 * is forwarded with the expectation, and the upstream's 100 relayed.
 *
 * Upgrade (WebSocket only) needs an explicit "UPGRADE /path" rule; after the
 * upstream's 101 both directions are relayed as they are. h2c and CONNECT
 * are always refused: nothing could inspect what follows.
 *
 * An agent that speaks TLS first (a ClientHello: 0x16) is terminated with a
 * certificate from the local CA (local_ca.h); without the CA it is refused.
 *
 * HTTP/1.0 requests are accepted (Host supplied from the target when
 * absent); keep-alive is not offered to them: the answer says
 * Connection: close and the connection closes after it. A chunked answer
 * from the upstream reaches them de-chunked (delimited by the close), and
 * interim 1xx answers do not reach them at all.
 *
 * The upstream leg: nothing is sent before it is up (TLS verified); a
 * certificate that does not verify is a 502 saying so. An upstream that
 * closes an idle keep-alive connection does not end the agent's: the next
 * request dials again. When a reused connection closes under the one
 * request in flight before any byte of its answer (the keep-alive race),
 * that request is sent once more on a new connection if it is of a safe
 * method and has no body; otherwise it gets a 502.
 *
 * Bounds an agent cannot stretch: a head of HTTP_HEAD_MAX bytes, whole
 * within HTTP_HEAD_TIMEOUT_MS of its first byte; HTTP_PIPELINE_MAX requests
 * in flight; a masked response body of MASK_JSON_MAX (over it: 502, never
 * the unmasked bytes).
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "audit.h"
#include "conn.h"
#include "enforcer.h"
#include "http_msg.h"
#include "http_path.h"
#include "http_mask.h"
#include "http_scrub.h"
#include "http_upstream.h"
#include "k8s.h"
#include "local_ca.h"
#include "proto.h"
#include "util.h"

#define HTTP_PIPELINE_MAX 16
#define AUDIT_PATH_MAX    256
/*
 * A request head must be whole this long after its first byte arrived, or
 * the connection is closed (conn.c's deadline: a reset, audited). Counted
 * from the first byte, not from the last, so trickling one byte at a time
 * (slowloris) does not extend it. haproxy's documented advice for
 * "timeout http-request" is 10 s; no real client takes longer to write a
 * head of at most HTTP_HEAD_MAX bytes.
 */
#define HTTP_HEAD_TIMEOUT_MS env_ms("AGENTGATE_HTTP_HEAD_MS", 10000, &head_timeout_ms)   /* test knob */
static _Atomic uint64_t head_timeout_ms;

enum { A_HEAD = 0, A_BODY, A_WAIT_UPGRADE, A_TUNNEL, A_DONE };
/* U_DISCARD: the response was refused (a 502 of ours went instead) and the
 * connection is ending: what the upstream still sends is dropped. */
/* U_HELD: a masked response with a Content-Length waits, head and body,
 * in the upstream input buffer until it is whole; it is masked from there
 * (no copy of it is made). */
enum { U_HEAD = 0, U_BODY, U_TUNNEL, U_DISCARD, U_HELD };

struct hreq {                      /* a request in flight, answered in order */
	bool local;                    /* answered by us */
	bool head, upgrade, close_after, would_deny, allowed;
	char upgrade_proto[12];        /* the protocol an upgrade asked for */
	char ws_accept[32];            /* its Sec-WebSocket-Accept, "" when not WebSocket */
	bool v10;                      /* an HTTP/1.0 request: no chunked, no 1xx back */
	bool retried;                  /* sent again on a fresh upstream connection */
	int status;
	const char *reason;            /* static text, or NULL */
	char rule[96];
	char user[IDENT_NAME_MAX];     /* the delegating user's sub, "" none */
	char why[256];                 /* a reason built for this request */
	/* the mask its answer gets: the connection's when it was judged (s->mask
	 * or, once that was replaced for a later request, one in s->old_masks) */
	struct mask_rules *mask;
	const struct policy *policy;   /* the one it was judged under (NULL: c->policy) */
	char k8s_verb[24], k8s_res[160], k8s_ns[64];   /* kubernetes attributes, for audit */
	bool masked;                   /* the response is masked (mask rules apply) */
	unsigned mask_hits;
	unsigned cred_hits;            /* injected credentials starred in the answer */
	char mask_fields[256];
	char method[HTTP_METHOD_MAX + 1];
	char path[AUDIT_PATH_MAX];
	uint64_t t0_ms, req_bytes, resp_bytes;
};

struct http_state {
	struct hreq q[HTTP_PIPELINE_MAX];
	unsigned qhead, qlen;
	int astate, ustate;
	uint32_t ahead_seen, uhead_seen;   /* head_due(): bytes of a head already parsed as incomplete */
	/* agent body */
	bool abody_fwd, abody_chunked;
	bool aform;                    /* a form body: scanned for a method override */
	struct http_form_scan aform_scan;
	bool ajson;                    /* a JSON body: its top-level keys too */
	bool amulti_on;                /* amulti scans this body */
	struct http_json_scan ajson_scan;
	struct http_multipart_scan *amulti;   /* a multipart body: its part names; NULL: none */
	uint64_t aremain;
	struct http_chunked ach;
	struct hreq *abody_req;
	/* upstream body */
	enum http_body ubody;
	uint64_t uremain;
	struct http_chunked uch;
	bool up_close;                 /* the upstream will close after this response */
	bool uchunked_out;             /* the response goes to the agent chunked */
	/* upstream leg */
	bool up_connected, up_tls, up_ready, up_failed;
	bool up_idle;                  /* it closed with nothing in flight: dial again when needed */
	unsigned up_served;            /* responses read on this upstream connection */
	char up_why[200];              /* why it failed, when built here */
	/* The one forwarded request in flight that may be sent again on a new
	 * connection (a safe method, no body; see can_resend()): its head as
	 * forwarded, without the credential (added again when resent). */
	uint8_t *resend;
	size_t resend_len, resend_cap;
	const struct hreq *resend_req; /* NULL: nothing may be resent */
	bool resend_pending;           /* send it once the new leg is up */
	uint64_t head_since_ms;        /* a partial request head's first byte, 0 none */
	uint64_t resp_since_ms;        /* the front request's answer awaited since, 0 none (arm_clocks) */
	uint64_t hs_since_ms;          /* the upstream TLS handshake began, 0 none (arm_clocks) */
	bool agent_tls;
	bool k8s;                      /* protocol: kubernetes */
	char host[256];                /* the target's name for Host when the agent sends none */
	struct ident_principal user;   /* scratch: the delegating user of the request being judged */
	/* masking: the compiled union of the masks of the rules in force,
	 * recompiled when that rule set changes */
	struct mask_rules *mask;
	const struct policy_rule *mask_of[2 * ENFORCER_MAX_RULES];
	size_t nmask_of;
	bool mask_valid;
	/* masks replaced while requests judged under them were in flight (a
	 * pipelined request of another delegating user, or of the connection
	 * after a reload): kept until the queue is empty */
	struct mask_rules *old_masks[HTTP_PIPELINE_MAX];
	unsigned nold_masks;
	/* a masked response being collected (chunked or delimited by the
	 * close; one with a Content-Length is held in the input: U_HELD) */
	bool collecting;
	uint8_t *mhead;                /* copy of its head; mh's offsets point into it */
	struct http_head mh;           /* U_HELD: offsets into the upstream input */
	uint8_t *mbody;
	size_t mlen, mcap;
	size_t held;                   /* bytes of masked_held this connection reserved */
	size_t held_q;                 /* ... and counts for masked answers queued to the agent */
	/* the credentials this connection injected, searched for in every
	 * answer (http_scrub.h); a streamed body keeps back the bytes an
	 * occurrence may still be completing in (sc) */
	struct scrub scrub;
	uint8_t *sc;
	size_t sc_len, sc_cap;
	bool sc_started;               /* this body's start went out (scrub_out()) */
	unsigned tunnel_hits;          /* credentials starred in an upgraded connection's bytes */
};

static struct http_state *st(struct conn *c)
{
	return c->proto_state;
}

static uint64_t now_ms(void)
{
	return now_ns_mono() / 1000000ull;
}

static const struct policy_target *target(struct conn *c)
{
	return c->target_idx >= 0 ? &c->policy->targets[c->target_idx] : NULL;
}

/* ---- audit ---------------------------------------------------------------- */

static int ocsf_activity(const char *m, const char **name)
{
	static const struct { const char *m; int id; const char *name; } map[] = {
		{ "CONNECT", 1, "Connect" }, { "DELETE", 2, "Delete" }, { "GET", 3, "Get" },
		{ "HEAD", 4, "Head" }, { "OPTIONS", 5, "Options" }, { "POST", 6, "Post" },
		{ "PUT", 7, "Put" }, { "TRACE", 8, "Trace" }, { "PATCH", 9, "Patch" },
	};

	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		if (m[0] == map[i].m[0] && strcmp(m, map[i].m) == 0) {
			*name = map[i].name;
			return map[i].id;
		}
	*name = "Other";
	return 99;
}

/* One HTTP Activity (4002) event per request. */
static void audit_request(struct conn *c, const struct hreq *r)
{
	const char *aname = NULL;
	int aid = ocsf_activity(r->method, &aname);
	struct audit_w *w;
	struct audit_agent a = { 0 };
	struct ident_principal pr;
	char dst[64];
	const struct policy *p = r->policy ? r->policy : c->policy;

	if (r->allowed && !p->audit.allowed_requests)
		return;
	w = audit_begin(4002, aid, aname);
	if (c->agent_idx >= 0) {
		a.name = p->agents[c->agent_idx].name;
		a.cgroup = E->agents[c->agent_idx].cgroup_rel;
		enforcer_audit_principal(c->agent_idx, &a, &pr);
	}
	a.pid = c->pair.tgid;
	a.tid = c->pair.pid;
	a.uid = c->pair.uid;
	a.comm = c->pair.comm;
	a.cgroup_id = c->pair.cgroup_id;
	a.policy_hash = p->hash;
	a.policy_path = p->path;
	audit_w_agent(w, &a);
	addr_str(c->pair.orig_addr, dst, sizeof(dst));
	aobj_open(&w->top, "dst_endpoint");
	aobj_str(&w->top, "ip", dst);
	aobj_int(&w->top, "port", c->pair.orig_port);
	aobj_close(&w->top);
	aobj_open(&w->top, "http_request");
	aobj_str(&w->top, "http_method", r->method);
	aobj_open(&w->top, "url");
	aobj_str(&w->top, "path", r->path);
	aobj_close(&w->top);
	aobj_close(&w->top);
	if (r->status) {
		aobj_open(&w->top, "http_response");
		aobj_int(&w->top, "code", r->status);
		aobj_close(&w->top);
	}
	aobj_open(&w->top, "traffic");
	aobj_int(&w->top, "bytes_out", (long long)r->req_bytes);
	aobj_int(&w->top, "bytes_in", (long long)r->resp_bytes);
	aobj_close(&w->top);
	aobj_int(&w->top, "duration", (long long)(now_ms() - r->t0_ms));
	aobj_str(&w->um, "target", target(c) ? target(c)->name : "");
	aobj_bool(&w->um, "tls_intercepted", st(c)->agent_tls);
	if (r->retried)   /* resent once: the reused upstream connection closed first */
		aobj_bool(&w->um, "retried", true);
	if (r->user[0]) {
		aobj_open(&w->um, "user");
		aobj_str(&w->um, "sub", r->user);
		aobj_close(&w->um);
	}
	if (r->masked) {
		aobj_open(&w->um, "masked");
		aobj_int(&w->um, "hits", r->mask_hits);
		aobj_str(&w->um, "fields", r->mask_fields);
		aobj_close(&w->um);
	}
	if (!r->status && !r->local)   /* forwarded; the connection ended before its answer */
		aobj_str(&w->um, "answer", "none: the connection ended first");
	if (r->cred_hits)   /* the upstream sent the credential back; the agent got '*' */
		aobj_int(&w->um, "credential_starred", r->cred_hits);
	if (r->k8s_verb[0]) {
		aobj_open(&w->um, "kubernetes");
		aobj_str(&w->um, "verb", r->k8s_verb);
		aobj_str(&w->um, "resource", r->k8s_res);
		aobj_str(&w->um, "namespace", r->k8s_ns);
		aobj_close(&w->um);
	}
	audit_w_verdict(w, r->allowed, r->would_deny, r->rule[0] ? r->rule : NULL, r->reason);
	audit_commit(w);
}

/* ---- answers of our own ---------------------------------------------------- */

static const char *status_text(int status)
{
	switch (status) {
	case 400: return "Bad Request";
	case 403: return "Forbidden";
	case 502: return "Bad Gateway";
	case 504: return "Gateway Timeout";
	default: return "Error";
	}
}

/* "HTTP/1.1 403 Forbidden" with the JSON body of DESIGN.md §3. */
static int send_local(struct conn *c, const struct hreq *r)
{
	/* 502, 504: the request was allowed, the upstream failed: an agent
	 * must not read it as a policy decision */
	json_t *body = json_pack("{s:s, s:s, s:s}", "error",
				 r->status >= 500 ? "agentgate: upstream error" : "agentgate: denied", "rule", r->rule,
				 "reason", r->reason ? r->reason : "");
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	char head[256];
	size_t blen = text ? strlen(text) : 0;
	int n, err;

	json_decref(body);
	if (!text)
		return -ENOMEM;
	n = snprintf(head, sizeof(head), "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
		     "Content-Length: %zu\r\n%s\r\n", r->status, status_text(r->status), blen + 1,
		     r->close_after ? "Connection: close\r\n" : "");
	err = conn_send(c, SIDE_AGENT, head, (size_t)n);
	if (!err && !r->head)
		err = conn_send(c, SIDE_AGENT, text, blen);
	if (!err && !r->head)
		err = conn_send(c, SIDE_AGENT, "\n", 1);
	free(text);
	return err;
}

static struct hreq *q_front(struct http_state *s)
{
	return s->qlen ? &s->q[s->qhead] : NULL;
}

static struct hreq *q_push(struct http_state *s)
{
	struct hreq *r = &s->q[(s->qhead + s->qlen) % HTTP_PIPELINE_MAX];

	s->qlen++;
	memset(r, 0, sizeof(*r));
	return r;
}

static void q_pop(struct http_state *s)
{
	s->qhead = (s->qhead + 1) % HTTP_PIPELINE_MAX;
	s->qlen--;
}

/*
 * Requests still queued when nothing more will be answered (the agent reset
 * the connection, an error, an answer that closed it): each was judged, and
 * the allowed ones went upstream, where they may have run; each gets its
 * event, with no answer (review, stop 27: the trail had nothing of them).
 */
static void audit_unanswered(struct conn *c)
{
	struct http_state *s = st(c);
	struct hreq *r;

	while ((r = q_front(s))) {
		audit_request(c, r);
		q_pop(s);
	}
}

/*
 * Nothing more will be read from the agent once a request said close (or
 * was malformed): close after the queue is answered. An agent that
 * half-closed still gets its answers first.
 */
static void maybe_finish(struct conn *c)
{
	struct http_state *s = st(c);
	uint32_t unread = 0;

	if (s->qlen)
		return;
	/* In A_HEAD, input left after the agent's EOF is a whole request
	 * waiting for the upstream leg (connecting, its TLS handshake, a new
	 * connection after an idle close): a partial one ends in A_DONE. It
	 * is answered first (review, stop 34: it was dropped unanswered and
	 * unaudited). */
	(void)conn_in(c, SIDE_AGENT, &unread);
	if (s->astate == A_DONE || (s->astate == A_HEAD && conn_in_eof(c, SIDE_AGENT) && !unread))
		conn_finish(c);
}

/* Sends the local answers at the front of the queue (their turn has come). */
static int flush_local(struct conn *c)
{
	struct http_state *s = st(c);
	struct hreq *r;
	int err;

	while ((r = q_front(s)) && r->local) {
		if ((err = send_local(c, r)))
			return err;
		audit_request(c, r);
		q_pop(s);
	}
	maybe_finish(c);
	return 0;
}

static int process_agent(struct conn *c);

/* ---- the decision ---------------------------------------------------------- */

static void rule_desc(const struct policy_rule *r, char *out, size_t outlen)
{
	const char *l = policy_rule_label(r, out, outlen);

	if (l != out && outlen) {
		size_t n = strnlen(l, outlen - 1);

		memcpy(out, l, n);
		out[n] = 0;
	}
}

enum verdict { V_DENY = 0, V_REVIEW, V_ALLOW };

/*
 * A rule set's verdict on method + path: review when some rule's
 * review.http matches, else allow when some allow.http does; else deny.
 * Review wins over allow, whichever rule allows, as on kubernetes targets
 * and for SQL: allowing every /v1 path and reviewing invoice deletes holds them
 * (they were allowed, found by review). The deciding rule is described
 * into rule.
 */
static enum verdict judge_rules(const struct policy_rule *const *rules, size_t n, const char *method,
				size_t mlen, bool upgrade, const char *path, size_t plen, char *rule, size_t rulelen)
{
	for (size_t i = 0; i < n; i++)
		for (size_t k = 0; k < rules[i]->review.http.n; k++)
			if (http_review_match(rules[i]->review.http.v[k], method, mlen, upgrade, path, plen)) {
				rule_desc(rules[i], rule, rulelen);
				return V_REVIEW;
			}
	for (size_t i = 0; i < n; i++)
		for (size_t k = 0; k < rules[i]->allow.http.n; k++)
			if (http_rule_match(rules[i]->allow.http.v[k], method, mlen, upgrade, path, plen)) {
				rule_desc(rules[i], rule, rulelen);
				return V_ALLOW;
			}
	return V_DENY;
}

/*
 * Allowed when some rule the agent holds for the target allows method on
 * path and, when the agent presented a verified user token (delegation,
 * DESIGN.md §3), some rule the user holds does too. Review from either
 * sends the request to approval, which has not landed: until then a denial
 * that says so.
 */
static bool decide(struct conn *c, const struct ident_principal *user, const char *method, size_t mlen,
		   bool upgrade, const char *path, size_t plen, struct hreq *r)
{
	const struct policy_rule *rules[ENFORCER_MAX_RULES];
	size_t n = c->agent_idx >= 0 ? enforcer_rules_for(c->policy, c->agent_idx, c->target_idx, rules,
							  ENFORCER_MAX_RULES) : 0;
	enum verdict v, uv = V_ALLOW;
	char urule[96];

	if (c->agent_idx >= 0 && !enforcer_identity_ok(c->policy, c->agent_idx, r->why, sizeof(r->why))) {
		r->reason = r->why;
		return false;
	}
	if (n > ENFORCER_MAX_RULES) {
		r->reason = "too many rules for this target";
		return false;
	}
	v = judge_rules(rules, n, method, mlen, upgrade, path, plen, r->rule, sizeof(r->rule));
	if (user && v != V_DENY) {
		n = enforcer_user_rules_for(c->policy, c->agent_idx, user, c->target_idx, rules, ENFORCER_MAX_RULES);
		if (n > ENFORCER_MAX_RULES) {
			r->reason = "too many rules for this target";
			return false;
		}
		uv = judge_rules(rules, n, method, mlen, upgrade, path, plen, urule, sizeof(urule));
		if (uv == V_DENY) {
			r->reason = "the delegating user's roles do not allow this method and path";
			return false;
		}
	}
	if (v == V_ALLOW && uv == V_ALLOW)
		return true;
	if (v != V_DENY) {
		r->reason = "needs approval (review), and approvals are not available yet";
		return false;
	}
	r->reason = upgrade ? "no rule allows this upgrade (an \"UPGRADE /path\" rule is needed)"
			    : "no rule allows this method and path";
	return false;
}

/*
 * Kubernetes: the request as the apiserver's authorizer sees it (k8s.h),
 * judged by the kubernetes rules the agent (and a delegating user) hold.
 */
static bool decide_k8s(struct conn *c, const struct ident_principal *user, const char *method, bool upgrade,
		       bool apply_patch, const char *path, size_t plen, const struct http_target *tg,
		       struct hreq *r)
{
	const struct policy_rule *rules[ENFORCER_MAX_RULES], *which = NULL;
	struct k8s_request kr;
	enum k8s_verdict v, uv;
	size_t n;

	if (c->agent_idx >= 0 && !enforcer_identity_ok(c->policy, c->agent_idx, r->why, sizeof(r->why))) {
		r->reason = r->why;
		return false;
	}
	if (k8s_resolve(method, path, plen, (const char *)tg->query, tg->query ? tg->query_len : 0, upgrade,
			&kr) < 0) {
		r->reason = "the request cannot be attributed to a Kubernetes verb and resource";
		return false;
	}
	k8s_note_create(&kr, method, apply_patch);
	snprintf(r->k8s_verb, sizeof(r->k8s_verb), "%s", kr.verb);
	k8s_resource_string(&kr, r->k8s_res, sizeof(r->k8s_res));
	snprintf(r->k8s_ns, sizeof(r->k8s_ns), "%s", kr.namespace_);
	n = c->agent_idx >= 0 ? enforcer_rules_for(c->policy, c->agent_idx, c->target_idx, rules, ENFORCER_MAX_RULES) : 0;
	if (n > ENFORCER_MAX_RULES) {
		r->reason = "too many rules for this target";
		return false;
	}
	v = k8s_decide(rules, n, &kr, &which, r->why, sizeof(r->why));
	if (which)
		rule_desc(which, r->rule, sizeof(r->rule));
	if (user && v != K8S_DENY) {
		char uwhy[sizeof(r->why)];

		n = enforcer_user_rules_for(c->policy, c->agent_idx, user, c->target_idx, rules, ENFORCER_MAX_RULES);
		if (n > ENFORCER_MAX_RULES) {
			r->reason = "too many rules for this target";
			return false;
		}
		uv = k8s_decide(rules, n, &kr, NULL, uwhy, sizeof(uwhy));
		if (uv == K8S_DENY && kr.upgrade && strncmp(uwhy, K8S_STREAM_HINT, sizeof(K8S_STREAM_HINT) - 1) == 0)
			snprintf(r->why, sizeof(r->why), "the delegating user's roles: %s", uwhy);
		else if (uv == K8S_DENY)
			snprintf(r->why, sizeof(r->why), "the delegating user's roles do not allow %s %s%s", kr.verb,
				 r->k8s_res, kr.may_create ? " (and create, which it may do)" : "");
		v = k8s_verdict_both(v, uv);
	}
	if (v == K8S_ALLOW)
		return true;
	if (v == K8S_REVIEW)
		snprintf(r->why, sizeof(r->why), "needs approval (review), and approvals are not available yet");
	r->reason = r->why;
	return false;
}

/*
 * Kubernetes: a PATCH is server-side apply (which creates a missing object)
 * unless its one Content-Type is a JSON, merge or strategic-merge patch.
 * Anything else, a second Content-Type included, counts as apply: the
 * apiserver refuses types it does not know, so this only ever asks more.
 */
static bool k8s_apply_patch(const uint8_t *b, const struct http_head *h)
{
	static const char *const plain[] = { "application/json-patch+json", "application/merge-patch+json",
					     "application/strategic-merge-patch+json" };
	const struct http_field *ct = NULL;
	const char *v;
	size_t n;

	for (unsigned i = 0; i < h->nf; i++)
		if (http_field_is(b, &h->f[i], "content-type")) {
			if (ct)
				return true;
			ct = &h->f[i];
		}
	if (!ct)
		return true;
	v = (const char *)b + ct->value;
	for (n = 0; n < ct->value_len && v[n] != ';' && v[n] != ' ' && v[n] != '\t'; n++)
		;
	for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++)
		if (n == strlen(plain[i]) && strncasecmp(v, plain[i], n) == 0)
			return false;
	return true;
}

/*
 * Kubernetes: the apiserver takes a bearer token from a WebSocket
 * subprotocol "base64url.bearer.authorization.k8s.io.<token>" when the
 * request's other credentials fail. The agent's credentials never reach
 * the cluster; that one is refused rather than edited out of the list.
 */
static bool k8s_ws_token(const uint8_t *b, const struct http_head *h)
{
	static const char needle[] = "bearer.authorization.k8s.io";

	for (unsigned i = 0; i < h->nf; i++) {
		const struct http_field *f = &h->f[i];

		if (!http_field_is(b, f, "sec-websocket-protocol"))
			continue;
		for (size_t k = 0; k + sizeof(needle) - 1 <= f->value_len; k++)
			if (strncasecmp((const char *)b + f->value + k, needle, sizeof(needle) - 1) == 0)
				return true;
	}
	return false;
}

/*
 * Delegation: an agent that accepts user tokens presents one as
 * "Authorization: Bearer <token>" (consumed here, never forwarded).
 * Returns 0 with *has_user set when one was verified, 0 without one, or
 * -EPERM with why (the request is denied).
 */
static int user_token(struct conn *c, const uint8_t *b, const struct http_head *h, struct ident_principal *user,
		      bool *has_user, char *why, size_t whylen)
{
	*has_user = false;
	if (c->agent_idx < 0 || !c->policy->agents[c->agent_idx].accept_user_tokens)
		return 0;
	for (unsigned i = 0; i < h->nf; i++) {
		const struct http_field *f = &h->f[i];

		if (!http_field_is(b, f, "authorization"))
			continue;
		if (*has_user || f->value_len < 8 || strncasecmp((const char *)b + f->value, "Bearer ", 7) != 0) {
			snprintf(why, whylen, "the user token must be one \"Authorization: Bearer\" field");
			return -EPERM;
		}
		if (enforcer_user_verify(c->agent_idx, (const char *)b + f->value + 7, f->value_len - 7, user,
					 why, whylen) < 0)
			return -EPERM;
		*has_user = true;
	}
	return 0;
}

/* Fields never forwarded, whatever the agent says. */
static bool strip_field(const uint8_t *b, const struct http_field *f)
{
	static const char *const exact[] = {
		"host", "connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade",
		"content-length", "authorization", "cookie", "forwarded", "x-real-ip",
		"x-http-method-override", "x-http-method", "x-method-override", "http2-settings",
		/* path overrides: Symfony, Laravel and IIS URL Rewrite route on
		 * these, so the path judged would not be the one served */
		"x-original-url", "x-rewrite-url", "x-override-url", "x-original-uri",
	};
	static const char *const prefix[] = { "proxy-", "x-forwarded-", "impersonate-", "x-remote-" };
	const char *name = (const char *)b + f->name;

	for (size_t i = 0; i < sizeof(exact) / sizeof(exact[0]); i++)
		if (http_field_is(b, f, exact[i]))
			return true;
	for (size_t i = 0; i < sizeof(prefix) / sizeof(prefix[0]); i++) {
		size_t pl = strlen(prefix[i]);

		if (f->name_len >= pl && strncasecmp(name, prefix[i], pl) == 0)
			return true;
	}
	return false;
}

struct obuf {
	char *b;
	size_t n, cap;
	bool over;
};

static void put(struct obuf *o, const void *p, size_t n)
{
	if (o->over || n > o->cap - o->n) {
		o->over = true;
		return;
	}
	memcpy(o->b + o->n, p, n);
	o->n += n;
}

static void puts_(struct obuf *o, const char *s)
{
	put(o, s, strlen(s));
}

static void put_content_length(struct obuf *o, unsigned long long v)
{
	char d[20], *p = u64_dec(d + sizeof(d), v);

	puts_(o, "Content-Length: ");
	put(o, p, (size_t)(d + sizeof(d) - p));
	puts_(o, "\r\n");
}

/* Host: the agent's, checked against the target; 0 or a reason. */
static const char *check_host(struct conn *c, const uint8_t *b, const struct http_head *h,
			      const struct http_target *tg, char *host, size_t hostcap)
{
	const struct policy_target *t = target(c);
	uint16_t port, aport;
	char ahost[256];
	const char *names[3];

	host[0] = '\0';
	if (h->host >= 0) {
		const struct http_field *f = &h->f[h->host];

		if (http_authority_parse(b + f->value, f->value_len, host, hostcap, &port) < 0)
			return "malformed Host";
	}
	if (tg->form == HTTP_FORM_ABSOLUTE) {
		if (http_authority_parse(tg->authority, tg->authority_len, ahost, sizeof(ahost), &aport) < 0)
			return "malformed authority";
		if (host[0] && strcmp(ahost, host) != 0)
			return "absolute-form authority and Host disagree";
		if (!host[0])
			snprintf(host, hostcap, "%s", ahost);
	}
	if (!host[0])
		return NULL;   /* HTTP/1.0 without Host: supplied from the target */
	/* A target with names accepts only those; an IP target without a
	 * server_name accepts any name (recorded in audit with the request). */
	names[0] = t->addr.kind == ADDR_HOST ? t->addr.host : NULL;
	names[1] = t->upstream.server_name;
	names[2] = t->upstream.has_address && t->upstream.address.kind == ADDR_HOST ? t->upstream.address.host : NULL;
	if (!names[0] && !names[1] && !names[2])
		return NULL;
	for (int i = 0; i < 3; i++)
		if (names[i] && strcasecmp(names[i], host) == 0)
			return NULL;
	return "Host is not the target's name";
}

/*
 * Is this an upgrade we relay? WebSocket; on kubernetes targets also
 * SPDY/3.1 (kubectl exec, attach, port-forward), whose verb k8s.h makes
 * create. h2c and anything else: refused (*h2c set).
 */
static bool is_upgrade(const uint8_t *b, const struct http_head *h, bool k8s, bool *h2c)
{
	const struct http_field *f;
	const char *v;

	*h2c = false;
	if (h->upgrade < 0 || !(h->conn & HTTP_CONN_UPGRADE))
		return false;
	f = &h->f[h->upgrade];
	v = (const char *)b + f->value;
	if (f->value_len == 9 && strncasecmp(v, "websocket", 9) == 0)
		return true;
	if (k8s && f->value_len == 8 && strncasecmp(v, "SPDY/3.1", 8) == 0)
		return true;
	*h2c = true;
	return false;
}

/*
 * What a 101 must carry to be the upgrade the request asked for: its
 * protocol and, for WebSocket, Sec-WebSocket-Accept = base64(SHA-1(key +
 * GUID)) (RFC 6455 4.2.2). A bare 101 from an endpoint whose status the
 * agent can steer would otherwise turn the connection into a tunnel no
 * rule judges (review, stop 27).
 */
static void upgrade_expect(const uint8_t *b, const struct http_head *h, struct hreq *r)
{
	static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
	const struct http_field *f = &h->f[h->upgrade];
	unsigned char md[EVP_MAX_MD_SIZE], in[64 + sizeof(guid)];
	unsigned int mdlen = 0;

	snprintf(r->upgrade_proto, sizeof(r->upgrade_proto), "%.*s", (int)f->value_len,
		 (const char *)b + f->value);
	r->ws_accept[0] = '\0';
	if (strcasecmp(r->upgrade_proto, "websocket") != 0)
		return;
	for (unsigned i = 0; i < h->nf; i++) {
		const struct http_field *k = &h->f[i];

		if (!http_field_is(b, k, "sec-websocket-key") || k->value_len > 64)
			continue;
		memcpy(in, b + k->value, k->value_len);
		memcpy(in + k->value_len, guid, sizeof(guid) - 1);
		if (EVP_Digest(in, k->value_len + sizeof(guid) - 1, md, &mdlen, EVP_sha1(), NULL) == 1 &&
		    mdlen == 20)
			EVP_EncodeBlock((unsigned char *)r->ws_accept, md, 20);   /* 28 chars and NUL */
		return;
	}
	snprintf(r->ws_accept, sizeof(r->ws_accept), "-");   /* no key: no 101 can match */
}

static bool upgrade_answered(const uint8_t *b, const struct http_head *h, const struct hreq *r, bool inj)
{
	const struct http_field *f;
	bool accept_ok = !r->ws_accept[0];

	if (h->upgrade < 0 || !(h->conn & HTTP_CONN_UPGRADE))
		return false;
	/* an extension none was offered for (forward_head() drops the offer
	 * when a credential is injected): compressed frames could carry it */
	for (unsigned i = 0; inj && i < h->nf; i++)
		if (http_field_is(b, &h->f[i], "sec-websocket-extensions"))
			return false;
	f = &h->f[h->upgrade];
	if (f->value_len != strlen(r->upgrade_proto) ||
	    strncasecmp((const char *)b + f->value, r->upgrade_proto, f->value_len) != 0)
		return false;
	for (unsigned i = 0; i < h->nf && !accept_ok; i++) {
		const struct http_field *k = &h->f[i];

		accept_ok = http_field_is(b, k, "sec-websocket-accept") && k->value_len == strlen(r->ws_accept) &&
			    memcmp(b + k->value, r->ws_accept, k->value_len) == 0;
	}
	return accept_ok;
}

/*
 * Kubernetes: the enforcer authenticates upstream as itself (the target's
 * credential); Impersonate-User/-Group make the apiserver's RBAC judge the
 * agent's principal too. Returns bytes written or -EACCES (a principal the
 * apiserver reserves, like system:*), -ENOBUFS.
 */
static int impersonation(struct conn *c, char *buf, size_t cap)
{
	struct ident_principal pr;
	const char *groups[IDENT_MAX_GROUPS];
	const char *user;
	int n;

	if (c->agent_idx < 0)
		return -EACCES;
	enforcer_principal(c->agent_idx, &pr);
	user = pr.sub[0] ? pr.sub : c->policy->agents[c->agent_idx].name;
	for (size_t i = 0; i < pr.ngroups; i++)
		groups[i] = pr.groups[i];
	n = k8s_impersonation_headers(user, groups, pr.ngroups, buf, cap);
	if (n == -ENOSPC)
		return -ENOBUFS;
	return n < 0 ? -EACCES : n;
}

/*
 * upstream: {bearer: agent_token}: the agent's own verified token, copied
 * per request (it is refreshed by the identity source) and wiped. -EPERM
 * when the agent holds none (the request fails closed).
 */
static int agent_bearer(struct conn *c, struct obuf *o)
{
	char tok[HTTP_CRED_MAX];
	int n = c->agent_idx >= 0 ? enforcer_agent_token(c->agent_idx, tok, sizeof(tok)) : -ENOENT;

	if (n < 0 || !http_value_ok((const uint8_t *)tok, (size_t)n)) {
		OPENSSL_cleanse(tok, sizeof(tok));
		return -EPERM;
	}
	puts_(o, "Authorization: Bearer ");
	put(o, tok, (size_t)n);
	puts_(o, "\r\n");
	OPENSSL_cleanse(tok, sizeof(tok));
	return o->over ? -ENOBUFS : 0;
}

/*
 * The credential lines just added to a forwarded head ("Name: value\r\n"
 * each): their values join what every answer is searched for. The
 * scheme of an Authorization value is not part of the secret; of Basic,
 * the decoded password is searched for too (a page may show it).
 * -ENOMEM: the request is not sent (an answer could not be checked).
 */
static int remember_secrets(struct conn *c, const char *p, size_t n)
{
	struct scrub *z = &st(c)->scrub;
	const char *end = p + n;

	while (p < end) {
		const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2), *v;
		size_t vl;

		if (!eol || !(v = memchr(p, ':', (size_t)(eol - p))))
			return 0;
		for (v++; v < eol && *v == ' '; v++)
			;
		vl = (size_t)(eol - v);
		if (vl > 7 && strncasecmp(v, "Bearer ", 7) == 0) {
			v += 7;
			vl -= 7;
		} else if (vl > 6 && strncasecmp(v, "Basic ", 6) == 0) {
			unsigned char dec[HTTP_CRED_MAX];
			int dl;

			v += 6;
			vl -= 6;
			dl = vl < sizeof(dec) * 3 / 4 ? EVP_DecodeBlock(dec, (const unsigned char *)v, (int)vl) : -1;
			if (dl > 0) {
				const unsigned char *colon = memchr(dec, ':', (size_t)dl);
				size_t pl;

				/* EVP_DecodeBlock counts the padding as zero bytes */
				while (dl > 0 && dec[dl - 1] == 0)
					dl--;
				pl = colon ? (size_t)(dec + dl - colon - 1) : 0;
				if (colon && pl && scrub_add(z, colon + 1, pl)) {
					OPENSSL_cleanse(dec, sizeof(dec));
					return -ENOMEM;
				}
			}
			OPENSSL_cleanse(dec, sizeof(dec));
		} else if (strncasecmp(p, "authorization:", 14) == 0 || strncasecmp(p, "proxy-authorization:", 20) == 0) {
			/* another scheme (token, Bot, SSWS, ApiKey): an answer may
			 * quote the credential without it */
			const char *sp = memchr(v, ' ', vl);

			if (sp && scrub_add(z, (const uint8_t *)sp + 1, (size_t)(v + vl - sp - 1)))
				return -ENOMEM;
		}
		if (scrub_add(z, (const uint8_t *)v, vl))
			return -ENOMEM;
		p = eol + 2;
	}
	return 0;
}

/* The target puts a credential on forwarded requests. */
static bool injects(const struct conn *c)
{
	const struct policy_upstream *u = &c->policy->targets[c->target_idx].upstream;

	return u->bearer_token_file || u->basic_auth_file || (u->header_name && u->header_value_file) ||
	       u->bearer_agent_token;
}

/* Where forwarded heads are built: per thread, never per request. */
static __thread char head_buf[HTTP_HEAD_MAX + HTTP_CRED_MAX + 1024];

/*
 * Appends the target's credential (and the agent's token when the target
 * says bearer: agent_token) and the blank line to the head in o, queues it
 * upstream and wipes o. 0, or -errno: -EPERM, -EINVAL, -ENOBUFS when
 * nothing was sent (no credential, or too large).
 */
static int send_head(struct conn *c, struct obuf *o)
{
	const char *why;
	size_t n0 = o->n;
	int cl, err;

	cl = o->over || o->cap - o->n < 2 ? -ENOBUFS
		: http_upstream_cred(c->policy, c->target_idx, o->b + o->n, o->cap - o->n - 2, &why);
	if (cl < 0) {
		OPENSSL_cleanse(o->b, o->n);
		return cl;
	}
	o->n += (size_t)cl;
	if (target(c)->upstream.bearer_agent_token && (err = agent_bearer(c, o)) < 0) {
		OPENSSL_cleanse(o->b, o->n);
		return err;
	}
	if (!o->over && o->n > n0 && (err = remember_secrets(c, o->b + n0, o->n - n0))) {
		OPENSSL_cleanse(o->b, o->n);
		return err;
	}
	puts_(o, "\r\n");
	if (o->over) {
		OPENSSL_cleanse(o->b, o->n);
		return -ENOBUFS;
	}
	/* recorded without the credential: the head up to it, then its end */
	err = conn_send_secret(c, SIDE_UP, o->b, o->n);
	if (!err) {
		conn_record(c, SIDE_UP, o->b, n0);
		conn_record(c, SIDE_UP, "\r\n", 2);
	}
	OPENSSL_cleanse(o->b, o->n);   /* it held the credential */
	return err;
}

/*
 * Keeps a copy of the head of r, the one forwarded request in flight, as
 * forwarded but without its credential, so that it can be sent again on a
 * new connection (can_resend()). The buffer stays with the connection.
 */
static void keep_for_resend(struct http_state *s, const struct hreq *r, const char *b, size_t n)
{
	s->resend_req = NULL;
	if (n > s->resend_cap) {
		size_t cap = n < 2048 ? 2048 : n;
		uint8_t *nb = malloc(cap);

		if (!nb)
			return;   /* then it is not resent: a 502 if the race happens */
		if (s->resend)
			OPENSSL_cleanse(s->resend, s->resend_cap);
		free(s->resend);
		s->resend = nb;
		s->resend_cap = cap;
	}
	memcpy(s->resend, b, n);
	s->resend_len = n;
	s->resend_req = r;
}

/* f's name is name as CGI, PHP-FPM and WSGI read names: '_' for '-', any
 * case ("X_Api_Key" is X-Api-Key to them). */
static bool cgi_name_is(const uint8_t *b, const struct http_field *f, const char *name)
{
	size_t n = strlen(name);

	if (f->name_len != n)
		return false;
	for (size_t i = 0; i < n; i++) {
		int x = b[f->name + i], y = (unsigned char)name[i];

		x = x == '_' ? '-' : tolower(x);
		y = y == '_' ? '-' : tolower(y);
		if (x != y)
			return false;
	}
	return true;
}

/* The forwarded head, re-serialised from the parse. resend_r: the request
 * may be sent again (keep a copy), else NULL. */
static int forward_head(struct conn *c, const uint8_t *b, const struct http_head *h, const char *path,
			size_t plen, const struct http_target *tg, const char *host, bool upgrade, bool masked,
			const struct hreq *resend_r)
{
	struct obuf o = { head_buf, 0, sizeof(head_buf), false };
	const char *cred_name = target(c)->upstream.header_name;
	size_t npaths = 0;
	bool json_paths = masked && st(c)->mask && mask_rules_paths(st(c)->mask, &npaths) && npaths;
	bool inj = injects(c);

	put(&o, b + h->method, h->method_len);
	puts_(&o, " ");
	put(&o, path, plen);
	if (tg->query) {
		puts_(&o, "?");
		put(&o, tg->query, tg->query_len);
	}
	puts_(&o, " HTTP/1.1\r\nHost: ");
	/* the agent's name as checked (check_host()), without its port; an
	 * IPv6 literal in its brackets again: "Host: ::1" is malformed (found
	 * by review, stop 59) */
	if (host[0] && strchr(host, ':')) {
		puts_(&o, "[");
		puts_(&o, host);
		puts_(&o, "]");
	} else {
		puts_(&o, host[0] ? host : st(c)->host);
	}
	puts_(&o, "\r\n");
	for (unsigned i = 0; i < h->nf; i++) {
		const struct http_field *f = &h->f[i];

		if (strip_field(b, f) || http_conn_names(b, h, f) ||
		    (st(c)->k8s && k8s_header_is_identity((const char *)b + f->name, f->name_len)))
			continue;
		/* the field our credential goes in: the agent's own never goes
		 * with it (it would come first, and many servers read the first),
		 * nor its '_' spelling, one name to CGI servers (review, stop 43) */
		if (cred_name && cgi_name_is(b, f, cred_name))
			continue;
		/* masked: a part of a body cannot be masked, and we decode only
		 * zlib codings. Conditionals go too: with a content-hash ETag
		 * (Express, many frameworks), If-None-Match answers "is the
		 * unmasked body this one?" with a 304 */
		/* an answer is searched for the injected credential as sent:
		 * a compressed one could not be (identity is asked below) */
		/* Request-Range: Range's older name, which Apache httpd still
		 * serves ranges for (review, stop 34) */
		if (!masked && inj && (http_field_is(b, f, "accept-encoding") || http_field_is(b, f, "range") ||
				       http_field_is(b, f, "request-range") || http_field_is(b, f, "if-range")))
			continue;
		/* the tunnel's frames are searched for the credential: none
		 * may be compressed (permessage-deflate), so none is offered */
		if (upgrade && inj && http_field_is(b, f, "sec-websocket-extensions"))
			continue;
		if (masked && (http_field_is(b, f, "range") || http_field_is(b, f, "request-range") ||
			       http_field_is(b, f, "if-range") ||
			       http_field_is(b, f, "accept-encoding") || http_field_is(b, f, "if-none-match") ||
			       http_field_is(b, f, "if-match") || http_field_is(b, f, "if-modified-since") ||
			       http_field_is(b, f, "if-unmodified-since")))
			continue;
		/* JSON paths only reach JSON: an upstream that negotiates must not
		 * answer YAML, XML or a table where the paths see nothing */
		if (json_paths && http_field_is(b, f, "accept"))
			continue;
		put(&o, b + f->name, f->name_len);
		puts_(&o, ": ");
		put(&o, b + f->value, f->value_len);
		puts_(&o, "\r\n");
	}
	if (target(c)->upstream.forwarded_for) {
		/* the agent's own X-Forwarded-* were stripped above: this one is
		 * the address its connection came from, as the enforcer saw it */
		char ip[64];

		addr_str(c->client_addr, ip, sizeof(ip));
		puts_(&o, "X-Forwarded-For: ");
		puts_(&o, ip);
		puts_(&o, "\r\n");
	}
	if (masked)
		puts_(&o, "Accept-Encoding: gzip, deflate\r\n");
	else if (inj)
		puts_(&o, "Accept-Encoding: identity\r\n");
	if (json_paths)
		puts_(&o, "Accept: application/json\r\n");
	if (st(c)->k8s) {
		int n = impersonation(c, o.b + o.n, o.cap - o.n);

		if (n < 0)
			return n;
		o.n += (size_t)n;
	}
	if (h->body == HTTP_BODY_CHUNKED) {
		puts_(&o, "Transfer-Encoding: chunked\r\n");
	} else if (h->body == HTTP_BODY_LENGTH) {
		put_content_length(&o, (unsigned long long)h->content_length);
	}
	if (upgrade) {
		const struct http_field *f = &h->f[h->upgrade];

		puts_(&o, "Connection: upgrade\r\nUpgrade: ");
		put(&o, b + f->value, f->value_len);
		puts_(&o, "\r\n");
	}
	if (resend_r && !o.over)
		keep_for_resend(st(c), resend_r, o.b, o.n);
	return send_head(c, &o);
}

/*
 * The masks in force for this request: the union of the masks of every
 * rule the agent holds for the target, and of the delegating user's
 * (DESIGN.md §3: masks are the union). Compiled once per connection and
 * again only when that rule set changes. NULL with *err set on failure
 * (the request is refused: never unmasked by accident).
 */
static void old_masks_gc(struct http_state *s)
{
	unsigned k = 0;

	for (unsigned i = 0; i < s->nold_masks; i++) {
		bool used = false;

		for (unsigned j = 0; j < s->qlen && !used; j++)
			used = s->q[(s->qhead + j) % HTTP_PIPELINE_MAX].mask == s->old_masks[i];
		if (used)
			s->old_masks[k++] = s->old_masks[i];
		else
			mask_free(s->old_masks[i]);
	}
	s->nold_masks = k;
}

static struct mask_rules *route_mask(struct conn *c, const struct ident_principal *user, const char **err)
{
	struct http_state *s = st(c);
	const struct policy_rule *rules[2 * ENFORCER_MAX_RULES];
	const struct policy_mask *masks[2 * ENFORCER_MAX_RULES];
	size_t n = 0, k = 0;
	char why[160];

	*err = NULL;
	if (c->agent_idx < 0)
		return NULL;
	n = enforcer_rules_for(c->policy, c->agent_idx, c->target_idx, rules, ENFORCER_MAX_RULES);
	if (n <= ENFORCER_MAX_RULES && user) {
		size_t u = enforcer_user_rules_for(c->policy, c->agent_idx, user, c->target_idx, rules + n, ENFORCER_MAX_RULES);

		n = u > ENFORCER_MAX_RULES ? 2 * ENFORCER_MAX_RULES + 1 : n + u;
	}
	if (n > 2 * ENFORCER_MAX_RULES) {
		*err = "too many rules for this target";
		return NULL;
	}
	if (s->mask_valid && n == s->nmask_of && !memcmp(rules, s->mask_of, n * sizeof(rules[0])))
		return s->mask;
	if (!s->qlen)
		while (s->nold_masks)
			mask_free(s->old_masks[--s->nold_masks]);
	for (size_t i = 0; i < n; i++)
		if (rules[i]->mask.present)
			masks[k++] = &rules[i]->mask;
	if (s->mask && s->qlen) {
		/* answers still to come may have been judged under it; the
		 * kept ones no queued request uses any more go now (an agent
		 * that always has a request out never reaches qlen 0, and a
		 * reload changes the mask at any request) */
		old_masks_gc(s);
		if (s->nold_masks == HTTP_PIPELINE_MAX) {
			*err = "too many mask changes among pipelined requests";
			return NULL;
		}
		s->old_masks[s->nold_masks++] = s->mask;
	} else {
		mask_free(s->mask);
	}
	s->mask = NULL;
	s->mask_valid = false;
	if (k) {
		s->mask = mask_compile(masks, k, why, sizeof(why));
		if (!s->mask) {
			log_err("http: target '%s': mask: %s", target(c)->name, why);
			*err = "the route's mask could not be compiled";
			return NULL;
		}
	}
	memcpy(s->mask_of, rules, n * sizeof(rules[0]));
	s->nmask_of = n;
	s->mask_valid = true;
	return s->mask;
}

/*
 * A body that Symfony, Laravel, Rails and ASP.NET read a method override
 * from (_method=DELETE in a form): application/x-www-form-urlencoded, or
 * no media type at all (Rack takes a POST without one, or with an empty
 * Content-Type, for a form, and Rails' MethodOverride reads it: review,
 * stop 43). Such a body is scanned as it streams (agent_body()); one that
 * names an override is never completed upstream.
 */
static bool form_body(const uint8_t *b, const struct http_head *h)
{
	static const char ct[] = "application/x-www-form-urlencoded";
	bool typed = false;

	for (unsigned i = 0; i < h->nf; i++) {
		const struct http_field *f = &h->f[i];
		const char *v = (const char *)b + f->value;
		size_t n = f->value_len;

		if (!http_field_is(b, f, "content-type"))
			continue;
		while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
			n--;
		while (n && (*v == ' ' || *v == '\t'))
			v++, n--;
		if (n >= sizeof(ct) - 1 && strncasecmp(v, ct, sizeof(ct) - 1) == 0)
			return true;
		if (n && *v != ';')
			typed = true;
	}
	return !typed;
}

/* The request's Content-Type value (the first one), or NULL. */
static const char *content_type(const uint8_t *b, const struct http_head *h, size_t *len)
{
	for (unsigned i = 0; i < h->nf; i++)
		if (http_field_is(b, &h->f[i], "content-type")) {
			*len = h->f[i].value_len;
			return (const char *)b + h->f[i].value;
		}
	return NULL;
}

/*
 * A JSON body as Laravel tells one (Content-Type holds "/json" or
 * "+json"): it takes its request input, "_method" included, from it, and
 * Express's method-override is often given a getter that reads req.body,
 * which express.json() fills (found by review, stop 59).
 */
static bool json_body(const uint8_t *b, const struct http_head *h)
{
	size_t n;
	const char *v = content_type(b, h, &n);

	return v && (memmem(v, n, "/json", 5) || memmem(v, n, "+json", 5) || memmem(v, n, "/JSON", 5) ||
		     memmem(v, n, "+JSON", 5));
}

/* A multipart body (Rack, PHP, ASP.NET Core read a part named "_method"
 * as they read the form field: review, stop 59). */
static bool multipart_body(const uint8_t *b, const struct http_head *h)
{
	size_t n;
	const char *v = content_type(b, h, &n);

	while (v && n && (*v == ' ' || *v == '\t'))
		v++, n--;
	return v && n >= 10 && strncasecmp(v, "multipart/", 10) == 0;
}

/* Readies s->amulti for this request's multipart body: 0, -ENOMEM, or
 * -EINVAL when it has no boundary the scan can follow (a server finds no
 * part without one either). */
static int multipart_prepare(struct http_state *s, const uint8_t *b, const struct http_head *h)
{
	size_t n = 0;
	const char *v = content_type(b, h, &n);

	if (!s->amulti && !(s->amulti = malloc(sizeof(*s->amulti))))
		return -ENOMEM;
	return v && http_multipart_scan_init(s->amulti, v, n) == 0 ? 0 : -EINVAL;
}

/* The request is answered here, not forwarded: returns the new fwd. */
static bool refuse(struct hreq *v, int status, const char *reason)
{
	v->allowed = false;
	v->status = status;
	v->reason = reason;
	v->close_after = true;
	return false;
}

/* The request's body has a Content-Encoding other than identity. */
static bool body_encoded(const uint8_t *b, const struct http_head *h)
{
	for (unsigned i = 0; i < h->nf; i++) {
		const struct http_field *f = &h->f[i];

		if (http_field_is(b, f, "content-encoding") && f->value_len &&
		    !(f->value_len == 8 && strncasecmp((const char *)b + f->value, "identity", 8) == 0))
			return true;
	}
	return false;
}

/* A form body's piece names a method override: the request is cut off
 * before that piece reaches the upstream, which never gets the rest (the
 * connection closes), so it never runs. */
static bool form_override(struct http_state *s, const uint8_t *p, size_t n)
{
	const char *kind = s->aform && http_form_scan(&s->aform_scan, p, n) ? "a form" :
			   s->ajson && http_json_scan(&s->ajson_scan, p, n) ? "a JSON" :
			   s->amulti_on && http_multipart_scan(s->amulti, p, n) ? "a multipart" : NULL;

	if (!kind)
		return false;
	ag_log(LOG_LVL_INFO, "http: a method override (\"_method\" or a twin, or a multipart part head over "
	       "%d bytes) in %s body: the request is cut off and the connection closed", HTTP_MP_HEAD_MAX, kind);
	return true;
}

/* Sets the agent side up to read (and forward or drop) r's body. */
static void expect_body(struct http_state *s, struct hreq *r, const struct http_head *h, bool fwd)
{
	s->astate = A_BODY;
	s->abody_fwd = fwd;
	s->abody_req = r;
	s->abody_chunked = h->body == HTTP_BODY_CHUNKED;
	s->aform = false;
	s->ajson = false;
	s->amulti_on = false;
	s->aremain = h->content_length;
	http_chunked_init(&s->ach);
}

/* An allowed request on a masked route: its response is masked; an
 * upgrade there is refused (what follows could not be masked). */
static bool masking(struct conn *c, const struct ident_principal *user, bool upgrade, struct hreq *v)
{
	const char *err;
	struct mask_rules *m = route_mask(c, user, &err);

	if (err) {
		v->allowed = false;
		v->status = 403;
		v->reason = err;
		return false;
	}
	v->masked = m && !mask_is_empty(m);
	v->mask = v->masked ? m : NULL;
	if (v->masked)
		c->costly = true;   /* from here on, answers' time is charged to the agent (conn.h) */
	if (v->masked && upgrade) {
		v->allowed = false;
		v->status = 403;
		v->reason = "an upgrade on a masked route is not allowed";
		return false;
	}
	/* A watch answers with a stream of {"type":..., "object":{...}}
	 * events: paths written for get and list do not reach into "object"
	 * (a one-event stream is one JSON value, and passed unmasked: review,
	 * stop 25), and a longer stream cannot be masked as one body. */
	if (v->masked && st(c)->k8s && strcmp(v->k8s_verb, "watch") == 0) {
		v->allowed = false;
		v->status = 403;
		v->reason = "a watch on a masked route is not allowed (its events cannot be masked); use list";
		return false;
	}
	return true;
}

/*
 * The target of a request refused as malformed, for its audit event: the
 * path only, as an allowed request's event has it. The query (an api_key,
 * a token) and an absolute-form target's authority (user:password@host)
 * are left out; a target that is not a path is named as such.
 */
static void raw_path_for_audit(char *out, size_t cap, const char *t, size_t len)
{
	size_t n = 0;

	if (!len || t[0] != '/') {
		snprintf(out, cap, "(not a path)");
		return;
	}
	while (n < len && n < 200 && t[n] != '?' && t[n] != '#')
		n++;
	snprintf(out, cap, "%.*s", (int)n, t);
}

/*
 * One request head from the agent: the verdict in v (not yet queued).
 * Returns true when it is to be forwarded.
 */
static bool judge(struct conn *c, const uint8_t *b, const struct http_head *h, char *path, size_t pathcap,
		  struct http_target *tg, char *host, size_t hostcap, bool *upgrade, struct hreq *v)
{
	bool connect = h->method_len == 7 && memcmp(b + h->method, "CONNECT", 7) == 0, h2c, has_user;
	struct ident_principal *user = &st(c)->user;
	const char *bad;

	memset(v, 0, sizeof(*v));
	memcpy(v->method, b + h->method, h->method_len);
	v->head = h->method_len == 4 && memcmp(b + h->method, "HEAD", 4) == 0;
	v->t0_ms = now_ms();
	v->req_bytes = h->head_len;
	/* HTTP/1.0 keep-alive is not offered: the answer says Connection: close */
	v->v10 = h->version == 10;
	v->close_after = v->v10 || (h->conn & HTTP_CONN_CLOSE);
	*upgrade = false;
	if (http_target_canon(b + h->target, h->target_len, connect, path, pathcap, tg) < 0) {
		raw_path_for_audit(v->path, sizeof(v->path), (const char *)b + h->target, h->target_len);
		v->status = 400;
		v->reason = tg->error;
		v->close_after = true;
		return false;
	}
	str_copy(v->path, sizeof(v->path), path);
	if ((bad = check_host(c, b, h, tg, host, hostcap))) {
		v->status = 400;
		v->reason = bad;
		v->close_after = true;
		return false;
	}
	*upgrade = is_upgrade(b, h, st(c)->k8s, &h2c);
	if (connect || h2c || tg->form == HTTP_FORM_ASTERISK) {
		v->status = 403;
		v->reason = connect ? "CONNECT is not allowed (a tunnel cannot be inspected)"
			  : h2c ? "only WebSocket upgrades can be allowed (h2c and others cannot be inspected)"
				: "asterisk-form (OPTIONS *) is not allowed";
		v->close_after = true;
		return false;
	}
	if (user_token(c, b, h, user, &has_user, v->why, sizeof(v->why)) < 0) {
		v->status = 403;
		v->reason = v->why;
		return false;
	}
	if (has_user)
		str_copy(v->user, sizeof(v->user), user->sub);
	if (st(c)->k8s && k8s_ws_token(b, h)) {
		v->status = 403;
		v->reason = "a bearer token in Sec-WebSocket-Protocol is refused (agentgate sends the target's "
			    "credential)";
		return false;
	}
	if (st(c)->k8s ? decide_k8s(c, has_user ? user : NULL, v->method, *upgrade,
				    strcmp(v->method, "PATCH") == 0 && k8s_apply_patch(b, h), path,
				    tg->path_len, tg, v)
		       : decide(c, has_user ? user : NULL, v->method, h->method_len, *upgrade, path, tg->path_len, v)) {
		v->allowed = true;
		return masking(c, has_user ? user : NULL, *upgrade, v);
	}
	if (c->policy->mode == POLICY_OBSERVE) {
		v->would_deny = true;   /* observe: recorded, forwarded (masking is never weakened) */
		v->allowed = true;
		return masking(c, has_user ? user : NULL, *upgrade, v);
	}
	v->status = 403;
	return false;
}

/*
 * Whether an incomplete head is worth parsing again: the parsers judge whole
 * lines, so a head that was incomplete at 'seen' bytes can only have changed
 * its verdict once a line ended in the bytes since (or it reached its bound,
 * or the input ended). Parsing each time from the start made a head
 * dribbled a byte per read quadratic: a 16 KiB request head cost 158 ms of
 * a worker, a 64 KiB response head 2.5 s (review, stop 29).
 */
static bool head_due(const uint8_t *in, size_t len, uint32_t seen, size_t max, bool eof)
{
	if (!seen || seen >= len)
		return true;   /* a first look, or not the bytes looked at (nothing new: as before) */
	return eof || len >= max || memchr(in + seen, '\n', len - seen) != NULL;
}

/*
 * The upstream closed, or a request failed, and the leg is dialled again
 * (conn_redial_upstream()). On failure to even start, up_failed: what waits
 * gets a 502.
 */
static void set_host(struct conn *c);

static int up_redial(struct conn *c)
{
	struct http_state *s = st(c);
	int err;

	s->up_idle = false;
	s->up_connected = s->up_ready = s->up_tls = false;
	s->up_served = 0;
	s->ustate = U_HEAD;
	s->uhead_seen = 0;
	if ((err = conn_redial_upstream(c))) {
		log_debug("http: upstream %s: dialling again: %s", c->upstream_desc, strerror(-err));
		snprintf(s->up_why, sizeof(s->up_why), "the upstream is not reachable");
		s->up_failed = true;
	}
	return err;
}

static bool forwarded_in_flight(const struct http_state *s)
{
	for (unsigned i = 0; i < s->qlen; i++)
		if (!s->q[(s->qhead + i) % HTTP_PIPELINE_MAX].local)
			return true;
	return false;
}

/*
 * One request head from the agent: 1 handled (the caller consumes the
 * head), 0 wait (allowed, and the upstream leg is not ready yet), -errno.
 */
/*
 * Methods whose body has no defined meaning (RFC 9110 9.3): many servers
 * never read one, and take it for the next request. DELETE's is read by
 * the Kubernetes API server (DeleteOptions), so only there it may have one.
 */
static bool bodyless_method(const uint8_t *b, const struct http_head *h, bool k8s)
{
	const char *m = (const char *)b + h->method;
	size_t n = h->method_len;

	return (n == 3 && !memcmp(m, "GET", 3)) || (n == 4 && !memcmp(m, "HEAD", 4)) ||
	       (n == 5 && !memcmp(m, "TRACE", 5)) || (n == 7 && !memcmp(m, "OPTIONS", 7)) ||
	       (n == 7 && !memcmp(m, "CONNECT", 7)) || (!k8s && n == 6 && !memcmp(m, "DELETE", 6));
}

/* WebDAV's COPY and MOVE write to the path their Destination field names:
 * a second path no rule was asked about. */
static bool names_second_path(const uint8_t *b, const struct http_head *h)
{
	for (unsigned i = 0; i < h->nf; i++)
		if (http_field_is(b, &h->f[i], "destination"))
			return true;
	return false;
}

static int on_request(struct conn *c, const uint8_t *b, const struct http_head *h)
{
	struct http_state *s = st(c);
	char path[HTTP_HEAD_MAX + 2], host[256];
	bool upgrade, fwd, has_body, resendable;
	struct http_target tg;
	struct hreq v, *r;
	int err;

	has_body = h->body == HTTP_BODY_CHUNKED || (h->body == HTTP_BODY_LENGTH && h->content_length);
	/* After a reload the connection takes the running policy at its next
	 * request, whatever is in flight: an agent that always keeps one
	 * request out would otherwise stay under the old rules for good.
	 * Requests already judged keep their mask (hreq.mask, route_mask()
	 * keeps the ones replaced) and their policy for audit (hreq.policy).
	 * When the target's upstream settings changed too, the upstream leg
	 * is dialled again under the new ones if nothing is in flight on it;
	 * otherwise the request is refused (503) and the connection closes:
	 * the agent goes on with a new one. Judging it under the old rules
	 * kept them for as long as the agent kept the connection open
	 * (review, stop 28); so did a target revoked until the sweep. */
	const struct policy *live = __atomic_load_n(&E->policy, __ATOMIC_ACQUIRE);
	bool stale = false;

	if (c->policy != live && !enforcer_adopt_live(c, live, false)) {
		if (!s->qlen && !c->connecting && enforcer_adopt_live(c, live, true)) {
			set_host(c);
			up_redial(c);
		} else
			stale = true;
	}
	fwd = judge(c, b, h, path, sizeof(path), &tg, host, sizeof(host), &upgrade, &v);
	if (stale)
		fwd = refuse(&v, 503, "the policy was reloaded and this connection cannot go on under it; "
			     "send the request again on a new connection");
	/* The upstream closed an idle keep-alive connection: nothing of this
	 * request was sent yet, so any method may go on a new one. */
	if (fwd && s->up_idle && !s->up_failed)
		up_redial(c);
	if (fwd && !s->up_ready && !s->up_failed)
		return 0;
	if (fwd && s->up_failed)
		fwd = refuse(&v, 502, s->up_why[0] ? s->up_why : "the upstream is not reachable");
	/* A body on a method whose body has no meaning: an upstream that
	 * ignores it would read it as its next request (a denied one riding in
	 * an allowed GET). Refused, and the connection closes unread. */
	if (fwd && has_body && bodyless_method(b, h, s->k8s))
		fwd = refuse(&v, 400, s->k8s ? "a GET, HEAD, OPTIONS, TRACE or CONNECT request with a body" :
				       "a GET, HEAD, DELETE, OPTIONS, TRACE or CONNECT request with a body");
	/* A multipart body is scanned by its part heads (form_override()),
	 * which needs its boundary. */
	bool multi = fwd && has_body && !s->k8s && multipart_body(b, h);
	if (multi && (err = multipart_prepare(s, b, h))) {
		if (err != -EINVAL)
			return err;
		multi = fwd = refuse(&v, 400, "a multipart body without a boundary (of at most 100 bytes) its "
				     "method override check can read");
	}
	/* A form body the scan would read compressed: an upstream that
	 * inflates request bodies (ASP.NET Core's request decompression, with
	 * its method override's form field) reads what the scan did not.
	 * (A compressed JSON body is not refused: clients send them, and the
	 * frameworks that read _method from JSON do not inflate.) */
	if (fwd && has_body && (form_body(b, h) || multipart_body(b, h)) && body_encoded(b, h))
		fwd = refuse(&v, 415, "a form or multipart body (or one without a media type) with a "
			     "Content-Encoding: its method override check reads the body as sent");
	if (fwd && names_second_path(b, h))
		fwd = refuse(&v, 400, "a Destination field (WebDAV COPY or MOVE): the path it names is not judged");
	/* Only the one request in flight, of a safe method and without a body
	 * (http_req_resendable()), may be sent again should a reused
	 * connection close under it. */
	resendable = fwd && http_req_resendable(b, h) && !forwarded_in_flight(s);
	if (fwd && !resendable)
		s->resend_req = NULL;
	r = q_push(s);
	*r = v;
	r->policy = c->policy;
	if (v.reason == v.why)
		r->reason = r->why;   /* it pointed into the copy */
	if (fwd) {
		r->upgrade = upgrade;
		if (upgrade)
			upgrade_expect(b, h, r);
		err = forward_head(c, b, h, path, tg.path_len, &tg, host, upgrade, r->masked,
				   resendable ? r : NULL);
		if (err == -EPERM) {
			fwd = false;
			r->allowed = false;
			r->status = 502;
			r->reason = "the agent holds no verified token to send upstream (bearer: agent_token)";
			r->close_after = true;
		} else if (err == -EACCES) {
			fwd = false;
			r->allowed = false;
			r->status = 403;
			r->reason = "the agent's principal cannot be impersonated (a reserved system: name?)";
		} else if (err == -EINVAL || err == -ENOBUFS) {
			const char *why = NULL;

			/* no credential to inject: fail closed and say why */
			http_upstream_cred(c->policy, c->target_idx, path, 0, &why);
			fwd = false;
			r->allowed = false;
			r->status = 502;
			r->reason = why ? why : "the forwarded request is too large";
			r->close_after = true;
		} else if (err) {
			return err;
		}
	}
	if (!fwd) {
		r->local = true;
		/* A denied body is read and dropped so the connection can go on;
		 * with Expect: 100-continue the agent may never send it, so the
		 * answer closes instead, before any body byte is read. */
		if (has_body && h->expect_continue)
			r->close_after = true;
		if (r->close_after)
			s->astate = A_DONE;
		else if (has_body)
			expect_body(s, r, h, false);
		return 1;
	}
	if (has_body) {
		expect_body(s, r, h, true);
		if ((s->aform = form_body(b, h)))
			http_form_scan_init(&s->aform_scan);
		/* the apiserver has no method override */
		if ((s->ajson = !s->k8s && json_body(b, h)))
			http_json_scan_init(&s->ajson_scan);
		s->amulti_on = multi;   /* readied above (multipart_prepare()) */
	} else if (upgrade)
		s->astate = A_WAIT_UPGRADE;
	else if (r->close_after)
		s->astate = A_DONE;
	return 1;
}

/* Agent body bytes: forwarded (re-encoded when chunked) or dropped. Returns
 * bytes consumed, or -errno. */
static int agent_body(struct conn *c, const uint8_t *in, size_t len)
{
	struct http_state *s = st(c);
	struct hreq *r = s->abody_req;
	size_t off = 0;
	int err;

	if (!s->abody_chunked) {
		size_t take = len < s->aremain ? len : (size_t)s->aremain;

		if (s->abody_fwd && form_override(s, in, take))
			return -EACCES;
		if (s->abody_fwd && (err = conn_send(c, SIDE_UP, in, take)))
			return err;
		s->aremain -= take;
		off = take;
	} else {
		while (off < len && !s->ach.done) {
			size_t used, doff, dlen;
			char hdr[24];

			if (http_chunked_feed(&s->ach, in + off, len - off, &used, &doff, &dlen) < 0)
				return -EPROTO;   /* the head was forwarded: the stream cannot be saved */
			if (dlen && s->abody_fwd) {
				size_t hl = http_chunk_header(dlen, hdr);

				if (form_override(s, in + off + doff, dlen))
					return -EACCES;
				if ((err = conn_send(c, SIDE_UP, hdr, hl)) ||
				    (err = conn_send(c, SIDE_UP, in + off + doff, dlen)) ||
				    (err = conn_send(c, SIDE_UP, HTTP_CHUNK_TAIL, 2)))
					return err;
			}
			if (!used)
				break;
			off += used;
		}
		if (s->ach.done && s->abody_fwd && (err = conn_send(c, SIDE_UP, HTTP_CHUNK_LAST, 5)))
			return err;
	}
	if (r)
		r->req_bytes += off;
	if (off && r && r == q_front(s) && s->resp_since_ms)
		s->resp_since_ms = now_ms();   /* the agent is still sending it: the upstream may wait */
	if ((!s->abody_chunked && !s->aremain) || (s->abody_chunked && s->ach.done)) {
		s->abody_req = NULL;
		s->astate = r && r->close_after ? A_DONE : A_HEAD;
		if (r && r->upgrade)
			s->astate = A_WAIT_UPGRADE;
	}
	return (int)off;
}

static uint32_t resp_timeout_ms(struct conn *c)
{
	const struct policy_target *t = target(c);

	return t && t->upstream.response_timeout_ms ? t->upstream.response_timeout_ms
						   : POLICY_HTTP_RESPONSE_TIMEOUT_MS;
}

/*
 * The connection's two clocks share conn.c's one deadline (while the
 * upstream is being dialled, the deadline is the dial's; the clocks are set
 * again once the leg is up, when the module is next called):
 * - a partial request head must be whole HTTP_HEAD_TIMEOUT_MS after its
 *   first byte (counted from the first byte, so trickling does not extend
 *   it); then the connection is closed (a reset, audited);
 * - the request at the front of the queue, allowed and sent upstream, must
 *   get the head of its answer within the target's response_timeout. The
 *   clock starts when that answer is awaited (the request is at the front
 *   and the upstream between answers) and starts again when the agent sends
 *   more of that request's body or the upstream an interim 1xx. It stops at
 *   the answer's head: a body may then be silent for as long as it likes (a
 *   Kubernetes watch). When it runs out the agent gets a 504 of ours
 *   (http_on_deadline()).
 * - the upstream TLS handshake must end within the same response_timeout
 *   (a server that accepts and never answers the ClientHello; the dial
 *   itself is on conn.c's connect deadline): then the connection is closed
 *   (a reset, audited).
 * Called at the end of every module entry point, and when a head starts or
 * ends.
 */
static void arm_clocks(struct conn *c)
{
	struct http_state *s = st(c);
	struct hreq *r;
	uint64_t head = 0, resp = 0, hs = 0, dl;
	const char *why = NULL;

	if (!s || !c->streaming)
		return;   /* before stream mode: conn.c's decision deadline */
	r = q_front(s);
	if (s->up_tls && !s->up_ready && !s->up_failed && !c->connecting) {
		if (!s->hs_since_ms)
			s->hs_since_ms = now_ms();
		hs = s->hs_since_ms + resp_timeout_ms(c);
	} else {
		s->hs_since_ms = 0;
	}
	if (s->ustate == U_HEAD && r && !r->local && !s->up_failed) {
		if (!s->resp_since_ms)
			s->resp_since_ms = now_ms();
		resp = s->resp_since_ms + resp_timeout_ms(c);
	} else {
		s->resp_since_ms = 0;
	}
	if (s->head_since_ms)
		head = s->head_since_ms + HTTP_HEAD_TIMEOUT_MS;
	if (c->connecting)
		return;
	dl = head;
	if (resp && (!dl || resp < dl)) {
		dl = resp;
		why = "the upstream did not begin its answer in time";
	}
	if (hs && (!dl || hs < dl)) {
		dl = hs;
		why = "the upstream TLS handshake did not complete in time";
	}
	c->deadline_ms = dl;
	c->deadline_why = why;
}

static void head_timer(struct conn *c, bool partial)
{
	struct http_state *s = st(c);

	if (!partial)
		s->head_since_ms = 0;
	else if (!s->head_since_ms)
		s->head_since_ms = now_ms();
	arm_clocks(c);
}

static int process_agent(struct conn *c)
{
	struct http_state *s = st(c);
	int err;

	for (;;) {
		uint32_t len;
		const uint8_t *in = conn_in(c, SIDE_AGENT, &len);
		struct http_head h;
		int r;

		switch (s->astate) {
		case A_DONE:
			conn_in_consume(c, SIDE_AGENT, len);
			return flush_local(c);
		case A_TUNNEL:
			if (len && (err = conn_send(c, SIDE_UP, in, len)))
				return err;
			conn_in_consume(c, SIDE_AGENT, len);
			if (conn_in_eof(c, SIDE_AGENT))
				conn_shutdown(c, SIDE_UP);
			return 0;
		case A_WAIT_UPGRADE:
			return flush_local(c);
		case A_BODY:
			if (!len) {
				if (conn_in_eof(c, SIDE_AGENT))
					return -EPIPE;   /* body cut short */
				return flush_local(c);
			}
			r = agent_body(c, in, len);
			if (r < 0)
				return r;
			conn_in_consume(c, SIDE_AGENT, (uint32_t)r);
			if ((err = flush_local(c)))
				return err;
			continue;
		case A_HEAD:
			if (!len) {
				head_timer(c, false);
				return flush_local(c);
			}
			if (s->qlen == HTTP_PIPELINE_MAX) {
				c->in_waits[SIDE_AGENT] = true;
				return flush_local(c);   /* resumes when an answer leaves */
			}
			r = head_due(in, len, s->ahead_seen, HTTP_HEAD_MAX, conn_in_eof(c, SIDE_AGENT)) ?
			    http_req_parse(in, len, &h) : HTTP_NEED_MORE;
			s->ahead_seen = r == HTTP_NEED_MORE ? (uint32_t)len : 0;
			head_timer(c, r == HTTP_NEED_MORE && !conn_in_eof(c, SIDE_AGENT));
			if (r == HTTP_NEED_MORE) {
				if (conn_in_eof(c, SIDE_AGENT))
					s->astate = A_DONE;   /* a partial request, then EOF */
				return flush_local(c);
			}
			if (r == HTTP_MALFORMED) {
				struct hreq *q = q_push(s);

				snprintf(q->method, sizeof(q->method), "-");
				q->local = true;
				q->status = 400;
				q->reason = h.error;
				q->close_after = true;
				q->t0_ms = now_ms();
				q->req_bytes = len;
				s->astate = A_DONE;
				continue;
			}
			r = on_request(c, in, &h);
			if (r < 0)
				return r;
			if (r == 0) {
				/* a full buffer meanwhile is not an oversized
				 * request (review, stop 36: a 2 MB POST on a new
				 * connection was reset, EMSGSIZE, while the leg
				 * was still being dialled) */
				c->in_waits[SIDE_AGENT] = true;
				return flush_local(c);   /* waits for the upstream leg */
			}
			conn_in_consume(c, SIDE_AGENT, h.head_len);
			if ((err = flush_local(c)))
				return err;
			continue;
		}
		return 0;
	}
}

/* ---- responses --------------------------------------------------------------- */

#define NAME(s) { s, sizeof(s) - 1 }

/* A field a server derives from the body (vendors' digests, checksums and
 * lengths: x-goog-hash, x-amz-checksum-sha256, x-ms-content-crc64,
 * x-goog-stored-content-length, ...): on a masked answer, one would let
 * the agent confirm a guess of the unmasked body, or tell its length.
 * Matched by parts of the name, so the ones not listed here go too. */
static bool body_derived(const uint8_t *n, size_t len)
{
	static const struct { const char *n; size_t len; } parts[] = {
		NAME("md5"), NAME("sha"), NAME("crc"), NAME("checksum"), NAME("hash"), NAME("digest"),
		NAME("etag"), NAME("length"), NAME("range"),
	};
	char low[128];

	if (len >= sizeof(low))
		return true;   /* no field of ours is this long: not worth the doubt */
	for (size_t i = 0; i < len; i++)
		low[i] = (char)(n[i] >= 'A' && n[i] <= 'Z' ? n[i] + 32 : n[i]);
	/* One pass, each position against the parts that start with its
	 * letter (a strstr per part scanned every field of every masked
	 * answer nine times). */
	for (size_t i = 0; i < len; i++) {
		switch (low[i]) {
		case 'c': case 'd': case 'e': case 'h': case 'l': case 'm': case 'r': case 's':
			break;
		default:
			continue;
		}
		for (size_t k = 0; k < sizeof(parts) / sizeof(parts[0]); k++)
			if (parts[k].n[0] == low[i] && len - i >= parts[k].len &&
			    memcmp(low + i, parts[k].n, parts[k].len) == 0)
				return true;
	}
	return false;
}

static bool has_content_range(const uint8_t *b, const struct http_head *h)
{
	for (unsigned i = 0; i < h->nf; i++)
		if (http_field_is(b, &h->f[i], "content-range"))
			return true;
	return false;
}

static bool strip_resp_field(const uint8_t *b, const struct http_field *f, bool upgrade, bool masked)
{
	static const struct { const char *n; size_t len; } hop[] = {
		NAME("connection"), NAME("keep-alive"), NAME("te"), NAME("trailer"),
		NAME("transfer-encoding"), NAME("proxy-connection"), NAME("content-length"),
		/* a session the upstream opens for the credential we injected
		 * is that credential in another form; the agent's Cookie is
		 * never forwarded, so through us it serves nothing (review,
		 * stop 27) */
		NAME("set-cookie"), NAME("set-cookie2"),
	}, body[] = {
		/* a masked body is another body: its coding, validators and ranges go */
		NAME("content-encoding"), NAME("etag"), NAME("accept-ranges"), NAME("content-range"),
		NAME("content-md5"), NAME("digest"), NAME("repr-digest"), NAME("content-digest"),
	};

	/* the length first: most fields have none of these lengths */
	for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
		if (f->name_len == hop[i].len && http_name_eq(b + f->name, hop[i].n, hop[i].len))
			return true;
	for (size_t i = 0; masked && i < sizeof(body) / sizeof(body[0]); i++)
		if (f->name_len == body[i].len && http_name_eq(b + f->name, body[i].n, body[i].len))
			return true;
	if (masked && body_derived(b + f->name, f->name_len))
		return true;
	return !upgrade && http_field_is(b, f, "upgrade");
}

/* The standard reason phrase of a status, "" when none: a masked answer's
 * own phrase is application text the detectors never saw. */
static const char *std_reason(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 101: return "Switching Protocols";
	case 103: return "Early Hints";
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 206: return "Partial Content";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 303: return "See Other";
	case 304: return "Not Modified";
	case 307: return "Temporary Redirect";
	case 308: return "Permanent Redirect";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 409: return "Conflict";
	case 410: return "Gone";
	case 412: return "Precondition Failed";
	case 413: return "Content Too Large";
	case 415: return "Unsupported Media Type";
	case 422: return "Unprocessable Content";
	case 429: return "Too Many Requests";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	default: return "";
	}
}

/*
 * The response head to the agent, re-serialised with our framing. mlen >= 0:
 * a masked body of that length follows (identity-coded).
 */
static int send_resp_head(struct conn *c, const uint8_t *b, const struct http_head *h, struct hreq *r,
			  bool close, long long mlen)
{
	static __thread char buf[HTTP_RESP_HEAD_MAX + 256];
	struct obuf o = { buf, 0, sizeof(buf), false };
	const uint8_t *eol = memchr(b, '\r', h->head_len);
	bool upgrade = h->status == 101;
	struct mask_rules *m = r->mask;
	bool scan = r->masked && m && mask_has_detectors(m);
	int e = 0;

	if (r->masked && !upgrade) {
		/* the version and code as they came; the phrase our own */
		put(&o, b, 12);             /* "HTTP/1.x NNN" (validated) */
		puts_(&o, " ");
		puts_(&o, std_reason(h->status));
		puts_(&o, "\r\n");
	} else {
		put(&o, b, (size_t)(eol - b));   /* the status line, validated */
		puts_(&o, "\r\n");
	}
	for (unsigned i = 0; i < h->nf; i++) {
		const struct http_field *f = &h->f[i];

		/* r->masked: also a HEAD's or a 304's validators, which hash
		 * the body the agent would not get unmasked */
		if (strip_resp_field(b, f, upgrade, mlen >= 0 || r->masked) || http_conn_names(b, h, f))
			continue;
		if (scan && f->name_len >= mask_min_match(m) &&
		    mask_value_maybe(m, (const char *)b + f->name, f->name_len) &&
		    mask_value_matches(m, (const char *)b + f->name, f->name_len)) {
			/* a name is data too where an upstream makes names of it
			 * (x-amz-meta-<key>, a field per account): masked in place
			 * as a JSON member name is ('*' is a token byte, and the
			 * rest are the name's own), on a 1xx too (found by review) */
			size_t n;
			unsigned hits = 0;

			if (mask_value_bound(f->name_len) > o.cap - o.n ||
			    (n = mask_value(m, (const char *)b + f->name, f->name_len, o.b + o.n, o.cap - o.n,
					    &hits)) == (size_t)-1) {
				o.over = true;
			} else {
				o.n += n;
				r->mask_hits += hits;
			}
		} else {
			put(&o, b + f->name, f->name_len);
		}
		puts_(&o, ": ");
		if (r->masked && m && !upgrade && http_mask_json_field(m, b + f->value, f->value_len)) {
			/* a field holding JSON (Dropbox-API-Result, X-Pagination):
			 * passed whole on a route with only JSON paths, and its
			 * escapes hid what it held from the detectors (found by
			 * review) */
			puts_(&o, MASK_TOKEN);
			r->mask_hits++;
		} else if (scan && f->value_len >= mask_min_match(m) &&
		    mask_value_maybe(m, (const char *)b + f->value, f->value_len) &&
		    mask_value_matches(m, (const char *)b + f->value, f->value_len)) {
			/* the detectors see the head too (an email in Location, a
			 * card in an X- field): the value goes masked */
			size_t cap = mask_value_bound(f->value_len), n;
			unsigned hits = 0;

			if (cap > o.cap - o.n || (n = mask_value(m, (const char *)b + f->value,
								  f->value_len, o.b + o.n, o.cap - o.n,
								  &hits)) == (size_t)-1 ||
			    (e = mask_escapes_hide(m, o.b + o.n, n)) < 0) {
				o.over = true;   /* (no memory to look: nothing goes) */
			} else if (e > 0) {
				puts_(&o, MASK_TOKEN);   /* over what was masked in place */
				r->mask_hits++;
			} else {
				o.n += n;
				r->mask_hits += hits;
			}
		} else if (scan && (e = mask_escapes_hide(m, (const char *)b + f->value, f->value_len)) != 0) {
			/* its escapes or character references spell what the
			 * detectors mask ('"ada\\u0040example.com"', a Link's
			 * title="ada&#64;..."), as a body's would (http_mask_body()):
			 * whole (found by review) */
			if (e < 0) {
				o.over = true;
			} else {
				puts_(&o, MASK_TOKEN);
				r->mask_hits++;
			}
		} else {
			size_t at = o.n;

			put(&o, b + f->value, f->value_len);
			/* a field quoting the credential cut short (the first n
			 * bytes of a request): its value's ends are checked too */
			if (st(c)->scrub.n && !o.over)
				r->cred_hits += scrub_cut(&st(c)->scrub, (uint8_t *)o.b + at, o.n - at);
		}
		puts_(&o, "\r\n");
	}
	if (mlen >= 0) {
		put_content_length(&o, (unsigned long long)mlen);
	} else if (h->status >= 200) {
		if (h->body == HTTP_BODY_CHUNKED && !r->v10) {
			/* (an HTTP/1.0 agent cannot read chunked: it gets the data
			 * as it is, delimited by the close that follows) */
			puts_(&o, "Transfer-Encoding: chunked\r\n");
		} else if (h->body == HTTP_BODY_LENGTH || (h->body == HTTP_BODY_NONE && r->head && !r->masked)) {
			/* a HEAD answer keeps the length of what GET would send;
			 * on a masked route that is the unmasked length (how long
			 * a hidden value is), so it goes */
			for (unsigned i = 0; i < h->nf; i++)
				if (http_field_is(b, &h->f[i], "content-length")) {
					put_content_length(&o, (unsigned long long)h->content_length);
					break;
				}
		}
	}
	if (upgrade)
		puts_(&o, "Connection: upgrade\r\n");
	else if (close && h->status >= 200)
		puts_(&o, "Connection: close\r\n");
	puts_(&o, "\r\n");
	if (o.over)
		return -EMSGSIZE;
	if (st(c)->scrub.n)   /* in any field or the reason phrase (a Location, an echo) */
		r->cred_hits += scrub_buf(&st(c)->scrub, (uint8_t *)o.b, o.n);
	r->resp_bytes += o.n;
	return conn_send(c, SIDE_AGENT, o.b, o.n);
}

static int response_done(struct conn *c);

/* A Content-Encoding other than identity. */
static bool coded(const uint8_t *b, const struct http_head *h)
{
	for (unsigned i = 0; i < h->nf; i++) {
		const struct http_field *f = &h->f[i];

		if (http_field_is(b, f, "content-encoding") &&
		    !(f->value_len == 8 && strncasecmp((const char *)b + f->value, "identity", 8) == 0))
			return true;
	}
	return false;
}

/*
 * Masked answers are held whole (up to MASK_JSON_MAX each) until masked; an
 * agent that opens many connections to a masked route and asks for big
 * answers could make the enforcer hold gigabytes (one agent, 250
 * connections: 3 GB). All connections together hold at most MASK_HELD_MAX,
 * and those of one agent at most MASK_HELD_AGENT_MAX, so one agent cannot
 * take it all from the others: past either, a masked answer is refused
 * (502, the connection closes) until others are done, and read by their
 * agents (held_queued()).
 */
#define MASK_HELD_MAX (512u << 20)
#define MASK_HELD_AGENT_MAX (MASK_HELD_MAX / 4)
#define MASK_HELD_FULL \
	"the enforcer holds too many masked answers at once (512 MiB in all, 128 MiB per agent): try again"
_Static_assert(MASK_HELD_MAX == 512u << 20 && MASK_HELD_AGENT_MAX == 128u << 20,
	       "MASK_HELD_FULL names the bounds");
static size_t masked_held, agent_held[AG_MAX_AGENTS];

size_t http_masked_held(void)
{
	return __atomic_load_n(&masked_held, __ATOMIC_RELAXED);
}

static size_t *agent_count(const struct conn *c)
{
	return c->agent_idx >= 0 && c->agent_idx < AG_MAX_AGENTS ? &agent_held[c->agent_idx] : NULL;
}

static void held_add(struct conn *c, size_t n)
{
	size_t *a = agent_count(c);

	__atomic_fetch_add(&masked_held, n, __ATOMIC_RELAXED);
	if (a)
		__atomic_fetch_add(a, n, __ATOMIC_RELAXED);
}

static void held_sub(struct conn *c, size_t n)
{
	size_t *a = agent_count(c);

	__atomic_fetch_sub(&masked_held, n, __ATOMIC_RELAXED);
	if (a)
		__atomic_fetch_sub(a, n, __ATOMIC_RELAXED);
}

static bool held_take(struct conn *c, size_t n)
{
	struct http_state *s = st(c);
	size_t *a = agent_count(c);
	size_t before = __atomic_fetch_add(&masked_held, n, __ATOMIC_RELAXED);

	if (before + n > MASK_HELD_MAX) {
		__atomic_fetch_sub(&masked_held, n, __ATOMIC_RELAXED);
		return false;
	}
	if (a && __atomic_fetch_add(a, n, __ATOMIC_RELAXED) + n > MASK_HELD_AGENT_MAX) {
		__atomic_fetch_sub(a, n, __ATOMIC_RELAXED);
		__atomic_fetch_sub(&masked_held, n, __ATOMIC_RELAXED);
		return false;
	}
	s->held += n;
	return true;
}

static void held_put(struct conn *c)
{
	struct http_state *s = st(c);

	if (s->held)
		held_sub(c, s->held);
	s->held = 0;
}

/*
 * A masked answer the agent does not read stays in its output queue (up
 * to CONN_OUT_MAX): it still counts. After an answer is sent, what is
 * queued for the agent counts, taken past the bounds if need be (the
 * answer is out; the next one to be collected is refused instead); it is
 * given back as it drains: the module is called when the queue falls under
 * CONN_OUT_HIGH (conn.c reads nothing above it) and when it is empty
 * (want_drained).
 */
static void held_queued(struct conn *c)
{
	struct http_state *s = st(c);
	size_t q = conn_out_pending(c, SIDE_AGENT);

	if (q > s->held_q)
		held_add(c, q - s->held_q);
	else if (q < s->held_q)
		held_sub(c, s->held_q - q);
	s->held_q = q;
	c->want_drained = q != 0;
}

/* Gives back what drained. */
static void held_sync(struct conn *c)
{
	struct http_state *s = st(c);

	if (s && s->held_q && conn_out_pending(c, SIDE_AGENT) < s->held_q)
		held_queued(c);
}

/* A masked response: keep a copy of its head; the body is collected. */
static int collect_start(struct conn *c, const uint8_t *in, const struct http_head *h)
{
	struct http_state *s = st(c);

	if (h->body == HTTP_BODY_LENGTH && h->content_length > MASK_JSON_MAX)
		return -E2BIG;
	held_put(c);
	if (!held_take(c, h->head_len + (h->body == HTTP_BODY_LENGTH ? (size_t)h->content_length : 0)))
		return -EBUSY;
	free(s->mhead);
	if (!(s->mhead = malloc(h->head_len)))
		return -ENOMEM;
	memcpy(s->mhead, in, h->head_len);
	s->mh = *h;
	s->mlen = 0;
	s->collecting = true;
	return 0;
}

/* Mask a whole response body (head: the upstream's head, h parsed from it)
 * and send the answer; a body that cannot be masked is a 502 of ours,
 * never the unmasked bytes. */
static int mask_answer(struct conn *c, const uint8_t *head, const struct http_head *h, const uint8_t *body,
		       size_t blen)
{
	struct http_state *s = st(c);
	struct hreq *r = q_front(s);
	struct mask_report rep;
	const char *why = NULL, *coding = NULL;
	size_t clen = 0, outlen = 0;
	char *out = NULL;
	int err;

	for (unsigned i = 0; i < h->nf; i++) {
		if (http_field_is(head, &h->f[i], "content-encoding")) {
			coding = (const char *)head + h->f[i].value;
			clen = h->f[i].value_len;
		}
		/* the masker reads UTF-8: a label under which the agent's client
		 * reads the same bytes as other text (UTF-7's "+AEA-" is an '@')
		 * would pass what it holds (found by review) */
		if (blen && http_field_is(head, &h->f[i], "content-type") &&
		    !http_mask_charset_ok((const char *)head + h->f[i].value, h->f[i].value_len))
			why = "the response's charset is not one the masker reads (UTF-8, US-ASCII, ISO-8859-*, "
			      "Windows-125*)";
	}
	if (why) {
		err = -EINVAL;
	} else if (!r->mask) {   /* never for a masked request: fail closed all the same */
		err = -EINVAL;
		why = "the route's mask is missing";
	} else {
		err = http_mask_body(r->mask, body, blen, coding, clen, &out, &outlen, &rep, &why);
	}
	/* It was reserved at the size it came in (compressed, maybe; a mask
	 * can also make it longer): the masked answer must fit the bounds
	 * before it is queued, where it goes on counting (held_queued()). */
	if (!err && outlen > s->held && !held_take(c, outlen - s->held)) {
		free(out);
		err = -EBUSY;
		why = MASK_HELD_FULL;
	}
	if (err) {
		r->local = true;
		r->allowed = false;
		r->status = 502;
		r->reason = why;
		r->close_after = true;
		return send_local(c, r);
	}
	r->mask_hits = rep.hits;
	str_copy(r->mask_fields, sizeof(r->mask_fields), rep.fields);
	if (s->scrub.n)   /* the masked body is identity-coded: searched whole */
		r->cred_hits += scrub_buf(&s->scrub, (uint8_t *)out, outlen) +
				scrub_cut(&s->scrub, (uint8_t *)out, outlen);
	err = send_resp_head(c, head, h, r, r->close_after || s->up_close, (long long)outlen);
	if (!err)   /* straight to the socket, head and body in one write, when it takes them */
		err = conn_send_now(c, SIDE_AGENT, out, outlen);
	r->resp_bytes += outlen;
	free(out);
	return err;
}

/* The collected body is whole: masked and answered. */
static int collect_finish(struct conn *c)
{
	struct http_state *s = st(c);
	int err;

	s->collecting = false;
	err = mask_answer(c, s->mhead, &s->mh, s->mbody, s->mlen);
	held_put(c);
	held_queued(c);
	s->mlen = 0;
	if (s->mcap > (256u << 10)) {   /* a big body's buffer does not stay with the connection */
		free(s->mbody);
		s->mbody = NULL;
		s->mcap = 0;
	}
	return err;
}

/* U_HELD: the held response, once whole, is masked from the input buffer. */
static int held_body(struct conn *c, const uint8_t *in, uint32_t len, bool eof)
{
	struct http_state *s = st(c);
	size_t need = s->mh.head_len + (size_t)s->mh.content_length;
	int err;

	if (len < need) {
		if (eof)
			return -EPIPE;   /* cut short: never taken for whole */
		conn_in_expect(c, SIDE_UP, (uint32_t)need);   /* no wakeup before it is whole */
		return 0;
	}
	err = mask_answer(c, in, &s->mh, in + s->mh.head_len, (size_t)s->mh.content_length);
	held_put(c);
	held_queued(c);
	conn_in_consume(c, SIDE_UP, (uint32_t)need);
	s->ustate = U_HEAD;
	if (err)
		return err;
	err = response_done(c);
	return err ? err : 1;
}

#define MASK_TOO_BIG "the response body is larger than the masking bound (8 MiB) and cannot be masked"
_Static_assert(MASK_JSON_MAX == 8u << 20, "MASK_TOO_BIG names the bound");

/*
 * The response at the front cannot be passed on (a masked body over the
 * bound): the agent gets a 502 of ours instead, never the unmasked bytes,
 * and the connection ends after it (requests pipelined behind it stay
 * unanswered, as after any Connection: close). What the upstream still
 * sends is dropped.
 */
static int refuse_response(struct conn *c, const char *why)
{
	struct http_state *s = st(c);
	struct hreq *r = q_front(s);
	int err;

	s->collecting = false;
	held_put(c);
	s->mlen = 0;
	if (s->mcap > (256u << 10)) {
		free(s->mbody);
		s->mbody = NULL;
		s->mcap = 0;
	}
	s->ustate = U_DISCARD;
	s->astate = A_DONE;
	if (!r)
		return -EPROTO;
	r->allowed = false;
	r->status = 502;
	r->reason = why;
	r->close_after = true;
	if ((err = send_local(c, r)))
		return err;
	audit_request(c, r);
	q_pop(s);
	audit_unanswered(c);
	return flush_local(c);
}

/* The forwarded request at the front has its whole answer. */
static int response_done(struct conn *c)
{
	struct http_state *s = st(c);
	struct hreq *r = q_front(s);
	bool close = r->close_after || s->up_close;
	int err;

	/* The last answer awaited: it goes out before its audit event is
	 * built, which then costs the agent no time. (With more requests in
	 * flight their answers follow, and one write serves them all.) */
	if (s->qlen == 1)
		conn_flush(c, SIDE_AGENT);
	audit_request(c, r);
	q_pop(s);
	s->ustate = U_HEAD;
	s->up_served++;
	if (close) {
		/* Nothing pipelined after it is answered: answering some and not
		 * others would shift answers onto the wrong requests. The agent
		 * sees the connection close and retries. */
		s->astate = A_DONE;
		audit_unanswered(c);
	}
	if ((err = flush_local(c)))
		return err;
	return process_agent(c);   /* a full queue, or a held request, may go on */
}

static int body_send(struct conn *c, const uint8_t *p, size_t n, bool chunked);

/*
 * Streamed body bytes on a connection that injected a credential: searched
 * with what was kept back before them, then sent but for the end that could
 * be the start of an occurrence not whole yet (scrub_keep(); body_done
 * sends it). Starring keeps lengths, so the framing is unchanged. The copy
 * is bounded by what one read brings plus scrub_hold().
 */
static int scrub_out(struct conn *c, const uint8_t *p, size_t n, bool chunked, bool tunnel)
{
	struct http_state *s = st(c);
	size_t total = s->sc_len + n, out;
	unsigned *hits = tunnel ? &s->tunnel_hits : &q_front(s)->cred_hits;
	int err;

	if (total > s->sc_cap) {
		size_t cap = total < 16384 ? 16384 : total;
		uint8_t *nb = realloc(s->sc, cap);

		if (!nb)
			return -ENOMEM;
		s->sc = nb;
		s->sc_cap = cap;
	}
	memcpy(s->sc + s->sc_len, p, n);
	*hits += scrub_buf(&s->scrub, s->sc, total);
	if (!s->sc_started) {
		/* The body's start may be how an occurrence ends (an echo of
		 * the request from an offset the agent chose): held until it
		 * is long enough to tell, or the body ends (scrub_end()), as
		 * a masked body's is (review, stop 27: streamed, the token
		 * but its first byte went out). Usually a few bytes tell
		 * (a '{' is no token's), so a stream is not delayed. */
		if (total < scrub_hold(&s->scrub) && scrub_start_open(&s->scrub, s->sc, total)) {
			s->sc_len = total;
			return 0;
		}
		*hits += scrub_cut_start(&s->scrub, s->sc, total);
		s->sc_started = true;
	}
	out = total - scrub_keep(&s->scrub, s->sc, total);
	if (out && (err = tunnel ? conn_send(c, SIDE_AGENT, s->sc, out) : body_send(c, s->sc, out, chunked)))
		return err;
	memmove(s->sc, s->sc + out, total - out);
	s->sc_len = total - out;
	return 0;
}

/* The body is whole: what scrub_out() kept back goes. */
static int scrub_end(struct conn *c, bool chunked, bool tunnel)
{
	struct http_state *s = st(c);
	size_t n = s->sc_len;
	unsigned *hits = tunnel ? &s->tunnel_hits : &q_front(s)->cred_hits;
	int err = 0;

	s->sc_len = 0;
	s->sc_started = false;   /* the next body's start is held again */
	if (n) {
		/* both ends: the start too, when it never went out (a body
		 * shorter than scrub_hold()) */
		*hits += scrub_cut(&s->scrub, s->sc, n);
		err = tunnel ? conn_send(c, SIDE_AGENT, s->sc, n) : body_send(c, s->sc, n, chunked);
	}
	if (s->sc_cap > (256u << 10)) {
		free(s->sc);
		s->sc = NULL;
		s->sc_cap = 0;
	}
	return err;
}

/* Response body bytes: to the agent (re-chunked when chunked), or into the
 * masked response being collected. */
static int body_out(struct conn *c, const uint8_t *p, size_t n, bool chunked)
{
	struct http_state *s = st(c);

	if (s->collecting) {
		if (n > MASK_JSON_MAX - s->mlen)
			return -E2BIG;
		if (s->mh.body != HTTP_BODY_LENGTH && !held_take(c, n))
			return -EBUSY;
		if (s->mlen + n > s->mcap) {
			size_t cap = s->mcap ? s->mcap : 64 * 1024;
			uint8_t *nb;

			while (cap < s->mlen + n)
				cap *= 2;
			if (!(nb = realloc(s->mbody, cap)))
				return -ENOMEM;
			s->mbody = nb;
			s->mcap = cap;
		}
		memcpy(s->mbody + s->mlen, p, n);
		s->mlen += n;
		return 0;
	}
	if (s->scrub.n)
		return scrub_out(c, p, n, chunked, false);
	return body_send(c, p, n, chunked);
}

/* Body bytes to the agent as they are (re-chunked when chunked). */
static int body_send(struct conn *c, const uint8_t *p, size_t n, bool chunked)
{
	struct http_state *s = st(c);
	char hdr[24];
	int err;

	q_front(s)->resp_bytes += n;
	if (!chunked || !s->uchunked_out)
		return conn_send(c, SIDE_AGENT, p, n);
	size_t hl = http_chunk_header(n, hdr);

	if ((err = conn_send(c, SIDE_AGENT, hdr, hl)) || (err = conn_send(c, SIDE_AGENT, p, n)))
		return err;
	return conn_send(c, SIDE_AGENT, HTTP_CHUNK_TAIL, 2);
}

/* The body is whole: the answer goes out (masked when collected). */
static int body_done(struct conn *c)
{
	struct http_state *s = st(c);
	int err;

	if (s->collecting) {
		if ((err = collect_finish(c)))
			return err;
	} else if ((err = scrub_end(c, s->ubody == HTTP_BODY_CHUNKED, false)) ||
		   (s->uchunked_out && (err = conn_send(c, SIDE_AGENT, HTTP_CHUNK_LAST, 5)))) {
		return err;
	}
	return response_done(c);
}

static int upstream_body(struct conn *c, const uint8_t *in, size_t len, bool eof)
{
	struct http_state *s = st(c);
	size_t off = 0;
	int err;

	switch (s->ubody) {
	case HTTP_BODY_LENGTH: {
		size_t take = len < s->uremain ? len : (size_t)s->uremain;

		if ((err = body_out(c, in, take, false)))
			return err;
		s->uremain -= take;
		off = take;
		if (!s->uremain) {
			conn_in_consume(c, SIDE_UP, (uint32_t)off);
			err = body_done(c);
			return err ? err : 1;
		}
		if (eof)
			return -EPIPE;   /* cut short: the agent must not take it for whole */
		break;
	}
	case HTTP_BODY_CHUNKED:
		while (off < len && !s->uch.done) {
			size_t used, doff, dlen;

			if (http_chunked_feed(&s->uch, in + off, len - off, &used, &doff, &dlen) < 0)
				return -EPROTO;
			if (dlen && (err = body_out(c, in + off + doff, dlen, true)))
				return err;
			if (!used)
				break;
			off += used;
		}
		if (s->uch.done) {
			conn_in_consume(c, SIDE_UP, (uint32_t)off);
			err = body_done(c);
			return err ? err : 1;
		}
		if (eof)
			return -EPIPE;
		break;
	default:   /* until the upstream closes */
		if ((err = body_out(c, in, len, false)))
			return err;
		off = len;
		/* over TLS, only close_notify ends it (RFC 9112 9.8): a bare FIN
		 * may be anyone's, and the agent would take the cut for whole */
		if (eof && conn_in_eof_bare(c, SIDE_UP))
			return -EPIPE;
		if (eof) {
			conn_in_consume(c, SIDE_UP, (uint32_t)off);
			s->up_close = true;
			err = body_done(c);
			return err ? err : 1;
		}
		break;
	}
	conn_in_consume(c, SIDE_UP, (uint32_t)off);
	return 0;
}

static void upstream_failed(struct conn *c, const char *why, int status)
{
	struct http_state *s = st(c);
	struct hreq *r = q_front(s);
	bool in_flight = false;

	/* The request at the front got nothing: it gets a 502 of ours, and
	 * the connection ends after it. A request still to come (held while
	 * dialling, or not read yet) gets its 502 when it is read. */
	if (why != s->up_why)
		snprintf(s->up_why, sizeof(s->up_why), "%s", why);
	why = s->up_why;
	s->up_failed = true;
	s->resend_pending = false;
	if (r && !r->local) {
		r->local = true;
		r->allowed = false;
		r->status = status;
		r->reason = why;
		r->close_after = true;
		in_flight = true;
	}
	for (unsigned i = 1; i < s->qlen; i++) {
		struct hreq *o = &s->q[(s->qhead + i) % HTTP_PIPELINE_MAX];

		if (!o->local) {
			o->local = true;
			o->status = status;
			o->reason = why;
			o->close_after = true;
			in_flight = true;
		}
	}
	if (in_flight || s->astate != A_HEAD)
		s->astate = A_DONE;
}

static void upstream_gone(struct conn *c, const char *why)
{
	upstream_failed(c, why, 502);
}

/*
 * The upstream closed a reused connection under r before a byte of its
 * answer: the keep-alive race (the upstream's idle timeout ran out as the
 * request went). r may be sent again on a new connection, once, when it is
 * the only forwarded request in flight, of a safe method, without a body,
 * and the connection had answered before (a new connection that closes is
 * a failing upstream, not a race).
 */
static bool can_resend(const struct http_state *s, const struct hreq *r)
{
	return s->resend_req == r && !r->retried && !r->resp_bytes && s->up_served > 0 && s->resend_len;
}

static int resend(struct conn *c, struct hreq *r)
{
	struct http_state *s = st(c);

	r->retried = true;
	s->resend_pending = true;
	if (up_redial(c) < 0) {
		upstream_gone(c, "the upstream is not reachable");
		return flush_local(c);
	}
	return 0;   /* sent by up_now_ready() */
}

static int process_upstream(struct conn *c)
{
	struct http_state *s = st(c);
	int err;

	for (;;) {
		uint32_t len;
		const uint8_t *in = conn_in(c, SIDE_UP, &len);
		bool eof = conn_in_eof(c, SIDE_UP);
		struct hreq *r = q_front(s);
		struct http_head h;
		int rc;

		if (s->ustate == U_DISCARD) {
			conn_in_consume(c, SIDE_UP, len);
			return 0;
		}
		if (s->ustate == U_TUNNEL) {
			if (s->scrub.n)
				err = len ? scrub_out(c, in, len, false, true) : 0;
			else
				err = len ? conn_send(c, SIDE_AGENT, in, len) : 0;
			if (err)
				return err;
			conn_in_consume(c, SIDE_UP, len);
			if (eof) {
				if (s->scrub.n && (err = scrub_end(c, false, true)))
					return err;
				/* a TLS upstream's end without close_notify (a FIN
				 * anyone on the path can forge) reaches a TLS agent
				 * as the same: close_notify would tell it the
				 * tunnel's bytes are whole (review, stop 66) */
				if (conn_in_eof_bare(c, SIDE_UP))
					conn_shutdown_bare(c, SIDE_AGENT);
				else
					conn_shutdown(c, SIDE_AGENT);
			}
			return 0;
		}
		if (s->ustate == U_HELD) {
			if ((rc = held_body(c, in, len, eof)) <= 0)
				return rc;
			continue;
		}
		if (s->ustate == U_BODY) {
			/* a Content-Length: 0 body is whole with no byte read (it
			 * waited for the next answer's bytes, or the close) */
			if (!len && !eof && !(s->ubody == HTTP_BODY_LENGTH && !s->uremain))
				return 0;
			rc = upstream_body(c, in, len, eof);
			if (rc == -E2BIG && s->collecting)
				return refuse_response(c, MASK_TOO_BIG);
			if (rc == -EBUSY && s->collecting)
				return refuse_response(c, MASK_HELD_FULL);
			if (rc < 0)
				return rc;
			if (rc == 0)
				return 0;
			continue;
		}
		/* U_HEAD */
		if (!len) {
			if (!eof)
				return 0;
			if (!r || r->local) {
				/* closed between requests (its keep-alive timeout):
				 * the next request that goes upstream dials again */
				s->up_idle = true;
				return 0;
			}
			if (can_resend(s, r))
				return resend(c, r);
			upstream_gone(c, "the upstream closed the connection");
			return flush_local(c);
		}
		if (!r || r->local)
			return -EPROTO;   /* bytes nobody asked for */
		rc = head_due(in, len, s->uhead_seen, HTTP_RESP_HEAD_MAX, eof) ?
		     http_resp_parse(in, len, r->head, &h) : HTTP_NEED_MORE;
		s->uhead_seen = rc == HTTP_NEED_MORE ? (uint32_t)len : 0;
		if (rc == HTTP_NEED_MORE) {
			if (eof) {
				upstream_gone(c, "the upstream sent an incomplete response");
				return flush_local(c);
			}
			return 0;
		}
		if (rc == HTTP_MALFORMED) {
			upstream_gone(c, "the upstream sent a malformed response");
			conn_in_consume(c, SIDE_UP, len);
			return flush_local(c);
		}
		if (h.status == 101 && !r->upgrade) {
			upstream_gone(c, "the upstream switched protocols unasked");
			conn_in_consume(c, SIDE_UP, len);
			return flush_local(c);
		}
		if (h.status == 101 && !upgrade_answered(in, &h, r, injects(c))) {
			upstream_gone(c, "the upstream's 101 is not the upgrade asked for (Upgrade, "
				      "Sec-WebSocket-Accept, Sec-WebSocket-Extensions)");
			conn_in_consume(c, SIDE_UP, len);
			return flush_local(c);
		}
		s->resend_req = NULL;   /* it is being answered: never sent again */
		s->up_close = (h.conn & HTTP_CONN_CLOSE) || h.version == 10 || h.body == HTTP_BODY_EOF;
		if (h.status >= 100 && h.status < 200 && h.status != 101) {
			/* interim (100 Continue, 103): relayed to an HTTP/1.1 agent */
			if (!r->v10 && (err = send_resp_head(c, in, &h, r, false, -1)))
				return err;
			conn_in_consume(c, SIDE_UP, h.head_len);
			s->resp_since_ms = now_ms();   /* progress: the final head's clock starts again */
			continue;
		}
		r->status = h.status;
		s->resp_since_ms = 0;   /* its answer began: the clock stops (the next request's starts anew) */
		if (s->astate == A_BODY && s->abody_req == r) {
			/* A final answer before the request's body was all sent (417,
			 * 404, 401 to an upload): an upstream that does not read the
			 * rest would take it as the next request, and the next request
			 * we forward as its continuation, credential and all (review,
			 * stop 27; the Expect/0.CL smuggling class). The rest of the
			 * body is read and dropped, and this answer ends the
			 * connection: nothing more goes up this leg. */
			s->abody_fwd = false;
			r->close_after = true;
		}
		if (r->masked && h.status != 101 && (h.status == 206 || has_content_range(in, &h))) {
			/* a part of a body: a string or a number cut out of the
			 * document is valid JSON that no path names (review, stop
			 * 34). Ranges are never asked for on a masked route; an
			 * upstream that sends one anyway is refused. */
			conn_in_consume(c, SIDE_UP, h.head_len);
			return refuse_response(c, "a partial answer (206, Content-Range) cannot be masked");
		}
		s->uchunked_out = h.body == HTTP_BODY_CHUNKED && !r->v10;
		if (r->masked && h.body == HTTP_BODY_LENGTH && h.content_length <= MASK_JSON_MAX &&
		    h.status != 101) {
			/* held, unconsumed, in the input buffer until whole (it may
			 * grow to hold it: bounded by MASK_JSON_MAX and the head's max) */
			held_put(c);
			if (!held_take(c, h.head_len + (size_t)h.content_length)) {
				conn_in_consume(c, SIDE_UP, h.head_len);
				return refuse_response(c, MASK_HELD_FULL);
			}
			if ((err = conn_in_reserve(c, SIDE_UP, h.head_len + (uint32_t)h.content_length)))
				return err;
			s->mh = h;
			s->ustate = U_HELD;
			/* held_body() asks for no wakeup before the rest is in
			 * (conn_in_expect()); conn_in_release() ends that */
			if ((err = process_agent(c)))
				return err;
			continue;
		}
		if (!r->masked && s->scrub.n && h.body != HTTP_BODY_NONE && h.status != 101 && coded(in, &h)) {
			conn_in_consume(c, SIDE_UP, h.head_len);
			return refuse_response(c, "the upstream answered with a compressed body, which cannot be "
						  "searched for the credential agentgate injects (identity was asked)");
		}
		if (r->masked && h.body != HTTP_BODY_NONE && h.status != 101) {
			/* held until the body is whole and masked */
			if ((err = collect_start(c, in, &h)) == -E2BIG || err == -EBUSY) {
				conn_in_consume(c, SIDE_UP, h.head_len);
				return refuse_response(c, err == -EBUSY ? MASK_HELD_FULL : MASK_TOO_BIG);
			}
			if (err)
				return err;
		} else if ((err = send_resp_head(c, in, &h, r, r->close_after || s->up_close, -1))) {
			return err;
		}
		conn_in_consume(c, SIDE_UP, h.head_len);
		if (h.status == 101) {
			s->ustate = U_TUNNEL;
			s->astate = A_TUNNEL;
			audit_request(c, r);
			q_pop(s);
			if ((err = process_agent(c)))
				return err;
			continue;
		}
		if (r->upgrade) {   /* refused upgrade: the agent may go on with HTTP */
			r->upgrade = false;
			if (s->astate == A_WAIT_UPGRADE)
				s->astate = A_HEAD;
		}
		if (h.body == HTTP_BODY_NONE) {
			if ((err = response_done(c)))
				return err;
		} else {
			s->ustate = U_BODY;
			s->ubody = h.body;
			s->uremain = h.content_length;
			http_chunked_init(&s->uch);
		}
		if ((err = process_agent(c)))
			return err;
	}
}

/* ---- module entry points ------------------------------------------------------ */

static void audit_conn_open(struct conn *c, bool allowed, const char *reason)
{
	struct audit_w *w = enforcer_conn_event(c, allowed ? 1 : 5, allowed ? "Open" : "Refuse");

	if (!allowed)
		enforcer_count_refused(c);
	else
		c->opened = true;
	aobj_bool(&w->um, "tls_intercepted", st(c)->agent_tls);
	audit_w_verdict(w, allowed, c->would_deny, enforcer_rule_name(c), reason);
	audit_commit(w);
}

/* The Host sent for a request without one (HTTP/1.0): the target's name,
 * else its upstream.server_name, else the address dialled. Again when a
 * reload moved the connection to other upstream settings. */
static void set_host(struct conn *c)
{
	const struct policy_target *t = target(c);
	struct http_state *s = st(c);

	if (t && t->addr.kind == ADDR_HOST)
		snprintf(s->host, sizeof(s->host), "%s", t->addr.host);
	else if (t && t->upstream.server_name)
		snprintf(s->host, sizeof(s->host), "%s", t->upstream.server_name);
	else {
		char ip[64];

		addr_str(c->pair.orig_addr, ip, sizeof(ip));
		if (strchr(ip, ':'))
			snprintf(s->host, sizeof(s->host), "[%s]:%u", ip, c->pair.orig_port);
		else
			snprintf(s->host, sizeof(s->host), "%s:%u", ip, c->pair.orig_port);
	}
}

static int http_start(struct conn *c)
{
	const struct policy_target *t = target(c);
	struct http_state *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	c->proto_state = s;
	/* recorded (recording.h): the requests as forwarded, without the
	 * injected credential (send_head), and the answers as masked */
	c->rec_side[SIDE_AGENT] = c->rec_side[SIDE_UP] = true;
	s->k8s = t && t->proto == PROTO_KUBERNETES;
	set_host(c);
	return 0;   /* the first byte says plain HTTP or TLS */
}

/*
 * Before stream mode: the agent's first byte decides. It is peeked, not
 * read, so the TLS handshake (conn.c's) sees the whole ClientHello.
 */
static int first_bytes(struct conn *c)
{
	struct http_state *s = st(c);
	uint8_t b;
	ssize_t n = recv(c->agent.fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
	int err;

	if (n < 0)
		return errno == EAGAIN || errno == EINTR ? 0 : -errno;
	if (n == 0) {
		enforcer_conn_closed(c, "the agent closed before sending a request");
		conn_close(c, false);
		return 0;
	}
	if ((err = conn_stream(c)))
		return err;
	if (b == 0x16) {
		char ip[64], why[300], text[400];
		struct local_ca_asker who;
		SSL *ssl;

		addr_str(c->pair.orig_addr, ip, sizeof(ip));
		conn_ca_asker(c, &who);
		ssl = local_ca_server_ssl(target(c), false, target(c)->addr.kind == ADDR_HOST ? target(c)->addr.host : ip,
					  &who, why, sizeof(why));
		if (!ssl) {
			snprintf(text, sizeof(text), "the agent speaks TLS to an http target and the local CA has no "
				 "certificate for it: %s", why);
			audit_conn_open(c, false, text);
			conn_refuse(c);
			return 0;
		}
		s->agent_tls = true;
		if ((err = conn_tls(c, SIDE_AGENT, ssl, true)))
			return err;
	}
	audit_conn_open(c, true, c->would_deny ? c->deny_reason : NULL);
	return conn_connect_upstream(c);
}

static int http_on_agent_data(struct conn *c)
{
	int err;

	if (!c->streaming)
		return first_bytes(c);
	held_sync(c);
	err = process_agent(c);
	arm_clocks(c);
	return err;
}

static void answer_up_failure(struct conn *c, const char *why, bool finish);

/* The upstream leg is up (TLS included): a request to send again goes
 * first, then what the agent sent while it was dialled. */
static int up_now_ready(struct conn *c)
{
	struct http_state *s = st(c);
	int err;

	s->up_ready = true;
	if (s->resend_pending) {
		struct obuf o = { head_buf, s->resend_len, sizeof(head_buf), false };

		s->resend_pending = false;
		s->resp_since_ms = 0;   /* sent anew: its answer's clock starts again (arm_clocks) */
		memcpy(head_buf, s->resend, s->resend_len);
		if ((err = send_head(c, &o)) == -EPERM || err == -EINVAL || err == -ENOBUFS) {
			upstream_gone(c, "the request could not be sent again (no credential)");
			return flush_local(c);
		}
		if (err)
			return err;
	}
	return process_agent(c);
}

static int http_upstream_data(struct conn *c);

static int http_on_upstream_data(struct conn *c)
{
	int err;

	held_sync(c);
	err = http_upstream_data(c);
	if (!err && st(c) && st(c)->ustate != U_HELD)
		conn_in_release(c, SIDE_UP);   /* a held answer's buffer goes with it */

	arm_clocks(c);
	return err;
}

static int http_upstream_data(struct conn *c)
{
	struct http_state *s = st(c);
	int err;

	if (!s->up_connected) {
		SSL *ssl;
		char why[200];

		s->up_connected = true;
		if ((err = http_upstream_ssl(c->policy, c->target_idx, c->pair.orig_addr, &ssl, why, sizeof(why)))) {
			log_err("http: target '%s': %s", target(c)->name, why);
			answer_up_failure(c, "upstream TLS is misconfigured", false);
			return 0;
		}
		if (ssl) {
			s->up_tls = true;
			return conn_tls(c, SIDE_UP, ssl, false);
		}
		return up_now_ready(c);
	}
	if (!s->up_ready && s->up_tls) {
		if (!conn_tls_ready(c, SIDE_UP))
			return 0;
		if ((err = up_now_ready(c)))
			return err;
	}
	return process_upstream(c);
}

/*
 * The upstream leg failed before it was up: what waits gets a 502 saying
 * why. finish: close once that is answered (conn.c resets the agent
 * otherwise); else the agent's connection goes on until its request has
 * been read and answered (it may not have been read yet: closing with it
 * unread would be a reset).
 */
static void answer_up_failure(struct conn *c, const char *why, bool finish)
{
	upstream_gone(c, why);
	/* requests parsed while dialling were held; answer them now */
	if (process_agent(c) < 0)
		return;
	flush_local(c);
	if (finish && !st(c)->qlen)
		conn_finish(c);
}

static void http_on_upstream_fail(struct conn *c, int err)
{
	log_debug("http: upstream %s: %s", c->upstream_desc, strerror(-err));
	answer_up_failure(c, "the upstream is not reachable", true);
	arm_clocks(c);
}

/*
 * The upstream TLS handshake failed (conn.c closed the socket): nothing
 * was sent to it, the agent gets a 502 that says why, and so does audit.
 */
static void http_on_upstream_tls_fail(struct conn *c)
{
	struct http_state *s = st(c);
	const char *e = conn_tls_error(c), *v = strstr(e, "certificate verify failed");

	if (v && (v = strchr(v, ':')))
		snprintf(s->up_why, sizeof(s->up_why), "the upstream's TLS certificate failed verification:%s", v + 1);
	else
		snprintf(s->up_why, sizeof(s->up_why), "the upstream TLS handshake failed (%s)", e[0] ? e : "no detail");
	log_warn("http: target '%s': upstream %s: %s", target(c)->name, c->upstream_desc, s->up_why);
	answer_up_failure(c, s->up_why, false);
	arm_clocks(c);
}

/*
 * conn.c's deadline passed. The response clock (arm_clocks()): the agent
 * gets a 504 of ours for the request that waited (and for those pipelined
 * behind it, which the upstream will not answer either), the upstream's
 * connection is dropped with whatever it still sends, and the agent's ends
 * once those are written. The head clock: false, conn.c closes.
 */
static bool http_on_deadline(struct conn *c)
{
	struct http_state *s = st(c);

	if (!s || !s->resp_since_ms || s->ustate != U_HEAD || s->up_failed ||
	    now_ms() < s->resp_since_ms + resp_timeout_ms(c))
		return false;
	if (conn_out_pending(c, SIDE_AGENT) > CONN_OUT_HIGH || c->hold_ms) {
		/* conn.c reads nothing while the agent is slow to take what it
		 * has, or while its masking is paced (conn.h hold_ms): the
		 * upstream's answer may be waiting unread, and the delay is the
		 * agent's; the clock starts again (an upstream that does not
		 * read the request is not excused: its side's backlog does not
		 * count) */
		s->resp_since_ms = now_ms();
		arm_clocks(c);
		return true;
	}
	char why[96];

	snprintf(why, sizeof(why), "the upstream did not begin its answer within %u ms (response_timeout)",
		 resp_timeout_ms(c));
	log_debug("http: upstream %s: %s", c->upstream_desc, why);
	upstream_failed(c, why, 504);
	s->ustate = U_DISCARD;
	s->resp_since_ms = 0;
	s->head_since_ms = 0;
	conn_shutdown(c, SIDE_UP);
	if (flush_local(c) < 0)
		return false;
	conn_finish(c);   /* after the 504s are written; nothing more is read */
	return true;
}

/* Between events: a collect buffer not in use goes. */
static void http_trim(struct conn *c)
{
	struct http_state *s = st(c);

	if (!s->collecting && s->mbody) {
		free(s->mbody);
		s->mbody = NULL;
		s->mcap = 0;
	}
}

static void http_release(struct conn *c)
{
	struct http_state *s = st(c);

	if (s) {
		audit_unanswered(c);
		if (s->tunnel_hits)   /* its request's event went out with the 101 */
			ag_log(LOG_LVL_WARN, "http: target '%s': the upstream sent the injected credential %u "
			       "time(s) inside an upgraded connection; starred", target(c)->name, s->tunnel_hits);
		held_put(c);
		if (s->held_q)
			held_sub(c, s->held_q);
		mask_free(s->mask);
		while (s->nold_masks)
			mask_free(s->old_masks[--s->nold_masks]);
		free(s->mhead);
		free(s->mbody);
		free(s->amulti);
		if (s->resend)
			OPENSSL_cleanse(s->resend, s->resend_cap);
		free(s->resend);
		scrub_clear(&s->scrub);
		free(s->sc);
	}
	free(c->proto_state);
	c->proto_state = NULL;
}

const struct proto_ops proto_http_ops = {
	.name = "http",
	.enforces_rules = true,
	.start = http_start,
	.on_agent_data = http_on_agent_data,
	.on_upstream_data = http_on_upstream_data,
	.release = http_release,
	.on_upstream_fail = http_on_upstream_fail,
	.on_upstream_tls_fail = http_on_upstream_tls_fail,
	.on_deadline = http_on_deadline,
	.trim = http_trim,
};

/* protocol: kubernetes: the same proxy, judging k8s.h attributes. */
const struct proto_ops proto_kubernetes_ops = {
	.name = "kubernetes",
	.enforces_rules = true,
	.start = http_start,
	.on_agent_data = http_on_agent_data,
	.on_upstream_data = http_on_upstream_data,
	.release = http_release,
	.on_upstream_fail = http_on_upstream_fail,
	.on_upstream_tls_fail = http_on_upstream_tls_fail,
	.on_deadline = http_on_deadline,
	.trim = http_trim,
};
