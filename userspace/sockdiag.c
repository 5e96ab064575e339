/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One exact socket lookup through NETLINK_SOCK_DIAG (linux/inet_diag.h). No
 * library wraps it (libmnl would only frame the one message); the request is
 * a fixed struct and the answer one message or an error.
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

int tcp_socket_state(int family, const uint8_t local[16], uint16_t lport, const uint8_t remote[16],
		     uint16_t rport, int ifindex)
{
	struct {
		struct nlmsghdr h;
		struct inet_diag_req_v2 r;
	} req = {
		.h = { .nlmsg_len = sizeof(req), .nlmsg_type = SOCK_DIAG_BY_FAMILY,
		       .nlmsg_flags = NLM_F_REQUEST, .nlmsg_seq = 1 },
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
	struct sockaddr_nl nl = { .nl_family = AF_NETLINK };
	ssize_t n;
	int fd, ret;

	if (family != AF_INET && family != AF_INET6)
		return -EAFNOSUPPORT;
	/* id.src is the sought socket's own end, id.dst its peer */
	req.r.id.idiag_sport = htons(lport);
	req.r.id.idiag_dport = htons(rport);
	diag_addr(family, local, req.r.id.idiag_src);
	diag_addr(family, remote, req.r.id.idiag_dst);
	req.r.id.idiag_cookie[0] = req.r.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
	req.r.id.idiag_if = (uint32_t)ifindex;

	fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	if (fd < 0)
		return -errno;
	if (sendto(fd, &req, sizeof(req), 0, (struct sockaddr *)&nl, sizeof(nl)) != (ssize_t)sizeof(req)) {
		ret = -errno;
		goto out;
	}
	n = recv(fd, &ans, sizeof(ans), MSG_DONTWAIT);
	if (n < 0) {
		ret = -errno;
		goto out;
	}
	if ((size_t)n < sizeof(ans.h) || ans.h.nlmsg_len < sizeof(ans.h) || ans.h.nlmsg_seq != 1) {
		ret = -EPROTO;
		goto out;
	}
	if (ans.h.nlmsg_type == NLMSG_ERROR) {
		const struct nlmsgerr *e = NLMSG_DATA(&ans.h);

		if ((size_t)n < NLMSG_LENGTH(sizeof(*e)) || ans.h.nlmsg_len < NLMSG_LENGTH(sizeof(*e)))
			ret = -EPROTO;
		else if (e->error == -ENOENT)
			ret = 0;   /* no such socket */
		else
			ret = e->error ? e->error : -EPROTO;
		goto out;
	}
	if (ans.h.nlmsg_type != SOCK_DIAG_BY_FAMILY || (size_t)n < NLMSG_LENGTH(sizeof(struct inet_diag_msg)) ||
	    ans.h.nlmsg_len < NLMSG_LENGTH(sizeof(struct inet_diag_msg))) {
		ret = -EPROTO;
		goto out;
	}
	ret = ((const struct inet_diag_msg *)NLMSG_DATA(&ans.h))->idiag_state;
	if (ret == 0)
		ret = -EPROTO;   /* 0 is no state of TCP's */
out:
	close(fd);
	return ret;
}

int tcp_socket_state_any_dev(int family, const uint8_t local[16], uint16_t lport,
			     const uint8_t remote[16], uint16_t rport)
{
	struct if_nameindex *ifs;
	int st, best;
	unsigned n = 0;

	best = st = tcp_socket_state(family, local, lport, remote, rport, 0);
	if (st < 0 || (st && st != TCP_LISTEN))
		return st;
	if (!(ifs = if_nameindex()))
		return -errno;
	for (const struct if_nameindex *i = ifs; i->if_index; i++)
		n++;
	if (n > SOCKDIAG_MAX_IFS) {
		if_freenameindex(ifs);
		return -E2BIG;
	}
	for (const struct if_nameindex *i = ifs; i->if_index; i++) {
		st = tcp_socket_state(family, local, lport, remote, rport, (int)i->if_index);
		if (st < 0 || (st && st != TCP_LISTEN)) {
			best = st;
			break;
		}
		if (st == TCP_LISTEN)
			best = st;
	}
	if_freenameindex(ifs);
	return best;
}
