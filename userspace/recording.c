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

#define SWEEP_EVERY_MS 5000
#define ZOUT (64 * 1024)

struct rec {
	int fd, ifd;            /* .rec (zlib stream), .idx (text) */
	z_stream zs;
	uint64_t off;           /* bytes recorded so far (inflated offset) */
	bool claimed;           /* a module records masked data itself */
	bool broken;            /* a write failed: stop recording this session */
	unsigned char *out;
};

static struct {
	pthread_mutex_t lock;
	char dir[4096];
	uint64_t max_bytes;
	uint32_t max_age_ms;
	atomic_bool on;
	_Atomic uint64_t last_sweep_ms;
	atomic_bool failing;
} R = { .lock = PTHREAD_MUTEX_INITIALIZER };

int rec_configure(const char *dir, uint64_t max_bytes, uint32_t max_age_ms)
{
	int err = 0;

	pthread_mutex_lock(&R.lock);
	if (!dir) {
		atomic_store(&R.on, false);
	} else if (!(err = mkdir_p(dir, 0700))) {
		chmod(dir, 0700);
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
	uint64_t bytes;
	time_t mtime;
};

static int cmp_sess(const void *a, const void *b)
{
	return strcmp(((const struct sess *)a)->name, ((const struct sess *)b)->name);
}

static void remove_session(const char *dir, const char *name)
{
	char p[4400];

	snprintf(p, sizeof(p), "%s/%s.rec", dir, name);
	unlink(p);
	snprintf(p, sizeof(p), "%s/%s.idx", dir, name);
	unlink(p);
}

/* Names start with the UTC start time, so name order is age order. */
static void sweep(const char *dir, uint64_t max_bytes, uint32_t max_age_ms, const char *keep)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	struct sess *v = NULL;
	size_t n = 0, cap = 0;
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
		size_t i;
		for (i = 0; i < n && strncmp(v[i].name, de->d_name, l - 4) ; i++)
			;
		if (i == n) {
			if (n == cap) {
				struct sess *nv = realloc(v, (cap = cap ? 2 * cap : 64) * sizeof(*v));

				if (!nv)
					break;
				v = nv;
			}
			snprintf(v[n].name, sizeof(v[n].name), "%.*s", (int)(l - 4), de->d_name);
			v[n].bytes = 0;
			v[n].mtime = st.st_mtime;
			n++;
		}
		v[i].bytes += st.st_size;
		if (st.st_mtime > v[i].mtime)
			v[i].mtime = st.st_mtime;
		total += st.st_size;
	}
	closedir(d);
	if (n)
		qsort(v, n, sizeof(*v), cmp_sess);
	for (size_t i = 0; i < n; i++) {
		bool old = (uint64_t)(now - v[i].mtime) * 1000 > max_age_ms;

		if (!old && total <= max_bytes)
			break;
		if (keep && strcmp(v[i].name, keep) == 0)
			continue;
		remove_session(dir, v[i].name);
		total -= v[i].bytes;
	}
	free(v);
}

static void maybe_sweep(void)
{
	uint64_t now = now_ns_mono() / 1000000ull, last = atomic_load(&R.last_sweep_ms);

	if (now - last < SWEEP_EVERY_MS && last)
		return;
	if (!atomic_compare_exchange_strong(&R.last_sweep_ms, &last, now))
		return;   /* another worker sweeps */
	sweep(R.dir, R.max_bytes, R.max_age_ms, NULL);
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
	if (!(r->out = malloc(ZOUT)) || deflateInit(&r->zs, Z_BEST_SPEED) != Z_OK) {
		free(r->out);
		free(r);
		r = NULL;
		goto fail;
	}
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

void rec_write(struct rec *r, int dir, const void *buf, size_t len)
{
	if (!r || r->broken || !len)
		return;
	r->zs.next_in = (Bytef *)buf;
	r->zs.avail_in = len;
	do {
		r->zs.next_out = r->out;
		r->zs.avail_out = ZOUT;
		if (deflate(&r->zs, Z_SYNC_FLUSH) == Z_STREAM_ERROR ||
		    write_all(r->fd, r->out, ZOUT - r->zs.avail_out)) {
			r->broken = true;
			return;
		}
	} while (r->zs.avail_out == 0);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	if (dprintf(r->ifd, "%" PRIu64 " %c %" PRIu64 " %zu\n",
		    (uint64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000, dir ? 'd' : 'u', r->off, len) < 0)
		r->broken = true;
	r->off += len;
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
	if (r->fd >= 0 && !r->broken) {
		r->zs.avail_in = 0;
		int rc;
		do {
			r->zs.next_out = r->out;
			r->zs.avail_out = ZOUT;
			rc = deflate(&r->zs, Z_FINISH);
			if (write_all(r->fd, r->out, ZOUT - r->zs.avail_out))
				break;
		} while (rc == Z_OK);
	}
	deflateEnd(&r->zs);
	if (r->fd >= 0)
		close(r->fd);
	if (r->ifd >= 0)
		close(r->ifd);
	free(r->out);
	free(r);
}
