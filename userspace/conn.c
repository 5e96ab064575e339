/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "enforcer.h"
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

const uint8_t *conn_agent_buf(struct conn *c, uint32_t *len)
{
	*len = c->len[DIR_UP] - c->off[DIR_UP];
	return c->buf[DIR_UP] ? c->buf[DIR_UP] + c->off[DIR_UP] : NULL;
}

int conn_agent_fill(struct conn *c)
{
	int err = ensure_buf(c, DIR_UP);

	if (err)
		return err;
	while (c->len[DIR_UP] < CONN_BUF && !c->eof[DIR_UP]) {
		ssize_t n = recv(c->agent.fd, c->buf[DIR_UP] + c->len[DIR_UP],
				 CONN_BUF - c->len[DIR_UP], 0);

		if (n > 0) {
			rec_relay(&c->rec, c, DIR_UP, c->buf[DIR_UP] + c->len[DIR_UP], n);
			c->len[DIR_UP] += n;
			continue;
		}
		if (n == 0) {
			c->eof[DIR_UP] = true;
			break;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN)
			break;
		return -errno;
	}
	if (c->len[DIR_UP] > c->off[DIR_UP])
		return c->len[DIR_UP] - c->off[DIR_UP];
	return c->eof[DIR_UP] ? 0 : -EAGAIN;
}

int conn_connect_upstream(struct conn *c)
{
	const struct policy_target *t = c->target_idx >= 0 ? &c->policy->targets[c->target_idx] : NULL;
	struct sockaddr_storage ss;
	const uint8_t *addr = c->pair.orig_addr;
	uint16_t port = c->pair.orig_port;
	socklen_t len;
	int one = 1, fd;

	if (t && t->upstream.has_address && t->upstream.address.kind == ADDR_IP) {
		addr = t->upstream.address.addr;
		port = t->upstream.address.port;
	}
	len = addr_to_sockaddr(addr, port, &ss);
	addr_str(addr, c->upstream_desc, sizeof(c->upstream_desc) - 8);
	snprintf(c->upstream_desc + strlen(c->upstream_desc), 8, ":%u", port);

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

void conn_free(struct conn *c)
{
	if (!c)
		return;
	if (c->ops && c->ops->release)
		c->ops->release(c);
	if (c->agent_idx >= 0 && E)
		atomic_fetch_sub(&E->agents[c->agent_idx].active, 1);
	rec_close(c->rec);
	worker_buf_put(c->w, c->buf[0]);
	worker_buf_put(c->w, c->buf[1]);
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
		ssize_t n = recv(src, c->buf[d], CONN_BUF, 0);

		if (n > 0) {
			/* Read on until EAGAIN even after a short read: a read
			 * also stops short at TCP urgent data, and with
			 * edge-triggered epoll nothing would report the rest. */
			rec_relay(&c->rec, c, d, c->buf[d], n);
			c->len[d] = n;
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

void conn_relay(struct conn *c)
{
	c->relaying = true;
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

static void upstream_connected(struct conn *c)
{
	int soerr = 0;
	socklen_t sl = sizeof(soerr);

	if (getsockopt(c->up.fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == EINPROGRESS)
		return;
	if (soerr) {
		char why[128];

		snprintf(why, sizeof(why), "upstream %s: %s", c->upstream_desc, strerror(soerr));
		enforcer_conn_closed(c, why);
		conn_close(c, true);
		return;
	}
	c->connecting = false;
	c->deadline_ms = 0;   /* connected means decided: no deadline while relaying */
}

void conn_on_event(struct conn_end *e, uint32_t events)
{
	struct conn *c = e->c;
	int err;

	if (c->closing)
		return;
	if (!e->is_agent && c->connecting) {
		upstream_connected(c);
		if (c->closing || c->connecting)
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
