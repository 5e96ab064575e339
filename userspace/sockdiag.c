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
		     uint16_t rport)
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
	/* The kernel answers within the send: one message, or an error. */
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
	if (!NLMSG_OK(&ans.h, (size_t)n) || ans.h.nlmsg_seq != 1) {
		ret = -EPROTO;
		goto out;
	}
	if (ans.h.nlmsg_type == NLMSG_ERROR) {
		const struct nlmsgerr *e = NLMSG_DATA(&ans.h);

		if (ans.h.nlmsg_len < NLMSG_LENGTH(sizeof(*e)))
			ret = -EPROTO;
		else if (e->error == -ENOENT)
			ret = 0;   /* no such socket */
		else
			ret = e->error ? e->error : -EPROTO;
		goto out;
	}
	if (ans.h.nlmsg_type != SOCK_DIAG_BY_FAMILY ||
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
