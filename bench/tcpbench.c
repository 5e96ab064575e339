/*
 * tcpbench — the TCP load generator and sink behind `make bench`.
 *
 *   tcpbench server --listen ADDR:PORT [--threads N]
 *   tcpbench bulk   --connect ADDR:PORT --seconds S [--streams N]
 *   tcpbench rr     --connect ADDR:PORT --seconds S [--size B] [--conns N]
 *   tcpbench cps    --connect ADDR:PORT --seconds S [--conns N]
 *
 * The server picks a mode per connection from the first byte the client
 * sends: 'B' bulk sink, 'R' request/response echo, 'C' one byte each way,
 * then close. Clients print exactly one line on stdout:
 *
 *   RESULT bulk mib_s=2512.3 bytes=... seconds=... streams=1 failed=0
 *   RESULT rr rtt_s=30123 p50_us=31.2 p99_us=55.0 conns=1 size=64 failed=0
 *   RESULT cps conn_s=12345 ok=... failed=0 conns=2
 *
 * Diagnostics go to stderr. A client exits 0 when it measured something
 * (failures are counted in the line, never hidden) and 1 when it could not
 * measure at all (bad arguments, every stream failed).
 *
 * Build: gcc -O2 -Wall -Wextra -Werror -std=gnu11 tcpbench.c -o tcpbench -lpthread
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BULK_CHUNK   (128 * 1024)	/* client write size, as the brief fixes it */
#define SINK_CHUNK   (64 * 1024)	/* server read size: fits in L2, measured no slower */
#define ECHO_BUF     (16 * 1024)	/* per-connection echo buffer */
/*
 * rr writes a whole message before reading the echo, so a message must fit in
 * the socket buffers of both directions or client and server block on each
 * other's full buffers. 16 KiB is far below the loopback defaults.
 */
#define RR_MAX_SIZE  (16 * 1024)
#define MAX_THREADS  256
#define IO_TIMEOUT_S 10		/* a stuck peer becomes a counted failure */

/* ---- small helpers ----------------------------------------------------- */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Parses a decimal in [min, max]; returns 0 or -EINVAL. */
static int parse_ulong(const char *s, unsigned long min, unsigned long max,
		       unsigned long *out)
{
	char *end;
	unsigned long v;

	if (!s || !*s || *s == '-' || *s == '+')
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

/*
 * Parses "1.2.3.4:PORT" or "[::1]:PORT" into *ss. Port 0 is accepted (the
 * server then binds an ephemeral port and reports it). Returns 0 or -EINVAL.
 */
static int parse_addr(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *colon, *h = s;
	size_t hlen;
	unsigned long port;

	colon = strrchr(s, ':');
	if (!colon)
		return -EINVAL;
	hlen = (size_t)(colon - s);
	if (*s == '[') {
		if (hlen < 2 || s[hlen - 1] != ']')
			return -EINVAL;
		h = s + 1;
		hlen -= 2;
	}
	if (hlen == 0 || hlen >= sizeof(host))
		return -EINVAL;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	if (parse_ulong(colon + 1, 0, 65535, &port))
		return -EINVAL;

	memset(ss, 0, sizeof(*ss));
	if (*s != '[') {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
			return -EINVAL;
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		*len = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
			return -EINVAL;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		*len = sizeof(*sin6);
	}
	return 0;
}

static void set_nodelay(int fd)
{
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Bounds blocking connect/read/write so a stuck peer cannot hang a run. */
static void set_io_timeouts(int fd, int seconds)
{
	struct timeval tv = { .tv_sec = seconds };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* Writes all of buf; returns 0 or -errno (-EAGAIN means the timeout hit). */
static int send_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Reads exactly len bytes; returns 0, -EPIPE on early EOF, or -errno. */
static int recv_all(int fd, void *buf, size_t len)
{
	char *p = buf;

	while (len) {
		ssize_t n = recv(fd, p, len, 0);

		if (n == 0)
			return -EPIPE;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* ---- client plumbing shared by bulk / rr / cps -------------------------- */

struct client_opts {
	struct sockaddr_storage addr;
	socklen_t addrlen;
	unsigned long seconds;
	unsigned long threads;	/* --streams or --conns */
	unsigned long size;	/* rr message size */
};

static struct client_opts opts;
static atomic_bool stop_flag;
static pthread_barrier_t start_barrier;

/* The first failure per thread, kept so the reason reaches stderr. */
struct failure {
	const char *stage;
	int err;
};

static void note_failure(struct failure *f, const char *stage, int err)
{
	if (!f->stage) {
		f->stage = stage;
		f->err = err;
	}
}

/* Returns a connected blocking socket or -errno; *stage names what failed. */
static int client_connect(const char **stage)
{
	int fd = socket(opts.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0) {
		*stage = "socket";
		return -errno;
	}
	set_io_timeouts(fd, IO_TIMEOUT_S);
	if (connect(fd, (struct sockaddr *)&opts.addr, opts.addrlen) < 0) {
		int err = -errno;

		*stage = "connect";
		close(fd);
		return err;
	}
	return fd;
}

/*
 * Starts opts.threads workers, lets them pass the start barrier together,
 * sleeps opts.seconds, raises stop_flag and joins them. Returns the wall
 * time from the start to the last join, or a negative value on error.
 */
static double run_workers(void *(*fn)(void *), void *ctx, size_t ctx_size)
{
	pthread_t tids[MAX_THREADS];
	struct timespec ts = { .tv_sec = (time_t)opts.seconds };
	unsigned long i;
	double t0;

	if (pthread_barrier_init(&start_barrier, NULL, (unsigned)opts.threads + 1))
		return -1;
	for (i = 0; i < opts.threads; i++) {
		int err = pthread_create(&tids[i], NULL, fn, (char *)ctx + i * ctx_size);

		if (err) {
			fprintf(stderr, "tcpbench: pthread_create: %s\n", strerror(err));
			exit(1);	/* the barrier would never open */
		}
	}
	pthread_barrier_wait(&start_barrier);
	t0 = now_s();
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
	atomic_store(&stop_flag, true);
	for (i = 0; i < opts.threads; i++)
		pthread_join(tids[i], NULL);
	pthread_barrier_destroy(&start_barrier);
	return now_s() - t0;
}

static void report_failures(const char *mode, const struct failure *f,
			    size_t stride, unsigned long failed)
{
	unsigned long i;

	if (!failed)
		return;
	for (i = 0; i < opts.threads; i++) {
		const struct failure *fi = (const void *)((const char *)f + i * stride);

		if (fi->stage) {
			fprintf(stderr, "tcpbench: %s: %lu failure(s), first: %s: %s\n",
				mode, failed, fi->stage,
				fi->err == -EPIPE ? "connection closed early"
						  : strerror(-fi->err));
			return;
		}
	}
}

/* ---- bulk --------------------------------------------------------------- */

struct bulk_ctx {
	uint64_t confirmed;	/* bytes the server says it received */
	bool failed;
	struct failure fail;
};

/*
 * One stream: 'B', then 128 KiB writes until stop, then SHUT_WR and the
 * server's 8-byte big-endian count. Only that count is credited, so data
 * still sitting in socket or proxy buffers when the clock stops is not.
 */
static void *bulk_worker(void *arg)
{
	struct bulk_ctx *c = arg;
	static const char mode = 'B';
	unsigned char cnt[8];
	const char *stage = "connect";
	char *buf;
	int fd, err;

	buf = malloc(BULK_CHUNK);
	pthread_barrier_wait(&start_barrier);
	if (!buf) {
		note_failure(&c->fail, "malloc", -ENOMEM);
		c->failed = true;
		return NULL;
	}
	memset(buf, 'x', BULK_CHUNK);
	fd = client_connect(&stage);
	if (fd < 0) {
		err = fd;
		goto fail;
	}
	stage = "write";
	err = send_all(fd, &mode, 1);
	while (!err && !atomic_load_explicit(&stop_flag, memory_order_relaxed))
		err = send_all(fd, buf, BULK_CHUNK);
	if (err)
		goto fail_fd;
	stage = "shutdown";
	if (shutdown(fd, SHUT_WR) < 0) {
		err = -errno;
		goto fail_fd;
	}
	/* The drain through a proxy can take a while; allow for it. */
	set_io_timeouts(fd, 60);
	stage = "read count";
	err = recv_all(fd, cnt, sizeof(cnt));
	if (err)
		goto fail_fd;
	for (int i = 0; i < 8; i++)
		c->confirmed = (c->confirmed << 8) | cnt[i];
	close(fd);
	free(buf);
	return NULL;

fail_fd:
	close(fd);
fail:
	note_failure(&c->fail, stage, err);
	c->failed = true;
	free(buf);
	return NULL;
}

static int cmd_bulk(void)
{
	struct bulk_ctx *ctx = calloc(opts.threads, sizeof(*ctx));
	uint64_t bytes = 0;
	unsigned long failed = 0, i;
	double secs;

	if (!ctx)
		return 1;
	secs = run_workers(bulk_worker, ctx, sizeof(*ctx));
	if (secs <= 0) {
		free(ctx);
		return 1;
	}
	for (i = 0; i < opts.threads; i++) {
		bytes += ctx[i].confirmed;
		failed += ctx[i].failed;
	}
	report_failures("bulk", &ctx[0].fail, sizeof(*ctx), failed);
	printf("RESULT bulk mib_s=%.1f bytes=%" PRIu64 " seconds=%.3f streams=%lu failed=%lu\n",
	       (double)bytes / (1024.0 * 1024.0) / secs, bytes, secs, opts.threads, failed);
	free(ctx);
	return failed == opts.threads ? 1 : 0;
}

/* ---- rr ----------------------------------------------------------------- */

/*
 * Latency histogram in nanoseconds, log-linear: values below 64 have their
 * own bucket, above that each power of two is split into 64 buckets, so a
 * reported percentile is within 1/64 (1.6 %) of the true value and the
 * memory is fixed whatever the run length.
 */
#define HIST_SUB     64
#define HIST_BUCKETS (59 * HIST_SUB)

struct hist {
	uint64_t b[HIST_BUCKETS];
	uint64_t n;
};

static unsigned hist_index(uint64_t v)
{
	unsigned m;

	if (v < HIST_SUB)
		return (unsigned)v;
	m = 63u - (unsigned)__builtin_clzll(v);	/* m >= 6 */
	return (m - 5u) * HIST_SUB + (unsigned)((v >> (m - 6u)) - HIST_SUB);
}

/* Midpoint of bucket idx, in nanoseconds. */
static double hist_value(unsigned idx)
{
	unsigned g, m;
	uint64_t t, lo, width;

	if (idx < HIST_SUB)
		return idx;
	g = idx / HIST_SUB;
	m = g + 5u;
	t = HIST_SUB + idx % HIST_SUB;
	lo = t << (m - 6u);
	width = (uint64_t)1 << (m - 6u);
	return (double)lo + (double)(width - 1) / 2.0;
}

static void hist_add(struct hist *h, uint64_t v)
{
	h->b[hist_index(v)]++;
	h->n++;
}

/* The value at fraction p (0..1] of the samples, in nanoseconds. */
static double hist_percentile(const struct hist *h, double p)
{
	uint64_t rank = (uint64_t)(p * (double)h->n + 0.999999), seen = 0;

	if (rank == 0)
		rank = 1;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		seen += h->b[i];
		if (seen >= rank)
			return hist_value(i);
	}
	return 0;
}

struct rr_ctx {
	struct hist h;
	bool failed;
	struct failure fail;
};

static void *rr_worker(void *arg)
{
	struct rr_ctx *c = arg;
	static const char mode = 'R';
	char msg[RR_MAX_SIZE], back[RR_MAX_SIZE];
	const char *stage = "connect";
	int fd, err;

	memset(msg, 'r', opts.size);
	pthread_barrier_wait(&start_barrier);
	fd = client_connect(&stage);
	if (fd < 0) {
		err = fd;
		goto fail;
	}
	set_nodelay(fd);
	stage = "write";
	err = send_all(fd, &mode, 1);
	while (!err && !atomic_load_explicit(&stop_flag, memory_order_relaxed)) {
		uint64_t t0 = now_ns();

		err = send_all(fd, msg, opts.size);
		if (err)
			break;
		stage = "read";
		err = recv_all(fd, back, opts.size);
		if (err)
			break;
		stage = "write";
		hist_add(&c->h, now_ns() - t0);
	}
	close(fd);
	if (!err)
		return NULL;
fail:
	note_failure(&c->fail, stage, err);
	c->failed = true;
	return NULL;
}

static int cmd_rr(void)
{
	struct rr_ctx *ctx = calloc(opts.threads, sizeof(*ctx));
	struct hist *all = calloc(1, sizeof(*all));
	unsigned long failed = 0, i;
	double secs;
	int rc = 1;

	if (!ctx || !all)
		goto out;
	secs = run_workers(rr_worker, ctx, sizeof(*ctx));
	if (secs <= 0)
		goto out;
	for (i = 0; i < opts.threads; i++) {
		for (unsigned b = 0; b < HIST_BUCKETS; b++)
			all->b[b] += ctx[i].h.b[b];
		all->n += ctx[i].h.n;
		failed += ctx[i].failed;
	}
	report_failures("rr", &ctx[0].fail, sizeof(*ctx), failed);
	printf("RESULT rr rtt_s=%.0f p50_us=%.1f p99_us=%.1f round_trips=%" PRIu64
	       " seconds=%.3f conns=%lu size=%lu failed=%lu\n",
	       (double)all->n / secs,
	       all->n ? hist_percentile(all, 0.50) / 1000.0 : 0.0,
	       all->n ? hist_percentile(all, 0.99) / 1000.0 : 0.0,
	       all->n, secs, opts.threads, opts.size, failed);
	rc = all->n ? 0 : 1;
out:
	free(ctx);
	free(all);
	return rc;
}

/* ---- cps ---------------------------------------------------------------- */

struct cps_ctx {
	uint64_t ok, failed;
	struct failure fail;
};

/*
 * connect → 'C' → 1 byte back → wait for the server's EOF → close.
 *
 * TIME_WAIT: the server closes first, and the client waits for that FIN
 * before its own close, so the server is always the active closer and
 * TIME_WAIT lands on the server's side of the 4-tuple (its listening port),
 * not on the client's ephemeral port. The client's ports are then free the
 * moment its close is acknowledged, so even tens of thousands of
 * connections per second fit in ip_local_port_range (32768-60999 = 28232
 * ports) with no SO_LINGER/RST tricks (which would skip the normal close
 * we mean to measure) and no SO_REUSEADDR (which does nothing for a
 * connect() that does not bind). Keep --seconds short anyway: the server's
 * TIME_WAIT entries are capped by net.ipv4.tcp_max_tw_buckets. A proxy in
 * between may still hold TIME_WAIT on its own upstream ports; if it runs
 * out, that shows up here as counted failures, not as a hidden slowdown.
 */
static void *cps_worker(void *arg)
{
	struct cps_ctx *c = arg;
	static const char mode = 'C';
	const char *stage = "connect";
	char b;
	int fd, err;

	pthread_barrier_wait(&start_barrier);
	while (!atomic_load_explicit(&stop_flag, memory_order_relaxed)) {
		fd = client_connect(&stage);
		if (fd < 0) {
			err = fd;
			goto failed;
		}
		stage = "write";
		err = send_all(fd, &mode, 1);
		if (!err) {
			stage = "read";
			err = recv_all(fd, &b, 1);
		}
		if (!err) {
			ssize_t n;

			stage = "read eof";
			do
				n = recv(fd, &b, 1, 0);
			while (n < 0 && errno == EINTR);
			err = n == 0 ? 0 : n < 0 ? -errno : -EPROTO;
		}
		close(fd);
		if (!err) {
			c->ok++;
			continue;
		}
failed:
		c->failed++;
		note_failure(&c->fail, stage, err);
		/* A dead target fails in microseconds; do not spin on it. */
		if (err == -ECONNREFUSED || err == -EADDRNOTAVAIL || err == -EMFILE)
			usleep(1000);
	}
	return NULL;
}

static int cmd_cps(void)
{
	struct cps_ctx *ctx = calloc(opts.threads, sizeof(*ctx));
	uint64_t ok = 0, failed = 0;
	unsigned long i;
	double secs;

	if (!ctx)
		return 1;
	secs = run_workers(cps_worker, ctx, sizeof(*ctx));
	if (secs <= 0) {
		free(ctx);
		return 1;
	}
	for (i = 0; i < opts.threads; i++) {
		ok += ctx[i].ok;
		failed += ctx[i].failed;
	}
	report_failures("cps", &ctx[0].fail, sizeof(*ctx), (unsigned long)failed);
	printf("RESULT cps conn_s=%.0f ok=%" PRIu64 " failed=%" PRIu64
	       " seconds=%.3f conns=%lu\n",
	       (double)ok / secs, ok, failed, secs, opts.threads);
	free(ctx);
	return ok ? 0 : 1;
}

/* ---- server ------------------------------------------------------------- */

/*
 * One epoll loop per thread, each with its own SO_REUSEPORT listener: the
 * kernel spreads connections across the threads with no shared accept lock,
 * and a single bulk stream still gets a whole core. Level-triggered epoll
 * keeps the state machine small; a connection only ever waits for one
 * direction at a time.
 */

enum conn_mode { MODE_NEW, MODE_BULK, MODE_ECHO };

struct conn {
	int fd;
	enum conn_mode mode;
	uint64_t received;		/* bulk: payload bytes after 'B' */
	const unsigned char *out;	/* bytes still to write */
	size_t out_len;
	bool close_after_flush;
	unsigned char count[8];		/* bulk: the reply */
	unsigned char *echo;		/* echo: ECHO_BUF bytes */
};

struct server {
	int lfd;
	int epfd;
	unsigned char *sink;		/* SINK_CHUNK scratch for bulk reads */
};

static void conn_free(struct conn *c)
{
	if (!c)
		return;
	close(c->fd);
	free(c->echo);
	free(c);
}

/* Writes pending output: 0 when all written, 1 when blocked, -errno. */
static int conn_flush(struct conn *c)
{
	while (c->out_len) {
		ssize_t n = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return 1;
			return -errno;
		}
		c->out += n;
		c->out_len -= (size_t)n;
	}
	return 0;
}

static int conn_want(struct server *s, struct conn *c, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = c };

	return epoll_ctl(s->epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0 ? -errno : 0;
}

/*
 * Queues c->out and tries to write it. Returns 0 to keep the connection,
 * <0 to close it now.
 */
static int conn_send(struct server *s, struct conn *c)
{
	int r = conn_flush(c);

	if (r < 0)
		return r;
	if (r == 1)
		return conn_want(s, c, EPOLLOUT);
	return c->close_after_flush ? -ECONNRESET : 0;
}

/* First byte: choose the mode. Returns 0 to keep the connection, <0 to close. */
static int conn_start(struct server *s, struct conn *c)
{
	static const unsigned char pong = 'c';
	unsigned char m;
	ssize_t n;

	do
		n = recv(c->fd, &m, 1, 0);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EAGAIN ? 0 : -errno;
	if (n == 0)
		return -EPIPE;
	switch (m) {
	case 'C':
		/* The close right after the write makes us the active closer. */
		c->out = &pong;
		c->out_len = 1;
		c->close_after_flush = true;
		return conn_send(s, c);
	case 'B':
		c->mode = MODE_BULK;
		return 0;
	case 'R':
		c->echo = malloc(ECHO_BUF);
		if (!c->echo)
			return -ENOMEM;
		c->mode = MODE_ECHO;
		return 0;
	default:
		return -EPROTO;
	}
}

static int conn_readable(struct server *s, struct conn *c)
{
	ssize_t n;

	switch (c->mode) {
	case MODE_NEW:
		return conn_start(s, c);
	case MODE_BULK:
		/* A few reads per wakeup, then let other connections run. */
		for (int i = 0; i < 16; i++) {
			n = recv(c->fd, s->sink, SINK_CHUNK, 0);
			if (n > 0) {
				c->received += (uint64_t)n;
				continue;
			}
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				return errno == EAGAIN ? 0 : -errno;
			for (int b = 0; b < 8; b++)
				c->count[b] = (unsigned char)(c->received >> (56 - 8 * b));
			c->out = c->count;
			c->out_len = sizeof(c->count);
			c->close_after_flush = true;
			return conn_send(s, c);
		}
		return 0;
	case MODE_ECHO:
		do
			n = recv(c->fd, c->echo, ECHO_BUF, 0);
		while (n < 0 && errno == EINTR);
		if (n < 0)
			return errno == EAGAIN ? 0 : -errno;
		if (n == 0)
			return -EPIPE;
		c->out = c->echo;
		c->out_len = (size_t)n;
		return conn_send(s, c);
	}
	return -EINVAL;
}

static int conn_writable(struct server *s, struct conn *c)
{
	int r = conn_flush(c);

	if (r < 0)
		return r;
	if (r == 1)
		return 0;
	if (c->close_after_flush)
		return -ECONNRESET;
	return conn_want(s, c, EPOLLIN);	/* echo buffer free again */
}

static void server_accept(struct server *s)
{
	for (;;) {
		struct epoll_event ev = { .events = EPOLLIN };
		struct conn *c;
		int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN)
				fprintf(stderr, "tcpbench: server: accept: %s\n", strerror(errno));
			return;
		}
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->fd = fd;
		set_nodelay(fd);
		ev.data.ptr = c;
		if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
			fprintf(stderr, "tcpbench: server: epoll_ctl: %s\n", strerror(errno));
			conn_free(c);
		}
	}
}

static void *server_loop(void *arg)
{
	struct server *s = arg;
	struct epoll_event evs[128];

	for (;;) {
		int n = epoll_wait(s->epfd, evs, 128, -1);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "tcpbench: server: epoll_wait: %s\n", strerror(errno));
			exit(1);
		}
		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;
			int r;

			if (!c) {
				server_accept(s);
				continue;
			}
			/* Pending output means we are waiting to write, not to read. */
			if (evs[i].events & EPOLLERR)
				r = -EIO;
			else if (c->out_len)
				r = conn_writable(s, c);
			else
				r = conn_readable(s, c);	/* also surfaces HUP */
			if (r < 0)
				conn_free(c);
		}
	}
	return NULL;
}

/* Binds a SO_REUSEPORT listener; returns the fd or -errno. */
static int server_listen(const struct sockaddr_storage *ss, socklen_t len)
{
	int one = 1, fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
	    bind(fd, (const struct sockaddr *)ss, len) < 0 ||
	    listen(fd, SOMAXCONN) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

static int cmd_server(const char *listen_addr, unsigned long threads)
{
	struct sockaddr_storage ss;
	socklen_t len;
	struct server *srv;
	pthread_t tid;
	char host[INET6_ADDRSTRLEN];
	unsigned port;

	if (parse_addr(listen_addr, &ss, &len)) {
		fprintf(stderr, "tcpbench: server: bad address '%s'\n", listen_addr);
		return 2;
	}
	srv = calloc(threads, sizeof(*srv));
	if (!srv)
		return 1;
	for (unsigned long i = 0; i < threads; i++) {
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };

		srv[i].lfd = server_listen(&ss, len);
		if (srv[i].lfd < 0) {
			fprintf(stderr, "tcpbench: server: listen on '%s': %s\n",
				listen_addr, strerror(-srv[i].lfd));
			return 1;
		}
		if (i == 0) {
			/* Port 0: the other threads join the port the kernel chose. */
			socklen_t l = len;

			getsockname(srv[0].lfd, (struct sockaddr *)&ss, &l);
		}
		srv[i].epfd = epoll_create1(EPOLL_CLOEXEC);
		srv[i].sink = malloc(SINK_CHUNK);
		if (srv[i].epfd < 0 || !srv[i].sink ||
		    epoll_ctl(srv[i].epfd, EPOLL_CTL_ADD, srv[i].lfd, &ev) < 0) {
			fprintf(stderr, "tcpbench: server: setup: %s\n", strerror(errno));
			return 1;
		}
	}
	if (ss.ss_family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
		port = ntohs(sin->sin_port);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

		inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
		port = ntohs(sin6->sin6_port);
	}
	for (unsigned long i = 1; i < threads; i++) {
		int err = pthread_create(&tid, NULL, server_loop, &srv[i]);

		if (err) {
			fprintf(stderr, "tcpbench: pthread_create: %s\n", strerror(err));
			return 1;
		}
	}
	/* run.sh waits for this line before it starts any client. */
	printf("READY %s:%u threads=%lu\n", host, port, threads);
	fflush(stdout);
	server_loop(&srv[0]);
	return 0;
}

/* ---- main --------------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: tcpbench server --listen ADDR:PORT [--threads N]\n"
		"       tcpbench bulk   --connect ADDR:PORT --seconds S [--streams N]\n"
		"       tcpbench rr     --connect ADDR:PORT --seconds S [--size B] [--conns N]\n"
		"       tcpbench cps    --connect ADDR:PORT --seconds S [--conns N]\n"
		"ADDR is an IPv4 address or [IPv6]. Clients print one RESULT line.\n");
}

/* Lets one process hold as many sockets as the hard limit allows. */
static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "listen",  required_argument, NULL, 'l' },
		{ "connect", required_argument, NULL, 'c' },
		{ "seconds", required_argument, NULL, 's' },
		{ "streams", required_argument, NULL, 'n' },
		{ "conns",   required_argument, NULL, 'n' },
		{ "threads", required_argument, NULL, 't' },
		{ "size",    required_argument, NULL, 'z' },
		{ "help",    no_argument,       NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *cmd, *listen_addr = NULL, *connect_addr = NULL;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned long threads = ncpu > 0 ? (unsigned long)ncpu : 1;
	bool have_n = false;
	int o;

	if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	cmd = argv[1];
	opts.seconds = 5;
	opts.size = 64;
	opts.threads = 1;
	optind = 2;
	while ((o = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		int bad = 0;

		switch (o) {
		case 'l': listen_addr = optarg; break;
		case 'c': connect_addr = optarg; break;
		case 's': bad = parse_ulong(optarg, 1, 3600, &opts.seconds); break;
		case 'n': bad = parse_ulong(optarg, 1, MAX_THREADS, &opts.threads); have_n = true; break;
		case 't': bad = parse_ulong(optarg, 1, MAX_THREADS, &threads); break;
		case 'z': bad = parse_ulong(optarg, 1, RR_MAX_SIZE, &opts.size); break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
		if (bad) {
			fprintf(stderr, "tcpbench: bad value '%s' for --%s\n", optarg,
				argv[optind - 1] + 2);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}

	signal(SIGPIPE, SIG_IGN);
	raise_nofile();

	if (!strcmp(cmd, "server")) {
		if (!listen_addr) {
			usage(stderr);
			return 2;
		}
		return cmd_server(listen_addr, threads);
	}
	if (!connect_addr || parse_addr(connect_addr, &opts.addr, &opts.addrlen)) {
		fprintf(stderr, "tcpbench: %s: missing or bad --connect ADDR:PORT\n", cmd);
		return 2;
	}
	if (!strcmp(cmd, "bulk"))
		return cmd_bulk();
	if (!strcmp(cmd, "rr"))
		return cmd_rr();
	if (!strcmp(cmd, "cps")) {
		/* One connect loop per core by default: connects spend time waiting. */
		if (!have_n)
			opts.threads = ncpu > 0 ? (unsigned long)ncpu : 1;
		return cmd_cps();
	}
	usage(stderr);
	return 2;
}
