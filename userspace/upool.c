// SPDX-License-Identifier: Apache-2.0
/* upool: idle upstream connections kept for reuse (upool.h says why). */
#include "upool.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "util.h"

struct kept {
	struct upool_key key;   /* key.bytes: owned copy */
	const struct upool_ops *ops;
	struct upool_leg leg;
	uint64_t since_ms;
};

static struct kept pool[UPOOL_MAX];
static int npool;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t mono_ms(void)
{
	return now_ns_mono() / 1000000ull;
}

void upool_release(const struct upool_ops *ops, struct upool_leg *leg)
{
	if (ops && ops->goodbye_len) {
		/* best effort, without waiting: the upstream learns we are gone */
		if (leg->ssl) {
			size_t w;

			ERR_clear_error();
			SSL_write_ex(leg->ssl, ops->goodbye, ops->goodbye_len, &w);
		} else {
			ssize_t r = send(leg->fd, ops->goodbye, ops->goodbye_len, MSG_NOSIGNAL | MSG_DONTWAIT);

			(void)r;
		}
	}
	SSL_free(leg->ssl);
	if (leg->fd >= 0)
		close(leg->fd);
	if (ops && ops->data_free && leg->data)
		ops->data_free(leg->data);
	memset(leg, 0, sizeof(*leg));
	leg->fd = -1;
}

/* Nothing came from the upstream while the leg was kept: no byte (an
 * error, a stray answer), no EOF, no reset. */
static bool quiet(const struct upool_leg *leg)
{
	char b;

	return recv(leg->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

static void remove_at(int i)
{
	memmove(pool + i, pool + i + 1, (size_t)(npool - i - 1) * sizeof(pool[0]));
	npool--;
}

static void let_go(struct kept *k)
{
	upool_release(k->ops, &k->leg);
	free((void *)k->key.bytes);
}

/* Agents are told apart by index: indexes keep their agent across
 * reloads (a reload that reorders agents is refused). */
static int agent_count(int agent_idx)
{
	int n = 0;

	for (int i = 0; i < npool; i++)
		n += pool[i].key.agent_idx == agent_idx;
	return n;
}

/* The entry to let go of to make room for one more of agent_idx (lock
 * held), or -1 when there is room: the agent's own oldest once it keeps
 * its share (max_per_agent), else, in a full pool, the oldest of the agent
 * keeping the most (so one agent's churn never pushes out the others'
 * sessions while it keeps more than they do). */
static int victim(int agent_idx, unsigned max_per_agent)
{
	int most = -1, most_n = 0;

	if ((unsigned)agent_count(agent_idx) >= max_per_agent) {
		for (int i = 0; i < npool; i++)
			if (pool[i].key.agent_idx == agent_idx)
				return i;
	}
	if (npool < UPOOL_MAX)
		return -1;
	for (int i = 0; i < npool; i++) {
		int n = agent_count(pool[i].key.agent_idx);

		/* oldest first; on a tie, the caller's own oldest */
		if (n > most_n || (n == most_n && pool[i].key.agent_idx == agent_idx &&
				   pool[most].key.agent_idx != agent_idx)) {
			most = i;
			most_n = n;
		}
	}
	return most;
}

void upool_put(const struct upool_key *k, unsigned max_per_agent, const struct upool_ops *ops,
	       struct upool_leg *leg)
{
	struct kept old = { .leg.fd = -1 }, e = { .key = *k, .ops = ops, .leg = *leg, .since_ms = mono_ms() };
	void *bytes = NULL;

	if (e.since_ms - leg->born_ms >= UPOOL_MAX_AGE_MS) {
		upool_release(ops, leg);
		return;
	}
	if (k->len && !(bytes = malloc(k->len))) {
		upool_release(ops, leg);
		return;
	}
	if (k->len)
		memcpy(bytes, k->bytes, k->len);
	e.key.bytes = bytes;
	pthread_mutex_lock(&lock);
	int v = victim(k->agent_idx, max_per_agent ? max_per_agent : 1);

	if (v >= 0) {
		old = pool[v];
		remove_at(v);
	}
	pool[npool++] = e;
	pthread_mutex_unlock(&lock);
	if (old.leg.fd >= 0)
		let_go(&old);
	memset(leg, 0, sizeof(*leg));
	leg->fd = -1;
}

static bool same_key(const struct upool_key *a, const struct upool_key *b)
{
	return a->policy == b->policy && a->agent_idx == b->agent_idx && a->target_idx == b->target_idx &&
	       a->len == b->len && (!a->len || memcmp(a->bytes, b->bytes, a->len) == 0);
}

bool upool_take(const struct upool_key *k, struct upool_leg *leg)
{
	for (;;) {
		struct kept e;
		int i;

		pthread_mutex_lock(&lock);
		for (i = npool - 1; i >= 0; i--)   /* the newest first */
			if (same_key(&pool[i].key, k))
				break;
		if (i < 0) {
			pthread_mutex_unlock(&lock);
			return false;
		}
		e = pool[i];
		remove_at(i);
		pthread_mutex_unlock(&lock);
		free((void *)e.key.bytes);
		if (!quiet(&e.leg) || (e.leg.ssl && SSL_has_pending(e.leg.ssl)) ||
		    mono_ms() - e.leg.born_ms >= UPOOL_MAX_AGE_MS) {
			upool_release(e.ops, &e.leg);
			continue;
		}
		*leg = e.leg;
		return true;
	}
}

void upool_tick(bool stopping)
{
	struct kept gone[UPOOL_MAX];
	uint64_t now;
	int n = 0;

	pthread_mutex_lock(&lock);
	/* the clock after the lock: a connection another worker pooled while
	 * this one waited for it is younger than a clock read before, and its
	 * idle time would wrap around to a huge one (closed at once) */
	now = mono_ms();
	for (int i = npool - 1; i >= 0; i--)
		if (stopping || now - pool[i].since_ms > UPOOL_IDLE_MS || now - pool[i].leg.born_ms >= UPOOL_MAX_AGE_MS ||
		    !quiet(&pool[i].leg)) {
			gone[n++] = pool[i];
			remove_at(i);
		}
	pthread_mutex_unlock(&lock);
	while (n)
		let_go(&gone[--n]);
}

int upool_count(void)
{
	int n;

	pthread_mutex_lock(&lock);
	n = npool;
	pthread_mutex_unlock(&lock);
	return n;
}
