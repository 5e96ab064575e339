/* SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <sys/resource.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <sched.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "audit.h"
#include "enforcer.h"
#include "loop.h"
#include "recording.h"
#include "upool.h"
#include "util.h"

static int listen_on(int family, uint16_t port)
{
	int one = 1, fd = loopback_socket(family, SOCK_STREAM, port, true);

	if (fd < 0)
		return fd;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));   /* inherited by accepted sockets */
	if (listen(fd, 4096)) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

int worker_init(struct worker *w, int id, uint16_t port4, uint16_t port6)
{
	int fd4, fd6;

	memset(w, 0, sizeof(*w));
	w->id = id;
	w->wake.fd = -1;
	w->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (w->epfd < 0)
		return -errno;
	fd4 = listen_on(AF_INET, port4);
	fd6 = fd4 < 0 ? fd4 : listen_on(AF_INET6, port6);
	if (fd6 < 0) {
		if (fd4 >= 0)
			close(fd4);
		close(w->epfd);
		w->epfd = -1;
		return fd6;
	}
	w->listen[0] = (struct conn_end){ .fd = fd4 };
	w->listen[1] = (struct conn_end){ .fd = fd6 };
	w->wake = (struct conn_end){ .fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC) };
	for (int i = 0; i < 3; i++) {
		struct conn_end *e = i < 2 ? &w->listen[i] : &w->wake;
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = e };

		if (e->fd < 0 || epoll_ctl(w->epfd, EPOLL_CTL_ADD, e->fd, &ev)) {
			int err = -errno;

			close(fd4);
			close(fd6);
			if (w->wake.fd >= 0)
				close(w->wake.fd);
			close(w->epfd);
			w->epfd = -1;
			w->listen[0].fd = w->listen[1].fd = w->wake.fd = -1;
			return err;
		}
	}
	return 0;
}

/* From the main thread: the worker looks at its flags now, not at its next
 * 200 ms tick (each stop waited for it, worker by worker). */
static void worker_wake(struct worker *w)
{
	uint64_t one = 1;

	if (w->wake.fd >= 0 && write(w->wake.fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		ag_log(LOG_LVL_WARN, "worker %d: wake: %s", w->id, strerror(errno));
}

void *worker_buf_get(struct worker *w)
{
	return w->nspare ? w->spare[--w->nspare] : malloc(CONN_BUF);
}

void worker_buf_put(struct worker *w, void *buf)
{
	if (buf && w->nspare < WORKER_SPARE_BUFS)
		w->spare[w->nspare++] = buf;
	else
		free(buf);
}

int worker_watch(struct worker *w, struct conn_end *e, uint32_t events)
{
	struct epoll_event ev = { .events = events | EPOLLET, .data.ptr = e };

	return epoll_ctl(w->epfd, EPOLL_CTL_ADD, e->fd, &ev) ? -errno : 0;
}

void worker_unwatch(struct worker *w, int fd)
{
	epoll_ctl(w->epfd, EPOLL_CTL_DEL, fd, NULL);
}

int worker_rearm(struct worker *w, struct conn_end *e, uint32_t events)
{
	struct epoll_event ev = { .events = events | EPOLLET, .data.ptr = e };

	return epoll_ctl(w->epfd, EPOLL_CTL_MOD, e->fd, &ev) ? -errno : 0;
}

void worker_link(struct worker *w, struct conn *c)
{
	c->w = w;
	c->prev = NULL;
	c->next = w->conns;
	if (w->conns)
		w->conns->prev = c;
	w->conns = c;
	w->nconns++;
	if (w->bal_conns)
		__atomic_store_n(w->bal_conns, (uint32_t)w->nconns, __ATOMIC_RELAXED);
}

void worker_retire(struct worker *w, struct conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	w->nconns--;
	if (w->bal_conns)
		__atomic_store_n(w->bal_conns, (uint32_t)w->nconns, __ATOMIC_RELAXED);
	c->next = w->dead;
	c->prev = NULL;
	w->dead = c;
}

#define ACCEPT_BATCH 64   /* per wakeup, so a connection flood cannot starve live relays */

static void pause_accepting(struct worker *w)
{
	for (int i = 0; i < 2; i++)
		if (w->listen[i].fd >= 0)
			epoll_ctl(w->epfd, EPOLL_CTL_DEL, w->listen[i].fd, NULL);
	w->accept_paused_until = now_ns_mono() + 100000000ull;
}

static void resume_accepting(struct worker *w)
{
	for (int i = 0; i < 2; i++) {
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &w->listen[i] };

		if (w->listen[i].fd >= 0)
			epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->listen[i].fd, &ev);
	}
	w->accept_paused_until = 0;
}

/*
 * balance.bpf.c counts a connection it sent here as pending until accepted.
 * An empty queue means nothing is pending (a SYN the kernel dropped after
 * the program chose never arrives): start again from zero. A handshake in
 * flight at that moment is undercounted for a moment, which only skews one
 * choice.
 */
static void bal_accepted(struct worker *w, bool queue_empty)
{
	uint32_t v;

	if (!w->bal_pending)
		return;
	if (queue_empty) {
		__atomic_store_n(w->bal_pending, 0, __ATOMIC_RELAXED);
		return;
	}
	v = __atomic_load_n(w->bal_pending, __ATOMIC_RELAXED);
	while (v && !__atomic_compare_exchange_n(w->bal_pending, &v, v - 1, false, __ATOMIC_RELAXED,
						 __ATOMIC_RELAXED))
		;
}

/* The lowest descriptor number at which accepting pauses: FD_HEADROOM
 * below RLIMIT_NOFILE (descriptors are allocated lowest first, so an
 * accepted one this high means about that many are left at most). */
#define FD_HEADROOM 32

static int fd_ceiling(void)
{
	static int ceiling;
	int v = __atomic_load_n(&ceiling, __ATOMIC_RELAXED);
	struct rlimit rl;

	if (!v) {
		v = INT_MAX;
		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
		    rl.rlim_cur < (rlim_t)INT_MAX)
			v = rl.rlim_cur > 2 * FD_HEADROOM ? (int)rl.rlim_cur - FD_HEADROOM : (int)rl.rlim_cur / 2;
		__atomic_store_n(&ceiling, v, __ATOMIC_RELAXED);
	}
	return v;
}

static void accept_all(struct worker *w, int lfd, int family)
{
	for (int n = 0; n < ACCEPT_BATCH; n++) {
		struct sockaddr_storage peer;
		socklen_t pl = sizeof(peer);
		int fd = accept4(lfd, (struct sockaddr *)&peer, &pl, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EAGAIN)
				bal_accepted(w, true);
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				/* Out of descriptors or memory: the listener stays
				 * readable, so stop watching it for 100 ms rather than
				 * spin; connections wait in the backlog. */
				log_warn("accept: %s; pausing accepts for 100 ms", strerror(errno));
				pause_accepting(w);
			} else if (errno != EAGAIN) {
				log_warn("accept: %s", strerror(errno));
			}
			return;
		}
		bal_accepted(w, false);
		enforcer_accept(w, fd, family, &peer);
		if (fd >= fd_ceiling()) {
			/* Descriptors run short: each connection needs a second
			 * one for its upstream, which would fail and reset it.
			 * New connections wait in the backlog instead. */
			log_warn("accept: %d descriptors in use, near the limit; pausing accepts for 100 ms", fd + 1);
			pause_accepting(w);
			return;
		}
	}
}

/* Connections held for their agent's masking budget whose time came read
 * their upstream again (conn.c charge()). */
static void resume_held(struct worker *w)
{
	uint64_t now = now_ns_mono() / 1000000ull, next = 0;

	if (!w->hold_next_ms || now < w->hold_next_ms)
		return;
	w->hold_next_ms = 0;
	for (struct conn *c = w->conns, *n; c; c = n) {
		n = c->next;
		if (!c->hold_ms)
			continue;
		if (now >= c->hold_ms)
			conn_resume(c);   /* may hold it again */
		if (c->hold_ms && !c->closing && (!next || c->hold_ms < next))
			next = c->hold_ms;
	}
	if (next && (!w->hold_next_ms || next < w->hold_next_ms))
		w->hold_next_ms = next;
}

static void check_deadlines(struct worker *w)
{
	uint64_t now = now_ns_mono() / 1000000ull;

	for (struct conn *c = w->conns, *next; c; c = next) {
		next = c->next;
		if (c->deadline_ms && now > c->deadline_ms)
			conn_deadline(c);
		else
			conn_trim(c);
	}
}

/* Once per reload: connections the new policy would not accept at all are
 * closed (enforcer_revoked); the rest keep their policy until they end. */
static void sweep_revoked(struct worker *w)
{
	const struct policy *live = __atomic_load_n(&E->policy, __ATOMIC_ACQUIRE);
	char why[300];

	if (live == w->swept)
		return;
	w->swept = live;
	for (struct conn *c = w->conns, *next; c; c = next) {
		next = c->next;
		if (enforcer_revoked(c, live, why, sizeof(why))) {
			enforcer_conn_closed(c, why);
			conn_close(c, true);
		}
	}
}

static void close_listeners(struct worker *w)
{
	for (int i = 0; i < 2; i++) {
		if (w->listen[i].fd >= 0) {
			epoll_ctl(w->epfd, EPOLL_CTL_DEL, w->listen[i].fd, NULL);
			close(w->listen[i].fd);
			w->listen[i].fd = -1;
		}
	}
}

/*
 * Busy polling (AGENTGATE_BUSY_POLL_US, off by default): before it sleeps
 * in epoll_wait, the worker polls for up to busy_poll_us, yielding the CPU
 * to any other runnable thread between polls. A sleeping worker is woken
 * by an interrupt, and a CPU with nothing to run halts: in a VM, waking a
 * halted vCPU goes through the hypervisor (tens of microseconds, on every
 * request of a client that waits for each answer). HAProxy's busy-polling
 * option trades CPU for the same latency. Adaptive, so that it costs
 * nothing where it cannot help: the worker polls only while the traffic is
 * ping-pong, i.e. the last poll caught an event or the last sleep was
 * shorter than the window; after a poll that caught nothing it sleeps
 * until a short sleep says events come back quickly again. *spin carries
 * that state between calls.
 */
static int wait_events(struct worker *w, struct epoll_event *evs, int max, int wait_ms, bool *spin)
{
	uint64_t t0, window = (uint64_t)w->busy_poll_us * 1000;
	int n;

	if (!window)
		return epoll_wait(w->epfd, evs, max, wait_ms);
	if (*spin) {
		t0 = now_ns_mono();
		do {
			if ((n = epoll_wait(w->epfd, evs, max, 0)) != 0) {
				if (n > 0)
					atomic_fetch_add_explicit(&w->busy_caught, 1, memory_order_relaxed);
				return n;
			}
			sched_yield();
		} while (now_ns_mono() - t0 < window && !w->stop);
		*spin = false;   /* nothing came in the window: sleep */
	}
	t0 = now_ns_mono();
	n = epoll_wait(w->epfd, evs, max, wait_ms);
	*spin = n > 0 && now_ns_mono() - t0 < window;
	return n;
}

static void handle_events(struct worker *w, const struct epoll_event *evs, int n)
{
	for (int i = 0; i < n; i++) {
		struct conn_end *e = evs[i].data.ptr;
		uint64_t v;

		if (e == &w->wake)
			(void)!read(e->fd, &v, sizeof(v));
		else if (!e->c)
			accept_all(w, e->fd, e == &w->listen[0] ? AF_INET : AF_INET6);
		else
			conn_on_event(e, evs[i].events);
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct epoll_event evs[256];
	uint64_t last_tick = 0;
	bool spin = false;

	ag_thread_setup("ag-worker", AG_SCHED_NORMAL);
	audit_defer_begin();
	while (!w->stop) {
		if (w->stop_accept && w->listen[0].fd >= 0)
			close_listeners(w);
		int wait_ms = 200;

		if (w->hold_next_ms) {
			uint64_t now_ms = now_ns_mono() / 1000000ull;

			wait_ms = w->hold_next_ms <= now_ms ? 0
				: w->hold_next_ms - now_ms < 200 ? (int)(w->hold_next_ms - now_ms) : 200;
		}
		if (w->idle)
			wait_ms = 0;   /* put off by the tick below: run next pass, not after a sleep */
		int n = wait_events(w, evs, 256, wait_ms, &spin);

		handle_events(w, evs, n);
		resume_held(w);
		if (w->idle) {
			/* Work put off (conn_want_idle()) waits for what came in
			 * meanwhile: one look, then it runs. Its connections
			 * are freed only after (below), and nothing the idle ops
			 * do puts more off. */
			handle_events(w, evs, epoll_wait(w->epfd, evs, 256, 0));
			while (w->idle) {
				struct conn *c = w->idle;

				w->idle = c->idle_next;
				c->on_idle_list = false;
				conn_idle_now(c);
			}
		}
		while (w->dead) {
			struct conn *c = w->dead;

			w->dead = c->next;
			conn_free(c);
		}
		audit_defer_flush();   /* this pass's answers are out: now its events */
		uint64_t now = now_ns_mono();
		if (w->accept_paused_until && now > w->accept_paused_until && !w->stop_accept)
			resume_accepting(w);
		if (now - last_tick > 200000000ull) {
			last_tick = now;
			check_deadlines(w);
			sweep_revoked(w);
			upool_tick(false);
			rec_tick();
			audit_defer_flush();
			audit_urgency_tick();
		}
	}
	upool_tick(true);
	audit_defer_end();
	return NULL;
}

void worker_stop_accepting(struct worker *w)
{
	w->stop_accept = 1;
	worker_wake(w);
}

int worker_start(struct worker *w)
{
	return -pthread_create(&w->thread, NULL, worker_main, w);
}

void worker_join(struct worker *w)
{
	w->stop = 1;
	worker_wake(w);
	pthread_join(w->thread, NULL);
	w->idle = NULL;   /* what is still put off runs at each Close below, or at the free */
	for (struct conn *c = w->conns, *next; c; c = next) {
		next = c->next;
		enforcer_conn_closed(c, "enforcer stopping");
		conn_close(c, false);
	}
	while (w->dead) {
		struct conn *c = w->dead;

		w->dead = c->next;
		conn_free(c);
	}
	close(w->epfd);
	if (w->wake.fd >= 0)
		close(w->wake.fd);
	w->wake.fd = -1;
	while (w->nspare)
		free(w->spare[--w->nspare]);
}
