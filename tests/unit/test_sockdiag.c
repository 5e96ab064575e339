/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tcp_socket_state(): the enforcer asks it whether the client of a queued
 * connection without a pair entry still exists, and closes that connection
 * unaudited when it does not (enforcer.c, client_gone()). An answer of
 * "none" where a socket exists would hide a connection made around the
 * agent hooks: each end of a real loopback connection must be found, in its
 * state, in both families; a closed one must not; a listener is reported as
 * such.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "sockdiag.h"
#include "unit.h"
#include "util.h"

struct conn3 {
	int lfd, cfd, afd;
	uint8_t laddr[16], caddr[16];
	uint16_t lport, cport;
};

static uint16_t local_port(int fd, uint8_t a[16])
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	uint16_t port = 0;

	if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0)
		addr_from_sockaddr(&ss, a, &port);
	return port;
}

/* a listener on an ephemeral loopback port, a client connected to it, and
 * the accepted end; false when the host has no such loopback (v6) */
static bool conn3_open(int family, struct conn3 *k)
{
	struct sockaddr_storage ss;
	socklen_t len;

	k->cfd = k->afd = -1;
	k->lfd = loopback_socket(family, SOCK_STREAM, 0, false);
	if (k->lfd < 0)
		return false;
	CHECK(listen(k->lfd, 8) == 0);
	k->lport = local_port(k->lfd, k->laddr);
	len = addr_to_sockaddr(k->laddr, k->lport, &ss);
	k->cfd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(k->cfd >= 0);
	CHECK(connect(k->cfd, (struct sockaddr *)&ss, len) == 0);
	k->cport = local_port(k->cfd, k->caddr);
	for (int i = 0; i < 1000 && k->afd < 0; i++) {
		k->afd = accept4(k->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (k->afd < 0)
			usleep(1000);
	}
	CHECK(k->afd >= 0);
	return true;
}

static void conn3_close(struct conn3 *k)
{
	if (k->afd >= 0)
		close(k->afd);
	if (k->cfd >= 0)
		close(k->cfd);
	close(k->lfd);
}

static void abort_close(int fd)
{
	struct linger l = { .l_onoff = 1, .l_linger = 0 };

	CHECK(setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l)) == 0);
	close(fd);
}

static void both_ends(int family)
{
	struct conn3 k;
	uint8_t other[16];

	if (!conn3_open(family, &k)) {
		CHECK(family == AF_INET6);   /* only ::1 may be missing */
		fprintf(stderr, "  (no IPv6 loopback: the AF_INET6 case is not run)\n");
		return;
	}
	/* the client's end and the accepted one */
	CHECK(tcp_socket_state(family, k.caddr, k.cport, k.laddr, k.lport) == TCP_ESTABLISHED);
	CHECK(tcp_socket_state(family, k.laddr, k.lport, k.caddr, k.cport) == TCP_ESTABLISHED);
	/* the listener answers for a remote end no connection has */
	memcpy(other, k.caddr, 16);
	CHECK(tcp_socket_state(family, k.laddr, k.lport, other, (uint16_t)(k.cport ^ 1)) == TCP_LISTEN);
	/* a port nobody holds */
	CHECK(tcp_socket_state(family, k.caddr, (uint16_t)(k.cport ^ 1), k.laddr, k.lport) == 0);
	/* the client aborts: its end is gone; the accepted end, closed by the
	 * reset, is out of the kernel's tables and the listener answers for it
	 * (client_gone() trusts no answer when its own end is not found) */
	abort_close(k.cfd);
	k.cfd = -1;
	CHECK(tcp_socket_state(family, k.caddr, k.cport, k.laddr, k.lport) == 0);
	CHECK(tcp_socket_state(family, k.laddr, k.lport, k.caddr, k.cport) == TCP_LISTEN);
	conn3_close(&k);
}

static void test_v4(void)
{
	both_ends(AF_INET);
}

static void test_v6(void)
{
	both_ends(AF_INET6);
}

/* a graceful close: the client's end lives on as a time-wait socket
 * (FIN_WAIT2), the accepted end in CLOSE_WAIT */
static void test_graceful_close(void)
{
	struct conn3 k;

	CHECK(conn3_open(AF_INET, &k));
	close(k.cfd);
	k.cfd = -1;
	usleep(20000);
	int c = tcp_socket_state(AF_INET, k.caddr, k.cport, k.laddr, k.lport);
	CHECK(c == TCP_FIN_WAIT2 || c == TCP_TIME_WAIT);
	CHECK(tcp_socket_state(AF_INET, k.laddr, k.lport, k.caddr, k.cport) == TCP_CLOSE_WAIT);
	conn3_close(&k);
}

static void test_bad_family(void)
{
	uint8_t a[16] = { 0 };

	CHECK(tcp_socket_state(AF_UNIX, a, 1, a, 2) == -EAFNOSUPPORT);
}

int main(void)
{
	RUN(test_v4);
	RUN(test_v6);
	RUN(test_graceful_close);
	RUN(test_bad_family);
	UNIT_DONE("sockdiag");
}
