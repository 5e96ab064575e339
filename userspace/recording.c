/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "conn.h"
#include "enforcer.h"
#include "proto.h"
#include "recording.h"
#include "util.h"

/* The sweep runs at most this often (5 s; test knob, read once). */
static _Atomic uint64_t sweep_every_ms;
#define SWEEP_EVERY_MS env_ms("AGENTGATE_REC_SWEEP_MS", 5000, &sweep_every_ms)
#define ZOUT (64 * 1024)
/* Writes in one direction are gathered up to this many bytes and written
 * as one (deflate, sync flush, write, index line) when the direction
 * changes or the connection's event is handled (rec_sync()): a pipeline of
 * 5-byte messages cost a flush, two system calls and an index line each,
 * two seconds of CPU and seven times its size on disk per MiB (review). */
#define REC_PEND 8192

struct rec {
	int fd, ifd;            /* .rec (zlib stream), .idx (text) */
	z_stream zs;
	uint64_t off;           /* bytes recorded so far (inflated offset) */
	uint64_t disk;          /* bytes written to its two files */
	bool claimed;           /* a module records masked data itself */
	bool broken;            /* a write failed, or the session reached its cap: stop */
	char name[128];
	int agent;              /* the policy's agent index (agent_disk), or -1 */
	char agent_name[128];   /* as the index header names it ("" none): for the sweep */
	struct rec *next;       /* open recordings (R.open), which the sweep leaves alone */
	size_t npend;           /* bytes gathered in pend, from direction pdir */
	int pdir;
	uint64_t pend_us;       /* when the first of them was recorded */
	unsigned char pend[REC_PEND];
};

static struct {
	pthread_mutex_t lock;
	char dir[4096];
	uint64_t max_bytes;
	uint32_t max_age_ms;
	atomic_bool on;
	_Atomic uint64_t last_sweep_ms;
	atomic_bool failing;
	atomic_bool sweeping;       /* a sweep thread runs */
	_Atomic uint64_t open_disk; /* bytes the open recordings wrote (the sweep spares them) */
	_Atomic uint64_t agent_disk[AG_MAX_AGENTS];   /* the same, per agent */
	pthread_mutex_t open_lock;
	struct rec *open;
} R = { .lock = PTHREAD_MUTEX_INITIALIZER, .open_lock = PTHREAD_MUTEX_INITIALIZER };

/* One session's recording stops at an eighth of max_bytes (its index says
 * so), so that one session cannot take the room of all the others. */
static uint64_t session_cap(void)
{
	return R.max_bytes / 8 > 65536 ? R.max_bytes / 8 : 65536;
}

/* One agent's open sessions together stop at a quarter of max_bytes (at
 * least one session's cap), so one agent cannot stop the others' recording. */
static uint64_t agent_cap(void)
{
	return R.max_bytes / 4 > session_cap() ? R.max_bytes / 4 : session_cap();
}

int rec_configure(const char *dir, uint64_t max_bytes, uint32_t max_age_ms)
{
	char why[600];
	int err = 0;

	pthread_mutex_lock(&R.lock);
	if (!dir) {
		atomic_store(&R.on, false);
	} else if ((err = private_dir(dir, why, sizeof(why)))) {
		ag_log(LOG_LVL_ERR, "recording: %s", why);
	} else {
		snprintf(R.dir, sizeof(R.dir), "%s", dir);
		R.max_bytes = max_bytes ? max_bytes : REC_DEFAULT_MAX_BYTES;
		R.max_age_ms = max_age_ms ? max_age_ms : REC_DEFAULT_MAX_AGE_MS;
		atomic_store(&R.on, true);
	}
	pthread_mutex_unlock(&R.lock);
	return err;
}

bool rec_enabled(void)
{
	return atomic_load(&R.on);
}

/* ---- retention ----------------------------------------------------------- */

struct sess {
	char name[256];    /* without extension */
	const char *agent; /* an open session's agent (sweep()), else NULL */
	uint64_t bytes;    /* disk space (blocks), not file size: tiny sessions take a block each */
	time_t mtime;
};

static int cmp_sess(const void *a, const void *b)
{
	return strcmp(((const struct sess *)a)->name, ((const struct sess *)b)->name);
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(a, b);   /* NUL-terminated names at the start of each element */
}

static void remove_session(const char *dir, const char *name)
{
	char p[4400];

	snprintf(p, sizeof(p), "%s/%s.rec", dir, name);
	unlink(p);
	snprintf(p, sizeof(p), "%s/%s.idx", dir, name);
	unlink(p);
}

/* The agent a closed session's recording belongs to, from the header its
 * index starts with ("# {...,"agent":"name",...}"), into out; "" when the
 * index cannot be read or names none (a session of no agent, or a file
 * not ours: one bucket of their own). */
static void session_agent(const char *dir, const char *name, char *out, size_t cap)
{
	char p[4400], buf[2048];
	const char *a;
	json_t *h;
	ssize_t n;
	char *nl;
	int fd;

	out[0] = 0;
	snprintf(p, sizeof(p), "%s/%s.idx", dir, name);
	if ((fd = open(p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)) < 0)
		return;
	n = pread(fd, buf, sizeof(buf) - 1, 0);
	close(fd);
	if (n < 3 || buf[0] != '#' || buf[1] != ' ')
		return;
	buf[n] = 0;
	if (!(nl = strchr(buf, '\n')))
		return;   /* a header longer than the buffer: not one we wrote */
	if (!(h = json_loadb(buf + 2, (size_t)(nl - buf - 2), 0, NULL)))
		return;
	if ((a = json_string_value(json_object_get(h, "agent"))))
		snprintf(out, cap, "%s", a);
	json_decref(h);
}

/* An open recording as the sweep sees it: the name first (cmp_name). */
struct open_sess {
	char name[128];
	char agent[128];
};

#define SWEEP_AGENTS 1024   /* distinct agents told apart; more share one bucket */

/*
 * Over max_bytes, the space goes back from the agent whose recordings take
 * the most (open sessions counted, though never deleted), oldest session
 * first, until the total fits: a plain oldest-first sweep let an agent that
 * opens many sessions push every other agent's recordings out, its own
 * earlier sessions' evidence along with them (review, stop 37). v[0..m) are
 * the sessions left after the age sweep, oldest first; gone[i] marks those
 * deleted or open (not deletable). Returns the total left.
 */
static uint64_t sweep_fair(const char *dir, struct sess *v, size_t m, const bool *open_,
			   uint64_t total, uint64_t max_bytes)
{
	char (*names)[128] = calloc(SWEEP_AGENTS, sizeof(*names));
	uint32_t *ag = calloc(m ? m : 1, sizeof(*ag)), *order = calloc(m ? m : 1, sizeof(*order));
	size_t *first = calloc(SWEEP_AGENTS + 1, sizeof(*first)), *cur = calloc(SWEEP_AGENTS, sizeof(*cur));
	uint64_t *use = calloc(SWEEP_AGENTS, sizeof(*use));
	uint32_t k = 0;

	if (!names || !ag || !order || !first || !cur || !use) {
		/* no memory for the fair choice: oldest first, as before */
		for (size_t i = 0; i < m && total > max_bytes; i++) {
			if (open_[i])
				continue;
			remove_session(dir, v[i].name);
			total -= v[i].bytes;
		}
		goto out;
	}
	for (size_t i = 0; i < m; i++) {
		char a[128];
		uint32_t j;

		if (open_[i])   /* an open session's agent: its struct rec knows it */
			snprintf(a, sizeof(a), "%s", v[i].agent);
		else
			session_agent(dir, v[i].name, a, sizeof(a));
		for (j = 0; j < k && strcmp(names[j], a); j++)
			;
		if (j == k) {
			if (k < SWEEP_AGENTS)
				memcpy(names[k++], a, sizeof(a));
			else
				j = SWEEP_AGENTS - 1;   /* the last bucket holds the rest */
		}
		ag[i] = j;
		use[j] += v[i].bytes;
		first[j + 1]++;
	}
	for (uint32_t j = 0; j < k; j++)   /* each agent's sessions, oldest first */
		first[j + 1] += first[j];
	for (uint32_t j = 0; j < k; j++)
		cur[j] = first[j];
	for (size_t i = 0; i < m; i++)
		order[cur[ag[i]]++] = (uint32_t)i;
	for (uint32_t j = 0; j < k; j++)
		cur[j] = first[j];
	while (total > max_bytes) {
		uint32_t best = k;

		for (uint32_t j = 0; j < k; j++) {
			while (cur[j] < first[j + 1] && open_[order[cur[j]]])
				cur[j]++;   /* open: skipped, still counted in use */
			if (cur[j] < first[j + 1] && (best == k || use[j] > use[best]))
				best = j;
		}
		if (best == k)
			break;   /* only open sessions left */
		size_t i = order[cur[best]++];

		remove_session(dir, v[i].name);
		total -= v[i].bytes;
		use[best] -= v[i].bytes;
	}
out:
	free(names);
	free(ag);
	free(order);
	free(first);
	free(cur);
	free(use);
	return total;
}

/*
 * Names start with the UTC start time, so name order is age order. One
 * entry per file, sorted, then a session's two files merged: O(n log n) in
 * the number of files (an agent can make many sessions). Sessions still
 * open are counted, never deleted (their writer caps them). Sessions older
 * than max_age go first; then, over max_bytes, sweep_fair() chooses.
 */
static void sweep(const char *dir, uint64_t max_bytes, uint32_t max_age_ms)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	struct sess *v = NULL;
	struct open_sess *open_names = NULL;
	bool *open_ = NULL;
	size_t n = 0, cap = 0, nopen = 0, m = 0, left = 0;
	uint64_t total = 0;
	time_t now = time(NULL);

	if (!d)
		return;
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name);
		char p[4400];
		struct stat st;

		if (l < 5 || l >= 250 || (strcmp(de->d_name + l - 4, ".rec") &&
					  strcmp(de->d_name + l - 4, ".idx")))
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
		if (lstat(p, &st) || !S_ISREG(st.st_mode))
			continue;
		if (n == cap) {
			struct sess *nv = realloc(v, (cap = cap ? 2 * cap : 256) * sizeof(*v));

			if (!nv)
				break;
			v = nv;
		}
		snprintf(v[n].name, sizeof(v[n].name), "%.*s", (int)(l - 4), de->d_name);
		v[n].agent = NULL;
		v[n].bytes = (uint64_t)st.st_blocks * 512;
		v[n].mtime = st.st_mtime;
		total += v[n].bytes;
		n++;
	}
	closedir(d);
	if (n)
		qsort(v, n, sizeof(*v), cmp_sess);
	for (size_t i = 0; i < n; i++) {   /* merge a session's two files */
		if (m && strcmp(v[m - 1].name, v[i].name) == 0) {
			v[m - 1].bytes += v[i].bytes;
			if (v[i].mtime > v[m - 1].mtime)
				v[m - 1].mtime = v[i].mtime;
		} else {
			v[m++] = v[i];
		}
	}
	pthread_mutex_lock(&R.open_lock);
	for (struct rec *r = R.open; r; r = r->next)
		nopen++;
	if (nopen && (open_names = calloc(nopen, sizeof(*open_names)))) {
		size_t k = 0;

		for (struct rec *r = R.open; r; r = r->next, k++) {
			memcpy(open_names[k].name, r->name, sizeof(r->name));
			memcpy(open_names[k].agent, r->agent_name, sizeof(r->agent_name));
		}
	}
	pthread_mutex_unlock(&R.open_lock);
	if ((nopen && !open_names) || !(open_ = calloc(m ? m : 1, sizeof(*open_)))) {
		free(open_names);
		free(v);
		return;   /* cannot tell which are open: delete nothing */
	}
	if (nopen)
		qsort(open_names, nopen, sizeof(*open_names), cmp_name);
	for (size_t i = 0; i < m; i++) {
		/* a session newer than now (the wall clock stepped back, or it
		 * closed during the scan) is young: its age must not wrap */
		bool old = now > v[i].mtime && (uint64_t)(now - v[i].mtime) * 1000 > max_age_ms;
		const struct open_sess *o = nopen ? bsearch(v[i].name, open_names, nopen,
							    sizeof(*open_names), cmp_name) : NULL;

		if (o) {   /* still being written: kept, counted for its agent */
			v[i].agent = o->agent;
			open_[left] = true;
		} else if (old) {
			remove_session(dir, v[i].name);
			total -= v[i].bytes;
			continue;
		}
		v[left++] = v[i];
	}
	if (total > max_bytes)
		sweep_fair(dir, v, left, open_, total, max_bytes);
	free(open_);
	free(open_names);
	free(v);
}

static void *sweep_thread(void *arg)
{
	char dir[sizeof(R.dir)];
	uint64_t max_bytes;
	uint32_t max_age_ms;

	(void)arg;
	ag_thread_setup("ag-rec-sweep", AG_SCHED_IDLE);
	pthread_mutex_lock(&R.lock);
	memcpy(dir, R.dir, sizeof(dir));
	max_bytes = R.max_bytes;
	max_age_ms = R.max_age_ms;
	pthread_mutex_unlock(&R.lock);
	sweep(dir, max_bytes, max_age_ms);
	atomic_store(&R.sweeping, false);
	return NULL;
}

/* At most every SWEEP_EVERY_MS, on a thread of its own: a directory of
 * many sessions takes a while to read, and workers relay every agent's
 * traffic. */
static void maybe_sweep(void)
{
	uint64_t now = now_ns_mono() / 1000000ull, last = atomic_load(&R.last_sweep_ms);
	pthread_attr_t at;
	pthread_t t;

	if (now - last < SWEEP_EVERY_MS && last)
		return;
	if (!atomic_compare_exchange_strong(&R.last_sweep_ms, &last, now))
		return;   /* another worker sweeps */
	if (atomic_exchange(&R.sweeping, true))
		return;   /* the last one still runs */
	if (pthread_attr_init(&at) == 0) {
		pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
		if (pthread_create(&t, &at, sweep_thread, NULL) == 0) {
			pthread_attr_destroy(&at);
			return;
		}
		pthread_attr_destroy(&at);
	}
	atomic_store(&R.sweeping, false);
}

/* From the workers' tick: age retention also when nothing is recorded (it
 * ran only as sessions were written, so old recordings stayed for as long
 * as the agents were idle: review, stop 28), and at the start; every half
 * max_age, at most once a minute. */
void rec_tick(void)
{
	uint64_t now = now_ns_mono() / 1000000ull, last = atomic_load(&R.last_sweep_ms);

	uint64_t every = R.max_age_ms / 2 < REC_IDLE_SWEEP_MS ? R.max_age_ms / 2 : REC_IDLE_SWEEP_MS;

	if (!atomic_load(&R.on) || (last && now - last < every))
		return;
	maybe_sweep();   /* itself at most every SWEEP_EVERY_MS */
}

/* ---- recording ----------------------------------------------------------- */

static json_t *header(struct conn *c)
{
	char src[64], dst[64], cookie[24];
	json_t *h;

	addr_str(c->client_addr, src, sizeof(src));
	addr_str(c->pair.orig_addr, dst, sizeof(dst));
	snprintf(cookie, sizeof(cookie), "%llu", (unsigned long long)c->pair.sock_cookie);
	h = json_pack("{s:s, s:I, s:{s:s, s:i}, s:{s:s, s:i}, s:s}", "connection_uid", cookie,
		      "start_ms", (json_int_t)now_ms_realtime(), "src", "ip", src, "port", c->client_port,
		      "dst", "ip", dst, "port", c->pair.orig_port, "upstream", c->upstream_desc);
	if (c->agent_idx >= 0 && c->policy)
		json_object_set_new(h, "agent", json_string(c->policy->agents[c->agent_idx].name));
	if (c->target_idx >= 0 && c->policy)
		json_object_set_new(h, "target", json_string(c->policy->targets[c->target_idx].name));
	if (c->ops)
		json_object_set_new(h, "module", json_string(c->ops->name));
	return h;
}

struct rec *rec_open(struct conn *c)
{
	char name[128], p[4400], ts[32];
	struct rec *r;
	time_t t = time(NULL);
	struct tm tm;

	if (!atomic_load(&R.on))
		return NULL;
	maybe_sweep();
	gmtime_r(&t, &tm);
	strftime(ts, sizeof(ts), "%Y%m%dT%H%M%SZ", &tm);
	snprintf(name, sizeof(name), "%s-%llu", ts, (unsigned long long)c->pair.sock_cookie);
	if (!(r = calloc(1, sizeof(*r))))
		goto fail;
	r->fd = r->ifd = -1;
	r->agent = c->agent_idx >= 0 && c->agent_idx < AG_MAX_AGENTS ? c->agent_idx : -1;
	if (c->agent_idx >= 0 && c->policy)
		snprintf(r->agent_name, sizeof(r->agent_name), "%s", c->policy->agents[c->agent_idx].name);
	snprintf(r->name, sizeof(r->name), "%s", name);
	/* A 8 KiB window and memLevel 6: 64 KiB of deflate state per open
	 * recording instead of 256 KiB (zlib's defaults), which every idle
	 * recorded connection kept; the replay inflates any window. */
	if (deflateInit2(&r->zs, Z_BEST_SPEED, Z_DEFLATED, 13, 6, Z_DEFAULT_STRATEGY) != Z_OK) {
		free(r);
		r = NULL;
		goto fail;
	}
	/* open before its files exist: a sweep lists the directory, then
	 * the open recordings, so any file of ours it sees is known open (its
	 * files made first, a sweep in between took them for a closed
	 * session's, and could delete them) */
	pthread_mutex_lock(&R.open_lock);
	r->next = R.open;
	R.open = r;
	pthread_mutex_unlock(&R.open_lock);
	snprintf(p, sizeof(p), "%s/%s.rec", R.dir, name);
	r->fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	snprintf(p, sizeof(p), "%s/%s.idx", R.dir, name);
	if (r->fd >= 0)
		r->ifd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (r->ifd < 0)
		goto fail;
	json_t *h = header(c);
	char *hs = h ? json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	json_decref(h);
	if (!hs || dprintf(r->ifd, "# %s\n", hs) < 0) {
		free(hs);
		goto fail;
	}
	free(hs);
	atomic_store(&R.failing, false);
	return r;
fail:
	if (!atomic_exchange(&R.failing, true))
		ag_log(LOG_LVL_WARN, "recording: cannot record session '%s' in '%s': %s", name, R.dir,
		       strerror(errno));
	rec_close(r);
	return NULL;
}

/* deflate's output buffer: the thread's, not each recording's. */
static unsigned char *thread_zout(void)
{
	static __thread unsigned char *zout;

	if (!zout)
		zout = malloc(ZOUT);
	return zout;
}

/* Writes len bytes of direction dir, recorded at ts_us, to r's files. */
static void put(struct rec *r, int dir, const void *buf, size_t len, uint64_t ts_us)
{
	unsigned char *zout;
	uint64_t before = r->disk;
	int w;

	if (r->broken)
		return;   /* stopped (rec_sync may have just stopped it): one truncation line */
	if (!(zout = thread_zout())) {
		r->broken = true;
		return;
	}
	if (r->disk >= session_cap()) {
		/* the reader sees where it stops, and why */
		dprintf(r->ifd, "# truncated: the recording reached %" PRIu64 " bytes, an eighth of "
			"recording.max_bytes\n", r->disk);
		r->broken = true;
		return;
	}
	/* the sweep never deletes a session still open: together they stop
	 * at max_bytes, however many there are */
	if (atomic_load(&R.open_disk) >= R.max_bytes) {
		dprintf(r->ifd, "# truncated: the open recordings together reached recording.max_bytes\n");
		r->broken = true;
		return;
	}
	/* one agent's open sessions take at most a quarter of it: held open
	 * with incompressible data, they stopped every agent's recording
	 * (review, stop 28) */
	if (r->agent >= 0 && atomic_load(&R.agent_disk[r->agent]) >= agent_cap()) {
		dprintf(r->ifd, "# truncated: this agent's open recordings together reached a quarter of "
			"recording.max_bytes\n");
		r->broken = true;
		return;
	}
	r->zs.next_in = (Bytef *)buf;
	r->zs.avail_in = len;
	do {
		r->zs.next_out = zout;
		r->zs.avail_out = ZOUT;
		if (deflate(&r->zs, Z_SYNC_FLUSH) == Z_STREAM_ERROR ||
		    write_all(r->fd, zout, ZOUT - r->zs.avail_out)) {
			r->broken = true;
			break;
		}
		r->disk += ZOUT - r->zs.avail_out;
	} while (r->zs.avail_out == 0);
	if (!r->broken) {
		if ((w = dprintf(r->ifd, "%" PRIu64 " %c %" PRIu64 " %zu\n", ts_us, dir ? 'd' : 'u', r->off,
				 len)) < 0)
			r->broken = true;
		else
			r->disk += (uint64_t)w;
		r->off += len;
	}
	atomic_fetch_add(&R.open_disk, r->disk - before);
	if (r->agent >= 0)
		atomic_fetch_add(&R.agent_disk[r->agent], r->disk - before);
	maybe_sweep();   /* a long session fills the directory too */
}

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

void rec_sync(struct rec *r)
{
	if (!r || !r->npend)
		return;
	if (!r->broken)
		put(r, r->pdir, r->pend, r->npend, r->pend_us);
	r->npend = 0;
}

void rec_write(struct rec *r, int dir, const void *buf, size_t len)
{
	if (!r || r->broken || !len)
		return;
	if (r->npend && (dir != r->pdir || r->npend + len > REC_PEND))
		rec_sync(r);
	if (len >= REC_PEND) {
		put(r, dir, buf, len, now_us());
		return;
	}
	if (!r->npend) {
		r->pdir = dir;
		r->pend_us = now_us();
	}
	memcpy(r->pend + r->npend, buf, len);
	r->npend += len;
}

void rec_claim(struct rec *r)
{
	if (r)
		r->claimed = true;
}

void rec_relay(struct rec **rp, struct conn *c, int dir, const void *buf, size_t len)
{
	if (!atomic_load(&R.on))
		return;
	if (!*rp && !(*rp = rec_open(c)))
		return;
	if (!(*rp)->claimed)
		rec_write(*rp, dir, buf, len);
}

void rec_close(struct rec *r)
{
	if (!r)
		return;
	rec_sync(r);
	atomic_fetch_sub(&R.open_disk, r->disk);
	if (r->agent >= 0)
		atomic_fetch_sub(&R.agent_disk[r->agent], r->disk);
	pthread_mutex_lock(&R.open_lock);
	for (struct rec **pp = &R.open; *pp; pp = &(*pp)->next)
		if (*pp == r) {
			*pp = r->next;
			break;
		}
	pthread_mutex_unlock(&R.open_lock);
	unsigned char *zout = thread_zout();

	if (r->fd >= 0 && !r->broken && zout) {
		r->zs.avail_in = 0;
		int rc;
		do {
			r->zs.next_out = zout;
			r->zs.avail_out = ZOUT;
			rc = deflate(&r->zs, Z_FINISH);
			if (write_all(r->fd, zout, ZOUT - r->zs.avail_out))
				break;
		} while (rc == Z_OK);
	}
	deflateEnd(&r->zs);
	if (r->fd >= 0)
		close(r->fd);
	if (r->ifd >= 0)
		close(r->ifd);
	free(r);
}
