/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "conn.h"
#include "enforcer.h"
#include "local_ca.h"
#include "loop.h"
#include "proto.h"
#include "recording.h"
#include "util.h"

static int ensure_buf(struct conn *c, int d)
{
	if (!c->buf[d]) {
		c->buf[d] = worker_buf_get(c->w);
		if (!c->buf[d])
			return -ENOMEM;
	}
	return 0;
}

/* The bytes buffered in direction d, not yet consumed. */
static const uint8_t *held(struct conn *c, int d, uint32_t *len)
{
	*len = c->len[d] - c->off[d];
	return c->buf[d] ? c->buf[d] + c->off[d] : NULL;
}

/* Reads what the source of direction d has sent into its buffer (bounded by
 * CONN_BUF), recording it. Bytes now buffered, 0 at EOF with nothing
 * buffered, -EAGAIN, or -errno. */
static int fill(struct conn *c, int d)
{
	int fd = d == DIR_UP ? c->agent.fd : c->up.fd;
	int err = ensure_buf(c, d);

	if (err)
		return err;
	while (c->len[d] < CONN_BUF && !c->eof[d]) {
		ssize_t n = recv(fd, c->buf[d] + c->len[d], CONN_BUF - c->len[d], 0);

		if (n > 0) {
			rec_relay(&c->rec, c, d, c->buf[d] + c->len[d], n);
			c->len[d] += n;
			continue;
		}
		if (n == 0) {
			c->eof[d] = true;
			break;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN)
			break;
		return -errno;
	}
	if (c->len[d] > c->off[d])
		return c->len[d] - c->off[d];
	return c->eof[d] ? 0 : -EAGAIN;
}

const uint8_t *conn_agent_buf(struct conn *c, uint32_t *len)
{
	return held(c, DIR_UP, len);
}

int conn_agent_fill(struct conn *c)
{
	return fill(c, DIR_UP);
}

const uint8_t *conn_upstream_buf(struct conn *c, uint32_t *len)
{
	return held(c, DIR_DOWN, len);
}

int conn_upstream_fill(struct conn *c)
{
	return fill(c, DIR_DOWN);
}

int conn_push(struct conn *c, int d, uint32_t n)
{
	int dst = d == DIR_UP ? c->up.fd : c->agent.fd;

	if (n > c->len[d] - c->off[d])
		n = c->len[d] - c->off[d];
	while (n) {
		ssize_t w = send(dst, c->buf[d] + c->off[d], n, MSG_NOSIGNAL);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN ? (int)n : -errno;
		}
		c->off[d] += w;
		c->bytes[d] += w;
		n -= w;
	}
	if (c->off[d] == c->len[d])
		c->off[d] = c->len[d] = 0;
	return 0;
}

/* Where conn_connect_upstream() dials: the target's upstream address,
 * else the original destination. */
static void upstream_addr(const struct conn *c, const uint8_t **addr, uint16_t *port)
{
	const struct policy_target *t = c->target_idx >= 0 ? &c->policy->targets[c->target_idx] : NULL;

	*addr = c->pair.orig_addr;
	*port = c->pair.orig_port;
	if (t && t->upstream.has_address && t->upstream.address.kind == ADDR_IP) {
		*addr = t->upstream.address.addr;
		*port = t->upstream.address.port;
	}
}

const char *conn_upstream_desc(struct conn *c)
{
	const uint8_t *addr;
	uint16_t port;

	upstream_addr(c, &addr, &port);
	addr_str(addr, c->upstream_desc, sizeof(c->upstream_desc) - 8);
	snprintf(c->upstream_desc + strlen(c->upstream_desc), 8, ":%u", port);
	return c->upstream_desc;
}

int conn_connect_upstream(struct conn *c)
{
	struct sockaddr_storage ss;
	const uint8_t *addr;
	uint16_t port;
	socklen_t len;
	int one = 1, fd;

	upstream_addr(c, &addr, &port);
	len = addr_to_sockaddr(addr, port, &ss);
	conn_upstream_desc(c);

	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&ss, len) && errno != EINPROGRESS) {
		int err = -errno;

		close(fd);
		return err;
	}
	c->up.fd = fd;
	c->connecting = true;
	c->deadline_ms = now_ns_mono() / 1000000ull + CONN_CONNECT_TIMEOUT_MS;
	return worker_watch(c->w, &c->up, EPOLLIN | EPOLLOUT | EPOLLRDHUP);
}

void conn_close(struct conn *c, bool reset)
{
	if (c->closing)
		return;
	c->closing = true;
	/* A graceful end says so in TLS too (close_notify, once: the fd closes
	 * next). A connection-delimited answer (Connection: close, HTTP/1.0)
	 * ended by a bare FIN could not be told from a cut one (review, stop 36). */
	for (int s = 0; !reset && s < 2; s++) {
		struct conn_side *sd = &c->side[s];

		if (sd->ssl && sd->tls_ready && !sd->shut && !sd->shut_bare && (s == SIDE_AGENT ? c->agent.fd : c->up.fd) >= 0) {
			SSL_shutdown(sd->ssl);
			ERR_clear_error();   /* a full socket: the alert is lost, nothing else */
		}
	}
	if (reset && c->agent.fd >= 0) {
		struct linger lg = { .l_onoff = 1, .l_linger = 0 };

		setsockopt(c->agent.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	if (c->agent.fd >= 0)
		close(c->agent.fd);
	if (c->up.fd >= 0)
		close(c->up.fd);
	c->agent.fd = c->up.fd = -1;
	worker_retire(c->w, c);
}

void conn_refuse(struct conn *c)
{
	conn_close(c, true);
}

/* Stream buffers' capacity, per worker, for status (stream_buffer_bytes). */
static void cap_note(struct conn *c, size_t before, size_t after)
{
	if (c->w && before != after)
		__atomic_fetch_add(&c->w->buf_bytes, after - before, __ATOMIC_RELAXED);   /* wraps for less */
}

static void wipe_out(struct conn_side *sd);

void conn_free(struct conn *c)
{
	if (!c)
		return;
	if (c->ops && c->ops->release)
		c->ops->release(c);
	if (c->agent_idx >= 0 && E)
		atomic_fetch_sub(&E->agents[c->agent_idx].active, 1);
	if (c->costly_ns && c->agent_idx >= 0 && c->policy && E)
		enforcer_mask_spent(c->policy, c->agent_idx, c->costly_ns);   /* the last part of a ms */
	rec_close(c->rec);
	worker_buf_put(c->w, c->buf[0]);
	worker_buf_put(c->w, c->buf[1]);
	for (int s = 0; s < 2; s++) {
		wipe_out(&c->side[s]);
		SSL_free(c->side[s].ssl);
		cap_note(c, (size_t)c->side[s].in_cap + c->side[s].out_cap, 0);
		free(c->side[s].in);
		free(c->side[s].out);
	}
	free(c);
}

/*
 * Moves bytes in direction d until the source would block, the destination
 * would block, or the source reached EOF (then the destination is shut down
 * for writing once everything buffered is written). 0 or -errno.
 */
static int pump(struct conn *c, int d)
{
	int src = d == DIR_UP ? c->agent.fd : c->up.fd;
	int dst = d == DIR_UP ? c->up.fd : c->agent.fd;
	struct conn_side *sd = &c->side[d == DIR_UP ? SIDE_AGENT : SIDE_UP];
	int err = ensure_buf(c, d);

	if (err)
		return err;
	for (;;) {
		while (c->len[d] > c->off[d]) {
			ssize_t n = send(dst, c->buf[d] + c->off[d], c->len[d] - c->off[d], MSG_NOSIGNAL);

			if (n < 0) {
				if (errno == EINTR)
					continue;
				if (errno == EPIPE || errno == ECONNRESET) {
					/* The destination is gone: this direction is over,
					 * but what the other one still carries (an early
					 * answer, say) is delivered before closing. */
					c->len[d] = c->off[d] = 0;
					c->eof[d] = c->shut[d] = true;
					shutdown(src, SHUT_RD);
					return 0;
				}
				return errno == EAGAIN ? 0 : -errno;
			}
			c->off[d] += n;
			c->bytes[d] += n;
		}
		c->len[d] = c->off[d] = 0;
		if (c->eof[d]) {
			/* The other direction is over too: close() will send the
			 * FIN, no shutdown() needed. */
			if (!c->shut[d] && !(c->eof[!d] && c->len[!d] == c->off[!d]))
				shutdown(dst, SHUT_WR);
			c->shut[d] = true;
			return 0;
		}
		/* Emptied by the last read, and no event on src since (every
		 * event is a pass for both directions): no read that would
		 * only say EAGAIN (pgbench -S through a tcp target: 5.5 reads
		 * a transaction, 2 of them with data). */
		if (sd->drained)
			return 0;
		ssize_t n = recv(src, c->buf[d], CONN_BUF, 0);

		if (n > 0) {
			rec_relay(&c->rec, c, d, c->buf[d], n);
			c->len[d] = n;
			/* A short read emptied the receive queue, unless the
			 * peer also closed (read on for the EOF: no new edge
			 * will come for it). Urgent data also stops a read
			 * short; a peer sending it only stalls its own
			 * connection, as in stream mode. */
			if ((size_t)n < CONN_BUF && !sd->hup)
				sd->drained = true;
			continue;
		}
		if (n == 0) {
			c->eof[d] = true;
			continue;
		}
		if (errno == EINTR)
			continue;
		return errno == EAGAIN ? 0 : -errno;
	}
}

bool conn_parse_may(void *conn, char *why, size_t whylen)
{
	struct conn *c = conn;

	return enforcer_parse_may(c->policy, c->agent_idx, why, whylen);
}

void conn_parse_spent(void *conn, uint64_t cpu_ns)
{
	struct conn *c = conn;

	enforcer_parse_spent(c->policy, c->agent_idx, cpu_ns);
}

void conn_ca_asker(struct conn *c, struct local_ca_asker *out)
{
	*out = (struct local_ca_asker){ .may = conn_parse_may, .spent = conn_parse_spent, .arg = c, .tag = c->agent_idx };
}

void conn_relay(struct conn *c)
{
	c->relaying = true;
	if (!c->connecting)
		c->deadline_ms = 0;   /* decided (upstream_connected) */
}

static void relay(struct conn *c)
{
	int err = pump(c, DIR_UP);

	if (!err)
		err = pump(c, DIR_DOWN);
	if (err) {
		enforcer_conn_closed(c, strerror(-err));
		conn_close(c, true);
		return;
	}
	if (c->shut[DIR_UP] && c->shut[DIR_DOWN]) {
		enforcer_conn_closed(c, NULL);
		conn_close(c, false);
	}
}

/* ---- stream mode ------------------------------------------------------- */

/*
 * The stream engine: one pass moves every byte it can (TLS handshakes,
 * queued output, input), calls the module when a side has news, and repeats
 * until nothing moves. Sockets are edge-triggered, so every read and write
 * goes on until EAGAIN (or a full buffer, or backpressure: see conn.h).
 */

static const char *tls_errtext(struct conn *c, const char *what)
{
	unsigned long e = ERR_get_error();
	char buf[120];

	if (e)
		ERR_error_string_n(e, buf, sizeof(buf));
	else
		snprintf(buf, sizeof(buf), "%s", errno ? strerror(errno) : "connection closed");
	ERR_clear_error();
	snprintf(c->tls_err, sizeof(c->tls_err), "%s: %s", what, buf);
	return c->tls_err;
}

int conn_stream(struct conn *c)
{
	c->streaming = true;
	for (int s = 0; s < 2; s++)
		if (!c->side[s].in_max)
			c->side[s].in_max = CONN_IN_MAX;
	return 0;
}

const uint8_t *conn_in(struct conn *c, int side, uint32_t *len)
{
	struct conn_side *sd = &c->side[side];

	*len = sd->in_len - sd->in_off;
	return sd->in ? sd->in + sd->in_off : NULL;
}

void conn_in_consume(struct conn *c, int side, uint32_t n)
{
	struct conn_side *sd = &c->side[side];

	if (n > sd->in_len - sd->in_off)
		n = sd->in_len - sd->in_off;
	sd->in_off += n;
	if (sd->in_off == sd->in_len)
		sd->in_off = sd->in_len = 0;
}

bool conn_in_eof(const struct conn *c, int side)
{
	return c->side[side].in_eof;
}

bool conn_in_eof_bare(const struct conn *c, int side)
{
	return c->side[side].in_eof_bare;
}

int conn_in_reserve(struct conn *c, int side, uint32_t max)
{
	if (max > CONN_IN_LIMIT)
		return -EMSGSIZE;
	if (max > c->side[side].in_max)
		c->side[side].in_max = max;
	return 0;
}

/*
 * A reservation is for one big message: once the module is done with it,
 * side's bound goes back to CONN_IN_MAX and its buffer to the smallest
 * that holds what is left (none when empty). Without this, a connection
 * that once carried a 16 MiB message kept 16 MiB until it closed (256
 * connections: 4 GiB). While more than CONN_IN_MAX is buffered, nothing
 * changes.
 */
static void set_lowat(struct conn *c, int side, int lowat);

void conn_in_release(struct conn *c, int side)
{
	struct conn_side *sd = &c->side[side];
	uint32_t have = sd->in_len - sd->in_off, cap = CONN_BUF;
	uint8_t *nb;

	if (sd->lowat > 1)
		set_lowat(c, side, 1);
	if ((sd->in_max <= CONN_IN_MAX && sd->in_cap <= CONN_IN_MAX) || have > CONN_IN_MAX)
		return;
	sd->in_max = CONN_IN_MAX;
	if (sd->in_cap <= CONN_IN_MAX)
		return;
	if (!have) {
		cap_note(c, sd->in_cap, 0);
		free(sd->in);
		sd->in = NULL;
		sd->in_cap = sd->in_len = sd->in_off = 0;
		return;
	}
	memmove(sd->in, sd->in + sd->in_off, have);
	sd->in_len = have;
	sd->in_off = 0;
	while (cap < have)
		cap *= 2;
	if ((nb = realloc(sd->in, cap))) {   /* else it keeps the bigger one */
		cap_note(c, sd->in_cap, cap);
		sd->in = nb;
		sd->in_cap = cap;
	}
}

/* Grows buf (cap) to hold need bytes, doubling, never beyond limit. */
static int grow(uint8_t **buf, uint32_t *cap, size_t need, size_t limit)
{
	size_t ncap = *cap ? *cap : CONN_BUF;
	uint8_t *nb;

	if (need > limit)
		return -ENOBUFS;
	while (ncap < need)
		ncap *= 2;
	if (ncap > limit)
		ncap = limit;
	if (ncap == *cap)
		return 0;
	nb = realloc(*buf, ncap);
	if (!nb)
		return -ENOMEM;
	*buf = nb;
	*cap = ncap;
	return 0;
}

static int side_fd(struct conn *c, int side);

/* SO_RCVLOWAT on side's socket; a failure only costs wakeups (it is a hint). */
static void set_lowat(struct conn *c, int side, int lowat)
{
	struct conn_side *sd = &c->side[side];
	int fd = side_fd(c, side);

	if (fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof(lowat)) == 0)
		sd->lowat = lowat;
	else
		sd->lowat = 0;
}

void conn_in_expect(struct conn *c, int side, uint32_t total)
{
	struct conn_side *sd = &c->side[side];
	uint32_t have = sd->in_len - sd->in_off;
	int lowat = 1;

	if (sd->ssl || sd->in_eof)
		return;
	if (total > have && total <= sd->in_max) {
		if (sd->in_cap - sd->in_off < total && sd->in_off) {
			memmove(sd->in, sd->in + sd->in_off, have);
			sd->in_len = have;
			sd->in_off = 0;
		}
		if (sd->in_cap < total) {
			uint32_t was = sd->in_cap;
			int err = grow(&sd->in, &sd->in_cap, total, sd->in_max);

			cap_note(c, was, sd->in_cap);
			if (err)
				return;   /* read as it comes: the module sees the bound */
		}
		/* the kernel caps it at half the most a receive buffer may
		 * hold (tcp_rmem[2] / 2), and wakes at that */
		lowat = total - have > INT_MAX ? INT_MAX : (int)(total - have);
	}
	if (lowat != (sd->lowat ? sd->lowat : 1))
		set_lowat(c, side, lowat);
}

static bool side_live(struct conn *c, int side);
static int side_fd(struct conn *c, int side);

void conn_record(struct conn *c, int side, const void *buf, size_t len)
{
	if (len)
		rec_relay(&c->rec, c, side == SIDE_UP ? DIR_UP : DIR_DOWN, buf, len);
}

static int queue_as(struct conn *c, int side, const void *buf, size_t len, bool secret);

static int queue(struct conn *c, int side, const void *buf, size_t len)
{
	return queue_as(c, side, buf, len, false);
}

int conn_send(struct conn *c, int side, const void *buf, size_t len)
{
	if (c->rec_side[side])
		conn_record(c, side, buf, len);
	return queue(c, side, buf, len);
}

int conn_send_secret(struct conn *c, int side, const void *buf, size_t len)
{
	return queue_as(c, side, buf, len, true);
}

/* A queue that held a secret: its bytes wiped (before a free, or once written). */
static void wipe_out(struct conn_side *sd)
{
	if (sd->secret && sd->out)
		OPENSSL_cleanse(sd->out, sd->out_hw);
	sd->secret = false;
	sd->out_hw = 0;
}

/* side's output queue emptied (all written, or dropped): wiped if it held a secret */
static void out_reset(struct conn_side *sd)
{
	wipe_out(sd);
	sd->out_off = sd->out_len = 0;
}

/* grow() for side's output queue; one holding a secret is copied, not
 * realloc()ed: the old block would go back to the heap with it. */
static int grow_out(struct conn_side *sd, size_t need, size_t limit)
{
	uint8_t *nb = NULL;
	uint32_t ncap = 0;
	int err;

	if (!sd->secret)
		return grow(&sd->out, &sd->out_cap, need, limit);
	if (need <= sd->out_cap)
		return 0;
	if ((err = grow(&nb, &ncap, need, limit)))
		return err;
	if (sd->out_len)
		memcpy(nb, sd->out, sd->out_len);
	OPENSSL_cleanse(sd->out, sd->out_hw);
	free(sd->out);
	sd->out = nb;
	sd->out_cap = ncap;
	return 0;
}

static int queue_as(struct conn *c, int side, const void *buf, size_t len, bool secret)
{
	struct conn_side *sd = &c->side[side];
	int err;

	if (!len)
		return 0;
	if (sd->want_shut || c->closing)
		return -EPIPE;
	if (sd->wr_dead)
		return 0;   /* dropped: see flush_out() */
	if (sd->out_off && sd->out_off == sd->out_len)
		out_reset(sd);
	if (secret)   /* after the reset above, which ends an earlier secret's wipe */
		sd->secret = true;
	if (sd->out_off > sd->out_cap / 2) {   /* reclaim the written head */
		memmove(sd->out, sd->out + sd->out_off, sd->out_len - sd->out_off);
		sd->out_len -= sd->out_off;
		sd->out_off = 0;
	}
	if ((size_t)sd->out_len - sd->out_off + len > CONN_OUT_MAX)
		return -ENOBUFS;
	uint32_t was = sd->out_cap;

	err = grow_out(sd, (size_t)sd->out_len + len, CONN_OUT_MAX + CONN_OUT_MAX);
	cap_note(c, was, sd->out_cap);
	if (err)
		return err;
	memcpy(sd->out + sd->out_len, buf, len);
	sd->out_len += len;
	if (sd->out_len > sd->out_hw)
		sd->out_hw = sd->out_len;
	return 0;
}

/*
 * As conn_send(), but the bytes go to the socket now when they can: what is
 * queued for side and buf are written with one sendmsg(), and only what the
 * socket did not take is copied into the queue. Saves a copy of a big
 * answer (a masked 64 KiB body). TLS legs, a leg still dialling, and a
 * socket error all fall back to conn_send() (an error then surfaces from
 * the next flush, as it would have).
 */
int conn_send_now(struct conn *c, int side, const void *buf, size_t len)
{
	struct conn_side *sd = &c->side[side];
	size_t queued = sd->out_len - sd->out_off, sent;
	struct iovec iov[2];
	struct msghdr mh = { .msg_iov = iov };
	ssize_t n;

	if (c->rec_side[side])
		conn_record(c, side, buf, len);
	if (!len || sd->want_shut || sd->wr_dead || c->closing || sd->ssl || !side_live(c, side))
		return queue(c, side, buf, len);
	if (queued)
		iov[mh.msg_iovlen++] = (struct iovec){ sd->out + sd->out_off, queued };
	iov[mh.msg_iovlen++] = (struct iovec){ (void *)buf, len };
	do
		n = sendmsg(side_fd(c, side), &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n <= 0)
		return queue(c, side, buf, len);
	c->tx[side] += n;
	c->bytes[side == SIDE_UP ? DIR_UP : DIR_DOWN] += n;
	if ((size_t)n < queued) {
		sd->out_off += n;
		return queue(c, side, buf, len);
	}
	out_reset(sd);
	sent = (size_t)n - queued;
	return queue(c, side, (const uint8_t *)buf + sent, len - sent);
}

void conn_flush(struct conn *c, int side)
{
	struct conn_side *sd = &c->side[side];
	size_t queued = sd->out_len - sd->out_off;
	ssize_t n;

	if (!queued || sd->want_shut || c->closing || sd->ssl || !side_live(c, side))
		return;
	do
		n = send(side_fd(c, side), sd->out + sd->out_off, queued, MSG_NOSIGNAL | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n <= 0)
		return;   /* the next flush meets the error, or waits for room */
	c->tx[side] += n;
	c->bytes[side == SIDE_UP ? DIR_UP : DIR_DOWN] += n;
	sd->out_off += n;
	if (sd->out_off == sd->out_len)
		out_reset(sd);
}

void conn_want_idle(struct conn *c)
{
	c->idle_pending = true;
	if (!c->on_idle_list) {
		c->on_idle_list = true;
		c->idle_next = c->w->idle;
		c->w->idle = c;
	}
}

void conn_idle_now(struct conn *c)
{
	if (!c->idle_pending)
		return;
	c->idle_pending = false;
	if (c->ops && c->ops->idle && c->proto_state)
		c->ops->idle(c);
}

uint32_t conn_out_pending(const struct conn *c, int side)
{
	return c->side[side].out_len - c->side[side].out_off;
}

void conn_shutdown(struct conn *c, int side)
{
	c->side[side].want_shut = true;
}

void conn_shutdown_bare(struct conn *c, int side)
{
	c->side[side].want_shut = c->side[side].shut_bare = true;
}

void conn_finish(struct conn *c)
{
	c->finishing = true;
}

int conn_tls(struct conn *c, int side, SSL *ssl, bool server)
{
	struct conn_side *sd = &c->side[side];

	if (!ssl)
		return -EINVAL;
	if (sd->ssl) {
		SSL_free(ssl);   /* owned from the call on, an error included */
		return -EINVAL;
	}
	if (sd->in_len > sd->in_off) {
		SSL_free(ssl);
		return -EPROTO;   /* bytes sent ahead of the handshake */
	}
	sd->ssl = ssl;
	sd->tls_server = server;
	sd->tls_pending = true;
	/* RELEASE_BUFFERS: an idle TLS leg does not keep its 34 KiB of record buffers */
	SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
			  SSL_MODE_RELEASE_BUFFERS);
	return 0;
}

bool conn_tls_ready(const struct conn *c, int side)
{
	return c->side[side].tls_ready;
}

const char *conn_tls_error(const struct conn *c)
{
	return c->tls_err;
}

static int side_fd(struct conn *c, int side)
{
	return side == SIDE_AGENT ? c->agent.fd : c->up.fd;
}

/* Handshake progress: 1 done now, 0 waiting for the socket, -errno. */
static int tls_step(struct conn *c, int side)
{
	struct conn_side *sd = &c->side[side];
	int r, e;

	if (sd->tls_pending) {
		if (sd->out_len > sd->out_off)
			return 0;           /* the clear-text answer goes first */
		if (sd->in_len > sd->in_off)
			return -EPROTO;
		sd->tls_pending = false;
		/* One read takes what the socket holds, not a record header
		 * and then its body. What it reads ahead waits in the SSL
		 * object, where no epoll edge reports it: fill_in() reads
		 * until WANT_READ, and a finished handshake clears drained. */
		SSL_set_read_ahead(sd->ssl, 1);
		if (!SSL_set_fd(sd->ssl, side_fd(c, side)))
			return -ENOMEM;
		if (sd->tls_server)
			SSL_set_accept_state(sd->ssl);
		else
			SSL_set_connect_state(sd->ssl);
	}
	ERR_clear_error();
	errno = 0;
	r = SSL_do_handshake(sd->ssl);
	if (r == 1) {
		sd->tls_ready = true;
		/* The handshake's last read may have taken application data
		 * too (read ahead): it waits in the SSL object, not in the
		 * socket, and no epoll edge will say so. fill_in() must ask. */
		sd->drained = false;
		return 1;
	}
	e = SSL_get_error(sd->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
		return 0;
	tls_errtext(c, side == SIDE_AGENT ? "agent TLS handshake" : "upstream TLS handshake");
	if (!sd->tls_server) {
		long v = SSL_get_verify_result(sd->ssl);

		if (v != X509_V_OK)
			snprintf(c->tls_err, sizeof(c->tls_err), "upstream TLS handshake: certificate verify failed: %s",
				 X509_verify_cert_error_string(v));
	}
	return -EPROTO;
}

/* Writes queued output; 0 (all written or would block) or -errno. */
static int flush_out(struct conn *c, int side, bool *moved)
{
	struct conn_side *sd = &c->side[side];
	int fd = side_fd(c, side);

	while (sd->out_len > sd->out_off) {
		size_t len = sd->out_len - sd->out_off;
		ssize_t n;

		if (sd->ssl && !sd->tls_pending) {
			size_t w = 0;
			int r, e;

			ERR_clear_error();
			errno = 0;
			r = SSL_write_ex(sd->ssl, sd->out + sd->out_off, len, &w);
			if (r <= 0) {
				int werr = errno;

				e = SSL_get_error(sd->ssl, r);
				if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
					return 0;
				/* The same early answer over TLS (below): the write
				 * failed in the socket, not in TLS, and nothing is
				 * written on this SSL again (no close_notify either:
				 * shut), while its records already received are read
				 * on. OpenSSL keeps reading after a failed write, as
				 * the integration test shows; if it did not, the read
				 * fails and the connection ends as it did before. */
				if (e == SSL_ERROR_SYSCALL && (werr == EPIPE || werr == ECONNRESET) &&
				    side == SIDE_UP && !sd->in_eof) {
					out_reset(sd);
					sd->wr_dead = sd->shut = true;
					*moved = true;
					return 0;
				}
				tls_errtext(c, "TLS write");
				return -EPIPE;
			}
			n = w;
		} else {
			n = send(fd, sd->out + sd->out_off, len, MSG_NOSIGNAL);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				if (errno == EAGAIN)
					return 0;
				/* The upstream answered and closed while a request
				 * was still going up (a 413 to an upload, an error
				 * before a backend exits): its answer may wait in the
				 * socket before the reset. This leg takes nothing more
				 * (what is queued or comes is dropped), and reading it
				 * goes on: the module delivers the answer, and the
				 * read's EOF or reset ends the connection, as pump()
				 * does for the tcp relay. */
				if ((errno == EPIPE || errno == ECONNRESET) && side == SIDE_UP && !sd->in_eof) {
					out_reset(sd);
					sd->wr_dead = sd->shut = true;
					*moved = true;
					return 0;
				}
				return -errno;
			}
		}
		sd->out_off += n;
		c->tx[side] += n;
		c->bytes[side == SIDE_UP ? DIR_UP : DIR_DOWN] += n;
		*moved = true;
	}
	out_reset(sd);
	if (sd->out_cap > CONN_OUT_HIGH) {   /* a big answer's queue does not stay with the connection */
		cap_note(c, sd->out_cap, 0);
		free(sd->out);
		sd->out = NULL;
		sd->out_cap = 0;
	}
	if (sd->want_shut && !sd->shut) {
		if (sd->ssl && sd->tls_ready && !sd->shut_bare)
			SSL_shutdown(sd->ssl);   /* close_notify; no wait for the peer's */
		shutdown(fd, SHUT_WR);
		sd->shut = true;
		*moved = true;
	}
	return 0;
}

/* Reads what the socket has into side's input. 1 when something new (bytes
 * or EOF) arrived, 0 if not, -errno. */
static int fill_in(struct conn *c, int side)
{
	struct conn_side *sd = &c->side[side];
	int fd = side_fd(c, side), got = 0, err;

	/* A read that failed after others brought bytes in: those went to the
	 * module first (an upstream's answer, then its reset: review, stop 36,
	 * the answer was thrown away with the connection). */
	if (sd->in_err) {
		err = sd->in_err;
		sd->in_err = 0;
		return err;
	}
	/* Nothing new since the socket was last drained: no recv that can only
	 * say EAGAIN (edge-triggered epoll reports every arrival, which clears
	 * the flag in conn_on_event). */
	if (sd->drained)
		return 0;
	while (!sd->in_eof) {
		if (sd->in_off && sd->in_len == sd->in_cap) {
			memmove(sd->in, sd->in + sd->in_off, sd->in_len - sd->in_off);
			sd->in_len -= sd->in_off;
			sd->in_off = 0;
		}
		if (sd->in_len == sd->in_cap) {
			if (sd->in_cap >= sd->in_max)
				break;   /* full: the module must consume first */
			uint32_t was = sd->in_cap;

			err = grow(&sd->in, &sd->in_cap, (size_t)sd->in_cap + 1, sd->in_max);
			cap_note(c, was, sd->in_cap);
			if (err)
				return err;
		}
		size_t room = sd->in_cap - sd->in_len;
		ssize_t n;

		if (sd->ssl) {
			size_t r = 0;
			int ok, e;

			ERR_clear_error();
			errno = 0;
			ok = SSL_read_ex(sd->ssl, sd->in + sd->in_len, room, &r);
			if (ok <= 0) {
				e = SSL_get_error(sd->ssl, ok);
				if (e == SSL_ERROR_WANT_READ) {
					sd->drained = true;
					break;
				}
				if (e == SSL_ERROR_WANT_WRITE)
					break;
				if (e == SSL_ERROR_ZERO_RETURN) {
					sd->in_eof = true;
					got = 1;
					break;
				}
				/*
				 * A client leg whose server closed without
				 * close_notify (many do, idle keep-alive legs
				 * too) ends as a FIN does, marked: a module
				 * reading an answer that only the close ends
				 * must not take it for whole then (found by
				 * review, stop 66). Its context must not set
				 * SSL_OP_IGNORE_UNEXPECTED_EOF, which makes the
				 * two look alike.
				 */
				if (e == SSL_ERROR_SSL && !sd->tls_server &&
				    ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
					ERR_clear_error();
					sd->in_eof = sd->in_eof_bare = true;
					got = 1;
					break;
				}
				tls_errtext(c, "TLS read");
				if (got) {
					sd->in_err = -EPROTO;
					break;
				}
				return -EPROTO;
			}
			n = r;
		} else {
			n = recv(fd, sd->in + sd->in_len, room, 0);
			if (n == 0) {
				sd->in_eof = true;
				got = 1;
				break;
			}
			if (n < 0) {
				if (errno == EINTR)
					continue;
				if (errno == EAGAIN) {
					sd->drained = true;
					break;
				}
				if (got) {
					sd->in_err = -errno;
					break;
				}
				return -errno;
			}
		}
		sd->in_len += n;
		c->rx[side] += n;
		got = 1;
		/* A short plain read emptied the receive queue, unless the peer
		 * also closed (then read on to see the EOF now: no new edge will
		 * come for it). Urgent data also stops a read short; an agent
		 * sending it only stalls its own connection. */
		if (!sd->ssl && (size_t)n < room && !sd->hup) {
			sd->drained = true;
			break;
		}
	}
	return got;
}

#define COSTLY_STEP_NS 1000000ull   /* the agent's budget is told per ms spent, not per call */

/* c's upstream is not read for wait ms (0: nothing); the worker's loop resumes it. */
static void hold(struct conn *c, uint64_t wait)
{
	if (!wait)
		return;
	c->hold_ms = now_ns_mono() / 1000000ull + wait;
	if (c->w && (!c->w->hold_next_ms || c->hold_ms < c->w->hold_next_ms))
		c->w->hold_next_ms = c->hold_ms;
}

/* ns more spent masking c's answers; past the agent's budget, its upstream waits. */
static void charge(struct conn *c, uint64_t ns)
{
	uint64_t wait;

	c->costly_ns += ns;
	if (c->costly_ns < COSTLY_STEP_NS || c->agent_idx < 0 || !c->policy)
		return;
	wait = enforcer_mask_spent(c->policy, c->agent_idx, c->costly_ns);
	c->costly_ns = 0;
	hold(c, wait);
}

static int call_module(struct conn *c, int side)
{
	int (*fn)(struct conn *) = side == SIDE_AGENT ? c->ops->on_agent_data : c->ops->on_upstream_data;
	uint64_t t0;
	int err;

	if (!fn)
		return 0;
	if (side == SIDE_AGENT || !c->costly)
		return fn(c);
	/* Wall time, not the thread's CPU time: a clock read from the vDSO
	 * costs tens of ns, a CPU-time read a system call; and the time a
	 * worker is busy with one agent is the time others wait for it. */
	t0 = now_ns_mono();
	err = fn(c);
	charge(c, now_ns_mono() - t0);
	return err;
}

static bool backpressured(struct conn *c)
{
	return conn_out_pending(c, SIDE_AGENT) > CONN_OUT_HIGH || conn_out_pending(c, SIDE_UP) > CONN_OUT_HIGH;
}

static bool side_live(struct conn *c, int side)
{
	return side_fd(c, side) >= 0 && !(side == SIDE_UP && c->connecting);
}

static void stream_upstream_tls_failed(struct conn *c);

/* One stream-mode step after any socket event. Closes the connection on error. */
static void stream_drive(struct conn *c, bool up_connected)
{
	bool was_bp = backpressured(c);
	int err = 0;

	if (up_connected && (err = call_module(c, SIDE_UP)))
		goto fail;
	for (int round = 0; round < 32 && !c->closing; round++) {
		bool moved = false, news[2] = { false, false };

		for (int s = 0; s < 2; s++) {
			struct conn_side *sd = &c->side[s];

			if (!side_live(c, s))
				continue;
			if (sd->ssl && !sd->tls_ready) {
				err = tls_step(c, s);
				if (err < 0 && s == SIDE_UP && c->ops->on_upstream_tls_fail) {
					stream_upstream_tls_failed(c);
					return;
				}
				if (err < 0)
					goto fail;
				if (err == 0 && !sd->tls_pending)
					continue;   /* handshake waits for the socket */
				if (err == 1)
					news[s] = moved = true;
				err = 0;
			}
			uint32_t queued = conn_out_pending(c, s);

			if ((err = flush_out(c, s, &moved)))
				goto fail;
			/* Output drained: a module that held input back may go on. */
			if (queued && !conn_out_pending(c, s))
				for (int o = 0; o < 2; o++)
					if (c->side[o].in_len > c->side[o].in_off)
						news[o] = true;
			/* One that asked is told the agent's queue is empty (here or
			 * by a conn_flush() of its own). */
			if (s == SIDE_AGENT && c->want_drained && !conn_out_pending(c, s)) {
				c->want_drained = false;
				news[SIDE_AGENT] = true;
			}
		}
		if (c->finishing && !conn_out_pending(c, SIDE_AGENT)) {
			enforcer_conn_closed(c, NULL);
			conn_close(c, false);
			return;
		}
		bool bp = backpressured(c);

		if (was_bp && !bp) {    /* drained: the module may go on with what it left */
			news[SIDE_AGENT] = news[SIDE_UP] = true;
			moved = true;
		}
		was_bp = bp;
		for (int s = 0; s < 2 && !bp && !c->finishing; s++) {
			struct conn_side *sd = &c->side[s];

			if (!side_live(c, s) || (sd->ssl && !sd->tls_ready) || sd->tls_pending)
				continue;
			if (s == SIDE_UP && c->hold_ms) {   /* paced: the worker's loop resumes it */
				if (now_ns_mono() / 1000000ull < c->hold_ms)
					continue;
				c->hold_ms = 0;
			}
			/* An agent past its share waits on every connection whose
			 * answers are masked, not only the one that spent it: a
			 * new connection per answer would have gone unpaced. */
			if (s == SIDE_UP && c->costly && c->agent_idx >= 0 && c->policy) {
				hold(c, enforcer_mask_wait(c->policy, c->agent_idx));
				if (c->hold_ms)
					continue;
			}
			int r = fill_in(c, s);

			if (r < 0) {
				err = r;
				goto fail;
			}
			if (r)
				news[s] = moved = true;
		}
		for (int s = 0; s < 2 && !c->closing; s++) {
			struct conn_side *sd = &c->side[s];
			uint32_t before;

			if (!news[s])
				continue;
			before = sd->in_len - sd->in_off;
			c->in_waits[s] = false;
			if ((err = call_module(c, s)))
				goto fail;
			/* A full input buffer the module left untouched can never
			 * drain: the message is over the module's bound (unless the
			 * module waits on the other side to take more). */
			if (!c->finishing && !c->in_waits[s] && before && before == sd->in_len - sd->in_off &&
			    sd->in_len - sd->in_off >= sd->in_max && !backpressured(c)) {
				err = -EMSGSIZE;
				goto fail;
			}
		}
		if (c->closing)
			return;
		if (c->side[SIDE_AGENT].in_eof && c->side[SIDE_UP].in_eof && !conn_out_pending(c, SIDE_AGENT) &&
		    !conn_out_pending(c, SIDE_UP) && !c->finishing) {
			enforcer_conn_closed(c, NULL);
			conn_close(c, false);
			return;
		}
		if (!moved)
			return;
	}
	/* Still busy after many rounds: let other connections run, and have
	 * epoll report these sockets again (edge-triggered: re-arming makes a
	 * still-ready socket fire once more). */
	if (c->agent.fd >= 0)
		worker_rearm(c->w, &c->agent, EPOLLIN | EPOLLOUT | EPOLLRDHUP);
	if (c->up.fd >= 0)
		worker_rearm(c->w, &c->up, EPOLLIN | EPOLLOUT | EPOLLRDHUP);
	return;
fail:
	if (!c->closing) {
		enforcer_conn_closed(c, c->tls_err[0] ? c->tls_err : strerror(-err));
		conn_close(c, true);
	}
}

/* Dialling upstream failed: a stream module may answer the agent itself. */
static void stream_upstream_failed(struct conn *c, int err)
{
	if (c->up.fd >= 0) {
		close(c->up.fd);
		c->up.fd = -1;
	}
	c->connecting = false;
	c->deadline_ms = 0;
	if (c->ops->on_upstream_fail)
		c->ops->on_upstream_fail(c, err);
	if (!c->closing && c->finishing) {
		stream_drive(c, false);
		return;
	}
	if (!c->closing) {
		char why[160];

		snprintf(why, sizeof(why), "upstream %s: %s", c->upstream_desc, strerror(-err));
		enforcer_conn_closed(c, why);
		conn_close(c, true);
	}
}

/* The upstream TLS handshake failed: the stream module answers the agent
 * (an HTTP 502 saying why) instead of a reset; the agent's side goes on
 * without an upstream until the module ends the connection. */
static void stream_upstream_tls_failed(struct conn *c)
{
	if (c->up.fd >= 0) {
		close(c->up.fd);
		c->up.fd = -1;
	}
	c->ops->on_upstream_tls_fail(c);
	if (!c->closing)
		stream_drive(c, false);
}

int conn_redial_upstream(struct conn *c)
{
	struct conn_side *sd = &c->side[SIDE_UP];

	if (!c->streaming)
		return -EINVAL;
	if (c->connecting)
		return -EALREADY;
	if (c->up.fd >= 0)
		close(c->up.fd);   /* also leaves the epoll set */
	c->up.fd = -1;
	SSL_free(sd->ssl);
	sd->ssl = NULL;
	sd->in_len = sd->in_off = 0;
	out_reset(sd);
	sd->in_eof = sd->in_eof_bare = sd->want_shut = sd->shut = sd->shut_bare = sd->wr_dead = false;
	sd->tls_pending = sd->tls_ready = sd->tls_server = false;
	sd->drained = sd->hup = false;
	sd->in_err = 0;
	return conn_connect_upstream(c);
}

int conn_take_upstream(struct conn *c, int *fd, SSL **ssl, uint64_t *born_ms)
{
	struct conn_side *sd = &c->side[SIDE_UP];

	if (!c->streaming || c->connecting || c->closing || c->up.fd < 0 || sd->in_len > sd->in_off ||
	    sd->out_len > sd->out_off || sd->in_eof || sd->hup || sd->want_shut || sd->wr_dead || sd->tls_pending ||
	    (sd->ssl && (!sd->tls_ready || SSL_has_pending(sd->ssl))))
		return -EBUSY;
	worker_unwatch(c->w, c->up.fd);
	*fd = c->up.fd;
	*ssl = sd->ssl;
	*born_ms = c->up_born_ms;
	c->up.fd = -1;
	sd->ssl = NULL;
	sd->tls_ready = false;
	sd->in_eof = sd->shut = true;   /* nothing more from or to this side */
	return 0;
}

int conn_adopt_upstream(struct conn *c, int fd, SSL *ssl, const char *desc, uint64_t born_ms)
{
	struct conn_side *sd = &c->side[SIDE_UP];
	int err;

	if (!c->streaming || c->connecting || c->up.fd >= 0 || sd->ssl)
		return -EBUSY;
	c->up.fd = fd;
	if ((err = worker_watch(c->w, &c->up, EPOLLIN | EPOLLOUT | EPOLLRDHUP))) {
		c->up.fd = -1;   /* the caller still owns fd and ssl */
		return err;
	}
	sd->ssl = ssl;
	sd->tls_ready = ssl != NULL;
	sd->tls_pending = sd->in_eof = sd->in_eof_bare = sd->want_shut = sd->shut = sd->shut_bare = sd->drained =
		sd->hup = sd->wr_dead = false;
	out_reset(sd);
	sd->in_len = sd->in_off = 0;
	snprintf(c->upstream_desc, sizeof(c->upstream_desc), "%s", desc);
	c->up_born_ms = born_ms;
	/* connected means decided, as in upstream_connected(): the accept-time
	 * decision deadline must not end the session */
	c->deadline_ms = 0;
	c->deadline_why = NULL;
	return 0;
}

void conn_trim(struct conn *c)
{
	if (!c->streaming || c->closing)
		return;
	for (int i = 0; i < 2; i++) {
		struct conn_side *sd = &c->side[i];

		if (sd->in_len == sd->in_off && sd->in_cap > CONN_BUF && sd->in_max <= CONN_IN_MAX) {
			cap_note(c, sd->in_cap, 0);
			free(sd->in);
			sd->in = NULL;
			sd->in_cap = sd->in_len = sd->in_off = 0;
		}
		if (sd->out_len == sd->out_off && sd->out_cap > CONN_BUF) {
			wipe_out(sd);
			cap_note(c, sd->out_cap, 0);
			free(sd->out);
			sd->out = NULL;
			sd->out_cap = sd->out_len = sd->out_off = 0;
		}
	}
	if (c->ops && c->ops->trim && c->proto_state) {
		bool finishing = c->finishing;

		c->ops->trim(c);
		if (!finishing && c->finishing && !c->closing)
			stream_drive(c, false);   /* the module ended it: its answer goes out, then it closes */
	}
}

void conn_deadline(struct conn *c)
{
	c->deadline_ms = 0;
	if (c->streaming && c->connecting) {
		stream_upstream_failed(c, -ETIMEDOUT);
		return;
	}
	if (c->streaming && c->ops->on_deadline && c->ops->on_deadline(c)) {
		if (!c->closing)
			stream_drive(c, false);   /* writes the module's answer, then finishes */
		return;
	}
	enforcer_conn_closed(c, c->connecting ? "upstream connect timed out"
				: c->deadline_why ? c->deadline_why
					      : "no decision: the agent sent too little in time");
	conn_close(c, true);
}

static void upstream_connected(struct conn *c)
{
	int soerr = 0;
	socklen_t sl = sizeof(soerr);

	struct sockaddr_storage peer;
	socklen_t pl = sizeof(peer);

	if (getsockopt(c->up.fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0)
		soerr = errno;
	/* SO_ERROR says 0 while the handshake is still on too: an event meant
	 * for the fd a redial just closed (the new one has its number and its
	 * epoll data) would have taken the new connect as done, and with it
	 * its deadline (review, stop 36). Not connected yet: wait. */
	if (!soerr && getpeername(c->up.fd, (struct sockaddr *)&peer, &pl) != 0 && errno == ENOTCONN)
		return;
	if (soerr && c->streaming) {
		stream_upstream_failed(c, -soerr);
		return;
	}
	if (soerr) {
		char why[128];

		snprintf(why, sizeof(why), "upstream %s: %s", c->upstream_desc, strerror(soerr));
		enforcer_conn_closed(c, why);
		conn_close(c, true);
		return;
	}
	c->connecting = false;
	c->deadline_ms = 0;   /* connected means decided: no deadline while relaying */
	/* unless the module still decides once the upstream speaks (tls: the
	 * server's first message, then maybe the agent's second ClientHello):
	 * a server that accepts and stays silent held the connection and
	 * the agent's connection slot for ever (review, stop 36) */
	if (!c->streaming && !c->relaying && c->ops && c->ops->on_agent_data) {
		c->deadline_ms = now_ns_mono() / 1000000ull + AG_DECISION_TIMEOUT_MS;
		c->deadline_why = "no decision: the upstream or the agent sent too little in time";
	}
	c->up_born_ms = now_ns_mono() / 1000000ull;
}

void conn_resume(struct conn *c)
{
	c->hold_ms = 0;
	if (c->closing || !c->streaming)
		return;
	c->side[SIDE_UP].drained = false;   /* what came meanwhile was reported, not read */
	stream_drive(c, false);
	rec_sync(c->rec);
}

static void on_event(struct conn_end *e, uint32_t events);

void conn_on_event(struct conn_end *e, uint32_t events)
{
	struct conn *c = e->c;

	on_event(e, events);
	rec_sync(c->rec);   /* what this event carried, one write per direction */
}

static void on_event(struct conn_end *e, uint32_t events)
{
	struct conn *c = e->c;
	int err;

	if (c->closing)
		return;
	/* Kept before stream mode too: a module may enter it after the event
	 * that carried both the data and the FIN. */
	struct conn_side *sd = &c->side[e->is_agent ? SIDE_AGENT : SIDE_UP];

	if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		sd->drained = false;
	if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		sd->hup = true;
	if (!e->is_agent && c->connecting) {
		upstream_connected(c);
		if (c->closing || c->connecting)
			return;
		if (c->streaming) {
			stream_drive(c, true);
			return;
		}
	}
	if (c->streaming) {
		stream_drive(c, false);
		return;
	}
	if (c->relaying) {
		if (!c->connecting)
			relay(c);
		return;
	}
	/* The module is still deciding. */
	if (e->is_agent && c->ops->on_agent_data)
		err = c->ops->on_agent_data(c);
	else if (!e->is_agent && c->ops->on_upstream_data)
		err = c->ops->on_upstream_data(c);
	else
		err = 0;
	if (err && !c->closing) {
		enforcer_conn_closed(c, strerror(-err));
		conn_close(c, true);
		return;
	}
	if (!c->closing && c->relaying && !c->connecting)
		relay(c);
}
