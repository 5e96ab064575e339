/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tcp_socket_state(), tcp_socket_state_any_dev(): the enforcer asks them
 * whether the client of a queued connection without a pair entry still
 * exists, and closes that connection unaudited when it does not
 * (enforcer.c, client_gone()). An answer of "none" where a socket exists
 * would hide a connection made around the agent hooks: each end of a real
 * loopback connection must be found, in its state, in both families, also
 * a client bound to a device (review, stop 53); a closed one must not; a
 * listener is reported as such.
 */
#include <linux/netlink.h>
#include <net/if.h>
#include <sys/wait.h>
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

/* a listener on an ephemeral loopback port, a client (bound to device dev
 * unless NULL) connected to it, and the accepted end; false when the host
 * has no such loopback (v6) */
static bool conn3_open_dev(int family, struct conn3 *k, const char *dev)
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
	if (dev)
		CHECK(setsockopt(k->cfd, SOL_SOCKET, SO_BINDTODEVICE, dev, (socklen_t)strlen(dev) + 1) == 0);
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

static bool conn3_open(int family, struct conn3 *k)
{
	return conn3_open_dev(family, k, NULL);
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
	CHECK(tcp_socket_state(family, k.caddr, k.cport, k.laddr, k.lport, 0) == TCP_ESTABLISHED);
	CHECK(tcp_socket_state_any_dev(family, k.caddr, k.cport, k.laddr, k.lport) == TCP_ESTABLISHED);
	CHECK(tcp_socket_state(family, k.laddr, k.lport, k.caddr, k.cport, 0) == TCP_ESTABLISHED);
	/* the listener answers for a remote end no connection has */
	memcpy(other, k.caddr, 16);
	CHECK(tcp_socket_state(family, k.laddr, k.lport, other, (uint16_t)(k.cport ^ 1), 0) == TCP_LISTEN);
	/* a port nobody holds */
	CHECK(tcp_socket_state(family, k.caddr, (uint16_t)(k.cport ^ 1), k.laddr, k.lport, 0) == 0);
	CHECK(tcp_socket_state_any_dev(family, k.caddr, (uint16_t)(k.cport ^ 1), k.laddr, k.lport) == 0);
	/* the client aborts: its end is gone; the accepted end, closed by the
	 * reset, is out of the kernel's tables and the listener answers for it
	 * (client_gone() trusts no answer when its own end is not found). The
	 * reset may wait for ksoftirqd: up to a second. */
	abort_close(k.cfd);
	k.cfd = -1;
	CHECK(tcp_socket_state(family, k.caddr, k.cport, k.laddr, k.lport, 0) == 0);
	CHECK(tcp_socket_state_any_dev(family, k.caddr, k.cport, k.laddr, k.lport) == 0);
	int st = 0;
	for (int i = 0; i < 100 && (st = tcp_socket_state(family, k.laddr, k.lport, k.caddr, k.cport, 0)) != TCP_LISTEN; i++)
		usleep(10000);
	CHECK(st == TCP_LISTEN);
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
	int c = 0, a = 0;
	for (int i = 0; i < 100; i++) {   /* the FIN may wait for ksoftirqd */
		c = tcp_socket_state(AF_INET, k.caddr, k.cport, k.laddr, k.lport, 0);
		a = tcp_socket_state(AF_INET, k.laddr, k.lport, k.caddr, k.cport, 0);
		if ((c == TCP_FIN_WAIT2 || c == TCP_TIME_WAIT) && a == TCP_CLOSE_WAIT)
			break;
		usleep(10000);
	}
	CHECK(c == TCP_FIN_WAIT2 || c == TCP_TIME_WAIT);
	CHECK(a == TCP_CLOSE_WAIT);
	conn3_close(&k);
}

/* a client bound to a device (any user may bind a new socket to one) is
 * found only by a lookup naming that device: the one without a device
 * misses it, the lookup over every device finds it (review, stop 53: a
 * dialer bound to "lo" passed for gone) */
static void test_bound_to_device(void)
{
	struct conn3 k;
	int lo = (int)if_nametoindex("lo");

	CHECK(lo > 0);
	CHECK(conn3_open_dev(AF_INET, &k, "lo"));
	CHECK(tcp_socket_state(AF_INET, k.caddr, k.cport, k.laddr, k.lport, 0) == 0);
	CHECK(tcp_socket_state(AF_INET, k.caddr, k.cport, k.laddr, k.lport, lo) == TCP_ESTABLISHED);
	CHECK(tcp_socket_state_any_dev(AF_INET, k.caddr, k.cport, k.laddr, k.lport) == TCP_ESTABLISHED);
	/* the accepted end is bound to nothing */
	CHECK(tcp_socket_state(AF_INET, k.laddr, k.lport, k.caddr, k.cport, 0) == TCP_ESTABLISHED);
	conn3_close(&k);
}

/* Another process may unicast to a netlink socket that is not connected,
 * and a process's first netlink socket takes the pid as its port id: a
 * forged "no such socket" (an NLMSG_ERROR with -ENOENT) sprayed at the
 * enforcer's pid would hide a live dialer. The lookups' socket is
 * connected to the kernel, which refuses such a unicast, and the sender of
 * an answer is checked: under the spray every lookup still finds the
 * socket. */
static void test_forged_answers(void)
{
	struct conn3 k;
	pid_t me = getpid(), child;
	int go[2], forged = 0, errs = 0, n = 0;

	CHECK(conn3_open(AF_INET, &k));
	CHECK(pipe(go) == 0);
	child = fork();
	if (child == 0) {
		struct {
			struct nlmsghdr h;
			struct nlmsgerr e;
		} m = { .h = { .nlmsg_len = sizeof(m), .nlmsg_type = NLMSG_ERROR }, .e = { .error = -ENOENT } };
		struct sockaddr_nl to = { .nl_family = AF_NETLINK, .nl_pid = (uint32_t)me };
		int fd = socket(AF_NETLINK, SOCK_DGRAM, NETLINK_SOCK_DIAG);

		close(go[0]);
		if (write(go[1], "x", 1) != 1)
			_exit(1);
		for (uint64_t end = now_ns_mono() + 500000000ull; now_ns_mono() < end;)
			for (uint32_t seq = 1; seq <= 4; seq++) {   /* the lookups' first numbers */
				m.h.nlmsg_seq = seq;
				sendto(fd, &m, sizeof(m), 0, (struct sockaddr *)&to, sizeof(to));
			}
		_exit(0);
	}
	char x;
	close(go[1]);
	CHECK(read(go[0], &x, 1) == 1);
	for (uint64_t end = now_ns_mono() + 400000000ull; now_ns_mono() < end; n++) {
		int a = tcp_socket_state(AF_INET, k.caddr, k.cport, k.laddr, k.lport, 0);
		int b = tcp_socket_state_any_dev(AF_INET, k.caddr, k.cport, k.laddr, k.lport);

		/* an error is "cannot tell" (the enforcer refuses and audits);
		 * "none" (0, or only the listener) would be the forgery */
		forged += (a == 0 || a == TCP_LISTEN) + (b == 0 || b == TCP_LISTEN);
		errs += (a < 0) + (b < 0);
	}
	waitpid(child, NULL, 0);
	close(go[0]);
	if (forged || errs)
		fprintf(stderr, "  of %d lookups %d took a forged answer, %d failed\n", 2 * n, forged, errs);
	CHECK(forged == 0);
	CHECK(errs <= n / 100);
	CHECK(n > 100);
	conn3_close(&k);
}

static void test_bad_family(void)
{
	uint8_t a[16] = { 0 };

	CHECK(tcp_socket_state(AF_UNIX, a, 1, a, 2, 0) == -EAFNOSUPPORT);
	CHECK(tcp_socket_state_any_dev(AF_UNIX, a, 1, a, 2) == -EAFNOSUPPORT);
}

int main(void)
{
	RUN(test_v4);
	RUN(test_v6);
	RUN(test_graceful_close);
	RUN(test_bound_to_device);
	RUN(test_forged_answers);
	RUN(test_bad_family);
	UNIT_DONE("sockdiag");
}
