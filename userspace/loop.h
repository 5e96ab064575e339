/* SPDX-License-Identifier: Apache-2.0 */
/*
 * loop: a worker thread with one epoll loop and its own SO_REUSEPORT
 * listeners on 127.0.0.1 and ::1. Connections accepted by a worker live and
 * die on it; nothing is shared between workers but the read-only policy.
 */
#ifndef AGENTGATE_LOOP_H
#define AGENTGATE_LOOP_H

#include <pthread.h>
#include <stdint.h>
#include "conn.h"

#define WORKER_SPARE_BUFS 64
#define BUSY_POLL_MAX_US 1000

struct worker {
	int id;
	int epfd;
	pthread_t thread;
	struct conn_end listen[2];      /* c == NULL marks a listener */
	struct conn_end wake;           /* an eventfd: the main thread's stop and stop_accept */
	struct conn *conns;             /* live */
	struct conn *dead;              /* closed this iteration, freed after it */
	struct conn *idle;              /* with work put off (conn_want_idle()); run before dead ones go */
	int nconns;
	size_t buf_bytes;               /* its connections' stream buffers (conn.c cap_note()) */
	volatile int stop;
	volatile int stop_accept;      /* set by the main thread; the worker closes its listeners */
	uint64_t accept_paused_until;   /* monotonic ns; 0 = accepting */
	void *spare[WORKER_SPARE_BUFS];  /* recycled CONN_BUF buffers */
	int nspare;
	const struct policy *swept;     /* the policy its connections were last checked against */
	uint32_t *bal_conns;            /* balance.bpf.c's counters for it; NULL: the kernel's hash */
	uint32_t *bal_pending;
	uint64_t hold_next_ms;          /* the earliest conn.hold_ms of its connections; 0: none held */
	unsigned busy_poll_us;          /* AGENTGATE_BUSY_POLL_US: polls this long before sleeping; 0: off */
	_Atomic uint64_t busy_caught;   /* events a poll found before the worker would have slept (status) */
};

/* A relay buffer (CONN_BUF bytes) from the worker's spares or malloc; NULL on ENOMEM. */
void *worker_buf_get(struct worker *w);
void worker_buf_put(struct worker *w, void *buf);   /* NULL-safe */

/* Creates the worker's listeners and epoll; 0 or -errno. */
int worker_init(struct worker *w, int id, uint16_t port4, uint16_t port6);
int worker_start(struct worker *w);
/* Closes listeners (stop accepting); live connections go on. */
void worker_stop_accepting(struct worker *w);
void worker_join(struct worker *w);

/* Registers fd with data pointer e for edge-triggered in/out. */
int worker_watch(struct worker *w, struct conn_end *e, uint32_t events);
/* Removes fd from the worker's epoll set (a socket handed over, still open). */
void worker_unwatch(struct worker *w, int fd);
/* Re-registers e: a socket still ready reports once more (edge-triggered). */
int worker_rearm(struct worker *w, struct conn_end *e, uint32_t events);
void worker_link(struct worker *w, struct conn *c);
void worker_retire(struct worker *w, struct conn *c);

#endif
