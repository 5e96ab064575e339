/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Exact socket lookups through NETLINK_SOCK_DIAG (linux/inet_diag.h). No
 * library wraps them (libmnl would only frame the one message); a request
 * is a fixed struct and its answer one message or an error.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include "sockdiag.h"

static void diag_addr(int family, const uint8_t a[16], __be32 out[4])
{
	memset(out, 0, 4 * sizeof(out[0]));
	if (family == AF_INET)
		memcpy(out, a + 12, 4);   /* v4-mapped: the last four bytes */
	else
		memcpy(out, a, 16);
}

/*
 * The socket asks only the kernel: connected to it (port id 0), so the
 * kernel refuses another process's unicast to this socket's port id (a
 * process's first netlink socket takes its pid, which anyone can read), and
 * the sender of what is read is checked: one queued while connect() bound
 * the socket is dropped. A forged "no such socket" would hide a connection
 * made around the agent hooks (test_sockdiag: under a spray at the pid, 92
 * of 18,548 lookups took one without these; none with either).
 */
static int diag_socket(void)
{
	struct sockaddr_nl k = { .nl_family = AF_NETLINK };
	int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);

	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&k, sizeof(k))) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

static int lookup(int fd, uint32_t seq, int family, const uint8_t local[16], uint16_t lport,
		  const uint8_t remote[16], uint16_t rport, int ifindex)
{
	struct {
		struct nlmsghdr h;
		struct inet_diag_req_v2 r;
	} req = {
		.h = { .nlmsg_len = sizeof(req), .nlmsg_type = SOCK_DIAG_BY_FAMILY,
		       .nlmsg_flags = NLM_F_REQUEST, .nlmsg_seq = seq },
		.r = { .sdiag_family = (uint8_t)family, .sdiag_protocol = IPPROTO_TCP,
		       .idiag_states = ~0u },
	};
	/* The kernel answers within the send: one message, or an error. Only
	 * the fixed head of a socket's message is read: what follows it (MD5
	 * keys, say) may be cut off by a short buffer without harm. */
	union {
		struct nlmsghdr h;
		char b[1024];
	} ans;
	struct sockaddr_nl from;
	socklen_t fromlen = sizeof(from);
	ssize_t n;
	int ret;

	/* id.src is the sought socket's own end, id.dst its peer */
	req.r.id.idiag_sport = htons(lport);
	req.r.id.idiag_dport = htons(rport);
	diag_addr(family, local, req.r.id.idiag_src);
	diag_addr(family, remote, req.r.id.idiag_dst);
	req.r.id.idiag_cookie[0] = req.r.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
	req.r.id.idiag_if = (uint32_t)ifindex;

	if (send(fd, &req, sizeof(req), 0) != (ssize_t)sizeof(req))
		return -errno;
	/* one queued while connect() bound the socket (before it refused
	 * others) is read and dropped: a few at most */
	for (int i = 0;; i++) {
		fromlen = sizeof(from);
		n = recvfrom(fd, &ans, sizeof(ans), MSG_DONTWAIT, (struct sockaddr *)&from, &fromlen);
		if (n < 0)
			return -errno;
		if (fromlen >= sizeof(from) && from.nl_family == AF_NETLINK && from.nl_pid == 0)
			break;   /* the kernel's */
		if (i == 16)
			return -EPROTO;
	}
	if ((size_t)n < sizeof(ans.h) || ans.h.nlmsg_len < sizeof(ans.h) || ans.h.nlmsg_seq != seq)
		return -EPROTO;
	if (ans.h.nlmsg_type == NLMSG_ERROR) {
		const struct nlmsgerr *e = NLMSG_DATA(&ans.h);

		if ((size_t)n < NLMSG_LENGTH(sizeof(*e)) || ans.h.nlmsg_len < NLMSG_LENGTH(sizeof(*e)))
			return -EPROTO;
		if (e->error == -ENOENT)
			return 0;   /* no such socket */
		return e->error < 0 ? e->error : -EPROTO;
	}
	if (ans.h.nlmsg_type != SOCK_DIAG_BY_FAMILY || (size_t)n < NLMSG_LENGTH(sizeof(struct inet_diag_msg)) ||
	    ans.h.nlmsg_len < NLMSG_LENGTH(sizeof(struct inet_diag_msg)))
		return -EPROTO;
	ret = ((const struct inet_diag_msg *)NLMSG_DATA(&ans.h))->idiag_state;
	return ret ? ret : -EPROTO;   /* 0 is no state of TCP's */
}

int tcp_socket_state(int family, const uint8_t local[16], uint16_t lport, const uint8_t remote[16],
		     uint16_t rport, int ifindex)
{
	int fd, ret;

	if (family != AF_INET && family != AF_INET6)
		return -EAFNOSUPPORT;
	if ((fd = diag_socket()) < 0)
		return fd;
	ret = lookup(fd, 1, family, local, lport, remote, rport, ifindex);
	close(fd);
	return ret;
}

int tcp_socket_state_any_dev(int family, const uint8_t local[16], uint16_t lport,
			     const uint8_t remote[16], uint16_t rport)
{
	struct if_nameindex *ifs;
	int fd, st, best;
	uint32_t seq = 1;
	unsigned n = 0;

	if (family != AF_INET && family != AF_INET6)
		return -EAFNOSUPPORT;
	if ((fd = diag_socket()) < 0)
		return fd;
	best = st = lookup(fd, seq++, family, local, lport, remote, rport, 0);
	if (st < 0 || (st && st != TCP_LISTEN))
		goto out;
	if (!(ifs = if_nameindex())) {
		best = -errno;
		goto out;
	}
	for (const struct if_nameindex *i = ifs; i->if_index; i++)
		n++;
	if (n > SOCKDIAG_MAX_IFS) {
		best = -E2BIG;
		n = 0;
	}
	for (const struct if_nameindex *i = ifs; n && i->if_index; i++) {
		st = lookup(fd, seq++, family, local, lport, remote, rport, (int)i->if_index);
		if (st < 0 || (st && st != TCP_LISTEN)) {
			best = st;
			break;
		}
		if (st == TCP_LISTEN)
			best = st;
	}
	if_freenameindex(ifs);
out:
	close(fd);
	return best;
}
