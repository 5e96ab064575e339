/* SPDX-License-Identifier: Apache-2.0 */
#ifndef AGENTGATE_SOCKDIAG_H
#define AGENTGATE_SOCKDIAG_H

#include <stdint.h>

/*
 * The state of the TCP socket whose local end is local:lport and whose remote
 * end is remote:rport, in the caller's network namespace, asked of the kernel
 * with one exact NETLINK_SOCK_DIAG lookup (what `ss` uses). Addresses are 16
 * bytes, IPv4 as v4-mapped; family is the connection's (AF_INET, AF_INET6).
 * The kernel matches a socket bound to a device (SO_BINDTODEVICE, which any
 * user may set on a new socket) only when asked with that device's index:
 * ifindex 0 finds sockets bound to none, ifindex N those bound to none or to N.
 *
 * Returns the socket's TCP state (TCP_ESTABLISHED, TCP_SYN_SENT, ... and
 * TCP_TIME_WAIT or TCP_FIN_WAIT2 for a time-wait socket), 0 when there is no
 * such socket, or -errno when the kernel could not be asked. A lookup that
 * finds no connected socket falls back to a listener on local:lport, as a
 * packet would: TCP_LISTEN means no socket with that remote end.
 */
int tcp_socket_state(int family, const uint8_t local[16], uint16_t lport, const uint8_t remote[16],
		     uint16_t rport, int ifindex);

/*
 * The same, for a socket bound to any device or to none: asked with no
 * device, then with each of the namespace's interfaces (at most
 * SOCKDIAG_MAX_IFS of them; past that, or when they cannot be listed,
 * -E2BIG or -errno: the caller cannot tell). Returns the first state found
 * that is not TCP_LISTEN, TCP_LISTEN when only a listener answers, 0 when
 * nothing does.
 */
#define SOCKDIAG_MAX_IFS 256
int tcp_socket_state_any_dev(int family, const uint8_t local[16], uint16_t lport,
			     const uint8_t remote[16], uint16_t rport);

#endif /* AGENTGATE_SOCKDIAG_H */
