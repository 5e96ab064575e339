/* SPDX-License-Identifier: Apache-2.0 */
/*
 * conn: one proxied connection, agent side and upstream side, owned by the
 * worker thread that accepted it. Buffers are bounded (CONN_BUF per
 * direction); a full buffer stops reading from that side (backpressure).
 * Half-close is relayed: EOF from one side becomes shutdown(SHUT_WR) on the
 * other once its buffered bytes are written.
 */
#ifndef AGENTGATE_CONN_H
#define AGENTGATE_CONN_H

#include <stdbool.h>
#include <stdint.h>
#include "agentgate_abi.h"
#include "policy.h"

#define CONN_BUF (64 * 1024)
#define CONN_CONNECT_TIMEOUT_MS 10000

struct worker;
struct proto_ops;
typedef struct ssl_st SSL;

enum conn_dir { DIR_UP = 0, DIR_DOWN = 1 };   /* agent->upstream, upstream->agent */

struct conn_end {
	int fd;
	struct conn *c;
	bool is_agent;
};

struct conn {
	struct worker *w;
	struct conn_end agent, up;
	uint8_t *buf[2];
	uint32_t len[2], off[2];
	bool eof[2];          /* source of direction d reached EOF */
	bool shut[2];         /* destination of direction d was shut down (or needs no shutdown) */
	bool connecting, relaying, closing;
	uint64_t deadline_ms; /* connect deadline (monotonic ms), 0 = none */
	const char *deadline_why;  /* what a module's deadline means, for audit; NULL: no decision yet */
	uint64_t up_born_ms;  /* when the upstream leg was first connected (monotonic ms) */
	uint64_t bytes[2];
	uint64_t start_ms;

	/* attribution, from the pair map and the policy */
	struct ag_pair_val pair;
	uint8_t client_addr[16];
	uint16_t client_port;
	int agent_idx, target_idx;
	const struct policy *policy;
	const struct policy_rule *rule;
	const struct proto_ops *ops;
	void *proto_state;
	bool fallback_proto;  /* protocol module not available: relayed as tcp */
	bool would_deny;      /* observe mode: the policy would have denied */
	bool opened;          /* an Open event was recorded: a Close follows */
	char deny_reason[200];  /* observe mode: why the policy would have refused (a copy:
				 * reasons are often built on a caller's stack) */
	char rule_desc[160];
	char why[300];        /* a refusal reason built for this connection */  /* "role 'r' rule 2 (line 14)", empty when no rule decided */
	char upstream_desc[64];
	struct rec *rec;      /* session recording (recording.h), NULL when off */
	struct conn *next, *prev;  /* worker's list */
	struct conn *idle_next;    /* worker's idle list (conn_want_idle()) */
	bool on_idle_list, idle_pending;

	/* stream mode (conn_stream()): per side, SIDE_AGENT / SIDE_UP */
	bool streaming;
	bool rec_side[2];           /* stream mode: record what is queued for SIDE_AGENT / SIDE_UP */
	struct conn_side {
		uint8_t *in;           /* received, not yet consumed by the module */
		uint32_t in_len, in_off, in_cap, in_max;
		uint8_t *out;          /* queued by the module, not yet written */
		uint32_t out_len, out_off, out_cap;
		bool in_eof;           /* the peer finished sending (or TLS close_notify) */
		bool in_eof_bare;      /* ... a client TLS leg's peer closed without close_notify */
		bool want_shut, shut;  /* conn_shutdown() asked / done */
		bool shut_bare;        /* ... with no TLS close_notify (conn_shutdown_bare()) */
		SSL *ssl;              /* TLS on this leg, after conn_tls() */
		bool tls_pending;      /* conn_tls() asked: starts once out is flushed */
		bool tls_ready;        /* handshake done */
		bool tls_server;
		bool drained;          /* read until empty; nothing new reported since */
		bool hup;              /* the peer closed its side (EPOLLRDHUP/HUP/ERR seen) */
		int in_err;            /* a read failed after bytes came in that pass: -errno, told
					* once the module has seen those bytes (fill_in) */
		bool secret;           /* out holds a secret (conn_send_secret): wiped once written */
		bool wr_dead;          /* the upstream refused more (EPIPE/ECONNRESET on a plain
					* write): what is queued for it is dropped, and what it
					* sent before is still read (flush_out) */
		uint32_t out_hw;       /* the most of out ever holding bytes since it was last empty */
		int lowat;             /* SO_RCVLOWAT asked by conn_in_expect(); 0: the default */
	} side[2];
	bool finishing;            /* conn_finish(): close once the agent's output is written */
	/* The module stopped reading side s on purpose until the other side
	 * moves (a full pipeline: PG_PEND_MAX, HTTP_PIPELINE_MAX): a full
	 * input buffer it leaves untouched is then not an oversized message.
	 * Set or cleared by the module on each call. */
	bool in_waits[2];
	/* The module's on_agent_data is called (with no new input, maybe) once
	 * the agent's output queue is empty; cleared when it is. */
	bool want_drained;
	uint64_t rx[2], tx[2];     /* stream mode byte counts per side, after TLS */
	/* Set by a module while handling upstream data masks (its cost follows
	 * what the agent asks for): the time its on_upstream_data takes is
	 * charged to the agent (enforcer_mask_spent), and past the agent's
	 * budget the upstream is not read until hold_ms (monotonic; 0: read). */
	bool costly;
	uint64_t costly_ns;        /* spent, not yet charged (charged by the ms) */
	uint64_t hold_ms;
	char tls_err[160];
};

/*
 * Stream mode: for modules that stay in the path for the whole session
 * (postgres, http). After conn_stream(c), conn.c owns both sockets (and TLS
 * on either leg) and the module sees bytes, never fds:
 *
 *   - Bytes received from a side accumulate in its input buffer; then the
 *     module's on_agent_data / on_upstream_data is called. The module reads
 *     them with conn_in() and drops what it used with conn_in_consume();
 *     what it leaves stays for the next call (a partial message).
 *   - The module queues output with conn_send(); conn.c writes it as the
 *     socket allows. Backpressure: while either side's queued output is over
 *     CONN_OUT_HIGH, conn.c reads nothing more from either side; the module
 *     is called again (with its leftover input) once output drained below
 *     CONN_OUT_LOW. conn_send() itself never fails for space below
 *     CONN_OUT_MAX per side (-ENOBUFS beyond: a module bug or an abuse; close).
 *   - Input buffers start at CONN_BUF and hold at most in_max bytes
 *     (CONN_IN_MAX unless the module raised it with conn_in_reserve()); a
 *     module must consume (or pass through) before a full buffer, or the
 *     connection is closed (a side whose buffer is full and unconsumed is
 *     an error, -EMSGSIZE).
 *   - on_upstream_data is also called once when the upstream connection is
 *     established (with no input), so a module can send its startup.
 *   - Callbacks return 0 or -errno (close with reset, audited by conn.c).
 *   - EOF: conn_in_eof(c, side) turns true and the callback is called; the
 *     module decides (answer pipelined requests, then conn_shutdown()).
 */
enum conn_side_id { SIDE_AGENT = 0, SIDE_UP = 1 };
#define CONN_IN_MAX   (1u << 20)
#define CONN_IN_LIMIT (16u << 20)     /* the most conn_in_reserve() grants */
#define CONN_OUT_HIGH (256u << 10)
#define CONN_OUT_LOW  (64u << 10)
#define CONN_OUT_MAX  (32u << 20)

/* The worker's tick for a held connection (conn.hold_ms passed): reads its
 * upstream again. */
void conn_resume(struct conn *c);

/* Enter stream mode (from start(), before or after conn_connect_upstream()). 0 or -errno. */
int conn_stream(struct conn *c);
const uint8_t *conn_in(struct conn *c, int side, uint32_t *len);
void conn_in_consume(struct conn *c, int side, uint32_t n);
bool conn_in_eof(const struct conn *c, int side);
/* The EOF of a TLS leg came without close_notify: what the peer sent may
 * have been cut (a FIN anyone on the path can forge). Client legs only. */
bool conn_in_eof_bare(const struct conn *c, int side);
/*
 * Ends side's sending once what is queued is written (a FIN), without TLS
 * close_notify: a relay passes a bare end from the other leg on as what it
 * was, so the peer's TLS stack sees a cut where one may have happened.
 */
void conn_shutdown_bare(struct conn *c, int side);
/* Let side's input buffer grow to max bytes (<= CONN_IN_LIMIT) for one big message. */
int conn_in_reserve(struct conn *c, int side, uint32_t max);
/* The big message is done: side's input goes back to CONN_IN_MAX and its
 * buffer shrinks to what it holds (pointers from conn_in() are stale); a
 * conn_in_expect() ends too. */
void conn_in_release(struct conn *c, int side);
/*
 * The module can do nothing with side's input before it holds total bytes
 * (a masked answer of known length, within what conn_in_reserve() let it
 * grow to): the buffer grows to hold them now, and the kernel is asked not
 * to report the socket readable before the rest is queued (SO_RCVLOWAT),
 * so the message costs one wakeup and one read instead of one of each per
 * piece the peer's writes arrived in. The peer's FIN, an error and memory
 * pressure still wake at once; a wakeup short of total (pressure) leaves
 * the module to call this again. Plain sockets only (under TLS the bytes
 * queued are records). Pointers from conn_in() are stale after it.
 */
void conn_in_expect(struct conn *c, int side, uint32_t total);
int conn_send(struct conn *c, int side, const void *buf, size_t len);
/* Stream mode: a module that sets c->rec_side[side] has what it queues for
 * that side recorded (recording.h), as it sends it; conn_record() records
 * bytes it sends some other way (a head without the injected credential). */
void conn_record(struct conn *c, int side, const void *buf, size_t len);
/* conn_send() for bytes holding a secret (a password, an injected
 * credential): never recorded; the queue they wait in is wiped once it is
 * written, and not handed back to the heap with them (free, realloc). */
int conn_send_secret(struct conn *c, int side, const void *buf, size_t len);
/* The parsing budget (limits.parse_cpu) of the agent of conn (a struct
 * conn *), as callbacks: enforcer_parse_may() and enforcer_parse_spent(). */
bool conn_parse_may(void *conn, char *why, size_t whylen);
void conn_parse_spent(void *conn, uint64_t cpu_ns);
/* Who pays for the agent-side certificates a connection makes the local CA
 * mint (local_ca.h): the connection's agent, from its limits.parse_cpu. */
struct local_ca_asker;
void conn_ca_asker(struct conn *c, struct local_ca_asker *out);
/* conn_send() that writes to the socket at once what it can (queued bytes
 * first) and queues only the rest: no copy of a big answer the socket takes. */
int conn_send_now(struct conn *c, int side, const void *buf, size_t len);
/* Writes what is queued for side now, as far as the socket takes it (the
 * rest stays queued): for an answer that is complete before work that need
 * not delay it. TLS legs and legs not yet up are left to the usual flush. */
void conn_flush(struct conn *c, int side);
/*
 * Stream mode: the module's idle op is to run once the worker has handled
 * what else was ready: work that no answer waits for (building audit
 * events) comes after the next request another thread may already have
 * sent. The agent woken by an answer often takes the worker's CPU at that
 * send, and sends its next query before the worker goes on; built right
 * after the send, the event delayed that query. conn_idle_now() runs it
 * at once (before a Close event, a change of policy).
 */
void conn_want_idle(struct conn *c);
void conn_idle_now(struct conn *c);
uint32_t conn_out_pending(const struct conn *c, int side);
/* Half-close toward side once its queued output is written (TLS: close_notify, then FIN). */
void conn_shutdown(struct conn *c, int side);
/* Close the whole connection once everything queued for the agent is written
 * (an error message, a 403 with Connection: close). */
void conn_finish(struct conn *c);
/*
 * TLS on a leg, started once everything queued toward that side is written
 * (so a PostgreSQL 'S' or an HTTP answer goes out in the clear first). The
 * module made ssl (SSL_new on its SSL_CTX, with verification, SNI and
 * hostname checks set as it wants); conn.c sets the fd, drives the handshake
 * on the socket's readiness, and owns and frees ssl from the call on (when
 * it fails too). server:
 * true for the agent leg (we terminate), false for upstream (we are client).
 * Input received before the call that the module did not consume is an
 * error (-EPROTO: bytes smuggled ahead of the handshake, CVE-2021-23214).
 * The module's callback for that side is called with no input when the
 * handshake completes (conn_tls_ready() true), or the connection is closed
 * with the TLS error in audit (conn_tls_error()).
 */
int conn_tls(struct conn *c, int side, SSL *ssl, bool server);
bool conn_tls_ready(const struct conn *c, int side);
const char *conn_tls_error(const struct conn *c);   /* last TLS failure text, "" if none */

/* Dials the upstream (the target's upstream address, else the original
 * destination). 0 or -errno; the connection proceeds asynchronously. */
int conn_connect_upstream(struct conn *c);
/* "addr:port" of where conn_connect_upstream() dials (also kept in
 * c->upstream_desc). */
const char *conn_upstream_desc(struct conn *c);
/*
 * Stream mode: drops the upstream leg (its socket, TLS, unread input and
 * unsent output) and dials the upstream again, as conn_connect_upstream().
 * For a module whose upstream closed an idle keep-alive connection; the
 * module's on_upstream_data is called again when the new leg is up.
 * 0, -EALREADY while dialling, or -errno.
 */
int conn_redial_upstream(struct conn *c);
/*
 * Upstream session reuse (stream mode). conn_take_upstream() hands the
 * upstream socket and its TLS over to the caller, between messages only
 * (nothing buffered either way, nothing pending in TLS): -EBUSY otherwise.
 * The connection then goes on without an upstream. conn_adopt_upstream()
 * gives a connection that has not dialled an established upstream (desc
 * names it for audit; born_ms: when it was first connected); the module's
 * on_upstream_data is called as bytes come, never as "connected". On
 * failure the caller still owns fd and ssl.
 */
int conn_take_upstream(struct conn *c, int *fd, SSL **ssl, uint64_t *born_ms);
int conn_adopt_upstream(struct conn *c, int fd, SSL *ssl, const char *desc, uint64_t born_ms);
/* Switches to plain relaying of everything buffered and to come. */
void conn_relay(struct conn *c);
/* Refuses: audit is the caller's; closes the agent side with a reset. */
void conn_refuse(struct conn *c);

const uint8_t *conn_agent_buf(struct conn *c, uint32_t *len);
/* Reads what the agent has sent so far into the upstream buffer (bounded by
 * CONN_BUF). Returns bytes now buffered, 0 at EOF with nothing buffered, -EAGAIN, or -errno. */
int conn_agent_fill(struct conn *c);
/* The same for what the upstream sent (before conn_relay()): its buffer,
 * and reading into it. */
const uint8_t *conn_upstream_buf(struct conn *c, uint32_t *len);
int conn_upstream_fill(struct conn *c);
/* Before conn_relay(): sends up to n bytes buffered in direction d (DIR_UP:
 * agent bytes to the upstream, DIR_DOWN: upstream bytes to the agent) and
 * consumes them. Returns how many of the n are still to send (the socket
 * would block: call again on the next event), or -errno. */
int conn_push(struct conn *c, int d, uint32_t n);

/* Event entry points used by the worker loop. */
void conn_on_event(struct conn_end *e, uint32_t events);
void conn_deadline(struct conn *c);   /* c->deadline_ms passed */
/* Every 200 ms, between events: buffers bigger than CONN_BUF that hold
 * nothing are freed (they grow again from CONN_BUF when needed), so idle
 * connections do not keep what one burst made them grow to. */
void conn_trim(struct conn *c);
void conn_free(struct conn *c);
void conn_close(struct conn *c, bool reset);

#endif
