/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Test helper: connect with io_uring's IORING_OP_CONNECT (no connect(2)
 * syscall), send a line, print what comes back and the peer getpeername()
 * reports. Usage: uring_connect IPV4 PORT. Exit 0 on success, else the
 * negated CQE result (e.g. 111 for ECONNREFUSED).
 */
#include <arpa/inet.h>
#include <liburing.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct io_uring ring;
	struct io_uring_sqe *sqe;
	struct io_uring_cqe *cqe;
	struct sockaddr_in sa = { .sin_family = AF_INET }, peer;
	socklen_t pl = sizeof(peer);
	char buf[256], ip[64];
	int fd, res;
	ssize_t n;

	if (argc != 3 || inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1)
		return 2;
	sa.sin_port = htons((unsigned short)strtoul(argv[2], NULL, 10));
	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 || io_uring_queue_init(4, &ring, 0))
		return 3;
	sqe = io_uring_get_sqe(&ring);
	io_uring_prep_connect(sqe, fd, (struct sockaddr *)&sa, sizeof(sa));
	io_uring_submit(&ring);
	if (io_uring_wait_cqe(&ring, &cqe))
		return 4;
	res = cqe->res;
	io_uring_cqe_seen(&ring, cqe);
	if (res < 0) {
		printf("connect: %s\n", strerror(-res));
		return -res;
	}
	getpeername(fd, (struct sockaddr *)&peer, &pl);
	inet_ntop(AF_INET, &peer.sin_addr, ip, sizeof(ip));
	if (write(fd, "ping\n", 5) != 5)
		return 5;
	n = read(fd, buf, sizeof(buf) - 1);
	buf[n > 0 ? n : 0] = 0;
	printf("peer %s:%u reply %s", ip, ntohs(peer.sin_port), buf);
	return 0;
}
