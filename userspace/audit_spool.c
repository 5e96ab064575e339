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
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "audit_spool.h"
#include "util.h"

#define WBUF_CAP (4u << 20)   /* the thread writes it every SPOOL_FLUSH_MS */
#define READ_CAP_MAX (16u << 20)   /* one event line is never larger */
#define DROPPED_MAX 16

struct seg {
	uint64_t first, last;   /* last = first - 1 while empty */
	uint64_t wlast;         /* last sequence written to the file (readers stop here) */
	uint64_t written;       /* bytes written to the .log */
	uint64_t bytes;         /* bytes it costs: on disk + buffered; compressed once sealed */
	bool closed;            /* no longer the active segment */
	bool sealed;            /* .z exists, .log is gone */
	uint64_t closed_ms;     /* when it closed (0: found closed at open) */
	bool short_seen;        /* its file was found to end before last (reported) */
	bool unsynced;          /* closed with lines written since the last fdatasync */
};

struct spool_reader {
	struct spool *s;
	char id[64];
	int cfd;                /* cursor file */
	uint64_t acked;         /* last acknowledged sequence */
	uint64_t pos;           /* next sequence to read */
	bool keeps_copy;        /* its sink gives back what it holds after a power cut */
	/* the segment being read: its bytes (inflated when sealed) are loaded
	 * lazily; off is the byte offset of line off_seq */
	uint64_t seg_first;
	bool seg_sealed;
	int lfd;                /* .log of an unsealed segment */
	char *zdata;            /* inflated sealed segment */
	size_t zlen;
	uint64_t off_seq, off;
	char *buf;
	size_t bcap;
	size_t line_avg;        /* bytes per line (newline included) of the last batch */
	uint64_t bytes_read;    /* by pread from .log files, for the tests */
	const char **line;
	size_t *len;
	size_t lcap;
};

struct spool {
	pthread_mutex_t lock;
	pthread_cond_t data;    /* readers wait here */
	pthread_cond_t tick;    /* the spool thread waits here */
	char dir[4096];
	uint64_t max_bytes, seg_max;
	uint64_t seal_grace_ms;
	struct seg *segs;
	size_t nsegs, scap;
	int fd;                 /* active segment */
	char *wbuf, *spare;     /* appends go to wbuf; the thread writes the other */
	size_t wlen;
	bool flushing;          /* the thread is writing a swapped-out buffer */
	pthread_cond_t flushed;
	uint64_t last_seq;
	uint64_t total;
	uint64_t unsynced;      /* events written since the last fdatasync */
	uint64_t last_sync_ms;
	uint64_t sync_mark;     /* last sequence written at the previous sync point */
	uint64_t nsyncs;
	uint64_t nsyncs_closed; /* of closed segments' files (tests) */
	int closed_syncing;     /* closed segments being synced without the lock */
	/* every line up to this one is on disk (fdatasync'ed): what readers
	 * whose sink keeps no copy may read (reader_end_locked()) */
	uint64_t synced_seq;
	struct spool_reader *readers[SPOOL_MAX_READERS];
	int nreaders;
	/* the dead-letter file: its own lock (counting an existing file's
	 * lines must not hold up the appends, which take lock) */
	pthread_mutex_t dl_lock;
	int dlfd;
	uint64_t dl_bytes;                /* dead-letter.jsonl's size */
	uint64_t dl_synced;               /* how much of it is on disk (fdatasync'ed) */
	bool dl_dir_dirty;                /* its directory entry is not: created or rotated since */
	uint64_t dl_lines_old;            /* lines in dead-letter.jsonl.1 (this run's; -1: unknown) */
	uint64_t dl_lines;                /* lines in dead-letter.jsonl (this run's, or counted at open) */
	/* segments dropped from the list whose files the spool thread deletes
	 * once it released the lock (unlink_dropped); their bytes stay in
	 * total until the file is gone */
	struct dropped_seg { uint64_t first, bytes; bool sealed; } dropped[DROPPED_MAX];
	int ndropped;
	bool started, stop;
	bool quit;      /* readers wait no more: the sinks are stopping */
	pthread_t thr;
	void (*tick_fn)(void *);
	void *tick_arg;
	/* sequences a reader found missing from a closed segment's file (a
	 * power cut took its unsynced tail, or the file was damaged), not
	 * yet taken by spool_take_lost() */
	uint64_t lost, lost_first, lost_last;
};

static uint64_t mono_ms(void)
{
	return now_ns_mono() / 1000000ull;
}

static void seg_path(const struct spool *s, uint64_t first, const char *ext, char *out, size_t n)
{
	snprintf(out, n, "%s/seg-%020" PRIu64 "%s", s->dir, first, ext);
}

static struct seg *active(struct spool *s)
{
	return &s->segs[s->nsegs - 1];
}

static int seg_push(struct spool *s, struct seg sg)
{
	if (s->nsegs == s->scap) {
		size_t cap = s->scap ? 2 * s->scap : 16;
		struct seg *n = realloc(s->segs, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		s->segs = n;
		s->scap = cap;
	}
	s->segs[s->nsegs++] = sg;
	return 0;
}

static int open_active(struct spool *s, uint64_t first)
{
	char path[4200];
	int fd;

	seg_path(s, first, ".log", path, sizeof(path));
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -errno;
	s->fd = fd;
	return 0;
}

/* ---- recovery ------------------------------------------------------------ */

static int slurp(const char *path, char **out, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	char *b;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) || !(b = malloc(st.st_size + 1))) {
		close(fd);
		return -ENOMEM;
	}
	size_t got = 0;
	while (got < (size_t)st.st_size) {
		ssize_t n = pread(fd, b + got, st.st_size - got, got);

		if (n <= 0)
			break;
		got += n;
	}
	close(fd);
	*out = b;
	*len = got;
	return 0;
}

/* Inflates a sealed segment into a malloc'ed buffer. */
static int inflate_file(const char *path, char **out, size_t *len)
{
	char *z, *raw = NULL;
	size_t zlen, cap = 0;
	z_stream zs = { 0 };
	int err = slurp(path, &z, &zlen), rc;

	if (err)
		return err;
	if (inflateInit(&zs) != Z_OK) {
		free(z);
		return -ENOMEM;
	}
	zs.next_in = (Bytef *)z;
	zs.avail_in = zlen;
	do {
		if (zs.total_out == cap) {
			size_t ncap = cap ? 2 * cap : 4 * zlen + 4096;
			char *n = realloc(raw, ncap);

			if (!n) {
				rc = Z_MEM_ERROR;
				break;
			}
			raw = n;
			cap = ncap;
		}
		zs.next_out = (Bytef *)raw + zs.total_out;
		zs.avail_out = cap - zs.total_out;
		rc = inflate(&zs, Z_NO_FLUSH);
	} while (rc == Z_OK);
	*len = zs.total_out;
	inflateEnd(&zs);
	free(z);
	if (rc != Z_STREAM_END) {
		free(raw);
		/* -EIO only for data that is not a whole zlib stream: readers
		 * take that segment for lost (hole_skip()) */
		return rc == Z_MEM_ERROR ? -ENOMEM : -EIO;
	}
	*out = raw;
	return 0;
}

static uint64_t count_lines(const char *b, size_t n)
{
	uint64_t c = 0;

	for (const char *p = b; (p = memchr(p, '\n', b + n - p)); p++)
		c++;
	return c;
}

static int cmp_seg(const void *a, const void *b)
{
	const struct seg *x = a, *y = b;

	return x->first < y->first ? -1 : x->first > y->first;
}

/* Cuts a torn last line off the active segment; returns its line count. */
static int recover_active(struct spool *s, struct seg *sg)
{
	char path[4200], *b;
	size_t n;
	int err;

	seg_path(s, sg->first, ".log", path, sizeof(path));
	if ((err = slurp(path, &b, &n)))
		return err;
	size_t keep = n;
	while (keep && b[keep - 1] != '\n')
		keep--;
	if (keep != n && truncate(path, keep))
		err = -errno;
	sg->last = sg->first + count_lines(b, keep) - 1;
	sg->bytes = sg->written = keep;
	free(b);
	return err;
}

static int scan_dir(struct spool *s)
{
	DIR *d = opendir(s->dir);
	struct dirent *de;
	int err = 0;

	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		char path[4200], ext[8] = "";
		uint64_t first;
		struct stat st;

		if (sscanf(de->d_name, "seg-%20" SCNu64 "%7s", &first, ext) != 2 || !first)
			continue;
		snprintf(path, sizeof(path), "%s/%s", s->dir, de->d_name);
		if (strcmp(ext, ".z.tmp") == 0) {   /* a seal the crash interrupted */
			unlink(path);
			continue;
		}
		if ((strcmp(ext, ".log") && strcmp(ext, ".z")) || stat(path, &st))
			continue;
		bool sealed = strcmp(ext, ".z") == 0;
		size_t i;
		for (i = 0; i < s->nsegs && s->segs[i].first != first; i++)
			;
		if (i < s->nsegs) {
			/* Both forms: the .z is complete (renamed after its
			 * fsync), the .log was about to be removed. */
			char lp[4200];

			seg_path(s, first, ".log", lp, sizeof(lp));
			unlink(lp);
			if (sealed)
				s->segs[i].bytes = st.st_size;
			s->segs[i].sealed = true;
			continue;
		}
		if ((err = seg_push(s, (struct seg){ .first = first, .bytes = st.st_size,
						     .written = st.st_size, .sealed = sealed,
						     .closed = true })))
			break;
	}
	closedir(d);
	return err;
}

static int recover(struct spool *s)
{
	int err = scan_dir(s);

	if (err)
		return err;
	if (s->nsegs)
		qsort(s->segs, s->nsegs, sizeof(*s->segs), cmp_seg);
	for (size_t i = 0; i + 1 < s->nsegs; i++)
		s->segs[i].last = s->segs[i].wlast = s->segs[i + 1].first - 1;
	if (s->nsegs && !active(s)->sealed) {
		struct seg *a = active(s);

		if ((err = recover_active(s, a)))
			return err;
		a->closed = false;
		a->wlast = a->last;
		s->last_seq = a->last;
		err = open_active(s, a->first);
	} else {
		uint64_t next = 1;

		if (s->nsegs) {   /* the active segment was sealed but its successor never created */
			struct seg *a = active(s);
			char path[4200], *b;
			size_t n;

			seg_path(s, a->first, ".z", path, sizeof(path));
			if ((err = inflate_file(path, &b, &n)))
				return err;
			a->last = a->wlast = a->first + count_lines(b, n) - 1;
			free(b);
			next = a->last + 1;
		}
		s->last_seq = next - 1;
		if ((err = seg_push(s, (struct seg){ .first = next, .last = next - 1,
						     .wlast = next - 1 })))
			return err;
		err = open_active(s, next);
	}
	for (size_t i = 0; i < s->nsegs; i++)
		s->total += s->segs[i].bytes;
	return err;
}

static int sync_unlocked(struct spool *s);

int spool_open(struct spool **out, const char *dir, uint64_t max_bytes, uint64_t *last_seq)
{
	struct spool *s = calloc(1, sizeof(*s));
	int err;

	if (!s)
		return -ENOMEM;
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->dl_lock, NULL);
	pthread_cond_init(&s->data, NULL);
	pthread_cond_init(&s->tick, NULL);
	pthread_cond_init(&s->flushed, NULL);
	s->fd = s->dlfd = -1;
	snprintf(s->dir, sizeof(s->dir), "%s", dir);
	s->max_bytes = max_bytes ? max_bytes : SPOOL_DEFAULT_MAX_BYTES;
	s->seal_grace_ms = SPOOL_SEAL_GRACE_MS;
	/* Several segments per spool, so deleting one frees a useful part. */
	s->seg_max = s->max_bytes / 8 < SPOOL_SEG_MAX ? s->max_bytes / 8 : SPOOL_SEG_MAX;
	if (s->seg_max < 4096)
		s->seg_max = 4096;
	s->last_sync_ms = mono_ms();
	char dwhy[600];

	/* the spool's files are opened by name, with root's rights: in a
	 * directory others could write, a symbolic link put in a segment's
	 * place would have events appended to any file */
	if ((err = private_dir(dir, dwhy, sizeof(dwhy))))
		ag_log(LOG_LVL_ERR, "audit: spool: %s", dwhy);
	if (err || !(s->wbuf = malloc(2 * WBUF_CAP)) || !(s->spare = malloc(2 * WBUF_CAP)) ||
	    (err = recover(s))) {
		spool_close(s);
		return err ? err : -ENOMEM;
	}
	/* A run killed before its sync left lines in the page cache only: on
	 * disk before any reader that keeps no copy reads them */
	for (size_t i = 0; i < s->nsegs; i++)
		s->segs[i].unsynced = !s->segs[i].sealed;
	pthread_mutex_lock(&s->lock);
	sync_unlocked(s);
	s->synced_seq = s->last_seq;
	pthread_mutex_unlock(&s->lock);
	*last_seq = s->last_seq;
	*out = s;
	return 0;
}

/* ---- writing ------------------------------------------------------------- */

/* Appends buf whole or not at all: after a short write (ENOSPC, EIO) the
 * segment is cut back to base, its size before, so that retrying the
 * whole buffer later cannot leave half a line glued to a repeat of the
 * rest (a torn line, and every later line one sequence off). */
static int append_whole(int fd, const void *buf, size_t len, uint64_t base)
{
	int err = write_all(fd, buf, len);

	if (err && ftruncate(fd, (off_t)base))
		ag_log(LOG_LVL_ERR, "audit: spool: cannot cut a segment back after a failed write: %s",
		       strerror(errno));
	return err;
}

/* Writes the buffer with the lock held; waits for a write the thread has
 * in progress first, so the file keeps the append order. */
static int flush_locked(struct spool *s)
{
	struct seg *a;
	int err;

	while (s->flushing)
		pthread_cond_wait(&s->flushed, &s->lock);
	a = active(s);
	if (!s->wlen)
		return 0;
	if ((err = append_whole(s->fd, s->wbuf, s->wlen, a->written)))
		return err;   /* kept: retried by the next flush */
	a->written += s->wlen;
	a->wlast = a->last;
	s->wlen = 0;
	pthread_cond_broadcast(&s->data);
	return 0;
}

static bool all_keep_copies_locked(struct spool *s)
{
	for (int i = 0; i < s->nreaders; i++)
		if (!s->readers[i]->keeps_copy)
			return false;
	return true;
}

static uint64_t min_acked_locked(struct spool *s)
{
	uint64_t m = s->last_seq;

	for (int i = 0; i < s->nreaders; i++)
		if (s->readers[i]->acked < m)
			m = s->readers[i]->acked;
	return m;
}

/* Deletes the oldest sealed segments every reader is done with. The
 * newest closed one stays while the active segment has no line in its
 * file: after a crash the audit chain resumes from the spool's last line,
 * and a run that found none would chain from the last checkpoint instead
 * and read as reordered (review, stop 48; seal_pending_locked() keeps it
 * for the same reason). */
static void gc_locked(struct spool *s)
{
	uint64_t m;
	size_t k = 0, keep;

	if (!s->started)
		return;
	m = min_acked_locked(s);
	keep = s->nsegs ? s->nsegs - 1 : 0;
	if (keep && active(s)->wlast < active(s)->first)
		keep--;
	while (k < keep && s->segs[k].closed && s->segs[k].last <= m) {
		char path[4200];

		seg_path(s, s->segs[k].first, s->segs[k].sealed ? ".z" : ".log", path, sizeof(path));
		unlink(path);
		s->total -= s->segs[k].bytes;
		k++;
	}
	if (k) {
		memmove(s->segs, s->segs + k, (s->nsegs - k) * sizeof(*s->segs));
		s->nsegs -= k;
	}
}

static int roll_locked(struct spool *s, uint64_t next)
{
	int err = flush_locked(s);

	if (err)
		return err;
	if ((err = seg_push(s, (struct seg){ .first = next, .last = next - 1, .wlast = next - 1 })))
		return err;
	s->segs[s->nsegs - 2].closed = true;
	s->segs[s->nsegs - 2].closed_ms = mono_ms();
	/* What was written to it since the last fdatasync is synced at the
	 * thread's next sync point, before the new segment: the periodic
	 * sync is of the active segment only, and a seal comes 10 s later
	 * if at all, so a power cut in between took the closed segment's
	 * tail while the lines after it, in the next one, were on disk
	 * (review). The thread may be syncing a dup of this fd. */
	s->segs[s->nsegs - 2].unsynced = s->unsynced > 0;
	close(s->fd);
	s->fd = -1;
	if ((err = open_active(s, next))) {
		s->nsegs--;
		s->segs[s->nsegs - 1].closed = false;
		open_active(s, s->segs[s->nsegs - 1].first);
		return err;
	}
	pthread_cond_signal(&s->tick);   /* seal it soon */
	return 0;
}

static bool room_locked(struct spool *s, size_t len)
{
	if (s->total + len <= s->max_bytes)
		return true;
	gc_locked(s);
	return s->total + len <= s->max_bytes;
}

int spool_append(struct spool *s, uint64_t seq, const char *line, size_t len)
{
	int err = 0;

	pthread_mutex_lock(&s->lock);
	if (seq != s->last_seq + 1) {
		err = -EINVAL;
		goto out;
	}
	if (!room_locked(s, len + 1)) {
		err = -ENOSPC;
		goto out;
	}
	if (active(s)->bytes && active(s)->bytes + len + 1 > s->seg_max && (err = roll_locked(s, seq)))
		goto out;
	if (s->wlen + len + 1 > WBUF_CAP && flush_locked(s) && s->wlen + len + 1 > WBUF_CAP) {
		err = -ENOSPC;   /* the disk refuses writes: treated as a full spool */
		goto out;
	}
	if (len + 1 > WBUF_CAP) {   /* one huge line: straight to the file, in order */
		struct iovec iov[2] = { { (void *)line, len }, { "\n", 1 } };

		if ((err = flush_locked(s)))
			goto out;
		if (writev(s->fd, iov, 2) != (ssize_t)len + 1) {
			if (ftruncate(s->fd, (off_t)active(s)->written))
				ag_log(LOG_LVL_ERR, "audit: spool: cannot cut a segment back: %s", strerror(errno));
			err = -EIO;
			goto out;
		}
		active(s)->written += len + 1;
		active(s)->wlast = seq;
	} else {
		memcpy(s->wbuf + s->wlen, line, len);
		s->wbuf[s->wlen + len] = '\n';
		s->wlen += len + 1;
	}
	active(s)->last = seq;
	if (len + 1 > WBUF_CAP)
		active(s)->wlast = seq;
	active(s)->bytes += len + 1;
	s->total += len + 1;
	s->last_seq = seq;
	if (++s->unsynced >= SPOOL_SYNC_EVENTS)
		pthread_cond_signal(&s->tick);
out:
	pthread_mutex_unlock(&s->lock);
	return err;
}

bool spool_has_room(struct spool *s, size_t len)
{
	bool r;

	pthread_mutex_lock(&s->lock);
	r = room_locked(s, len);
	pthread_mutex_unlock(&s->lock);
	return r;
}

uint64_t spool_bytes(struct spool *s)
{
	uint64_t b;

	pthread_mutex_lock(&s->lock);
	b = s->total;
	pthread_mutex_unlock(&s->lock);
	return b;
}

/* The thread's write: the buffer is swapped out and written without the
 * lock, so an append never waits for the disk (a write can block on pages
 * under writeback). A segment roll waits for it (flush_locked). */
static int flush_async(struct spool *s)
{
	struct seg *a = active(s);
	uint64_t first = a->first, last = a->last, base = a->written;
	char *buf = s->wbuf;
	size_t len = s->wlen;
	int err = 0;

	if (!len || s->flushing)
		return 0;
	if (len > WBUF_CAP)   /* a failed write put back: no appends beside it */
		return flush_locked(s);
	s->wbuf = s->spare;
	s->wlen = 0;
	s->flushing = true;
	pthread_mutex_unlock(&s->lock);
	err = append_whole(s->fd, buf, len, base);
	pthread_mutex_lock(&s->lock);
	s->flushing = false;
	s->spare = buf;
	if (err) {
		/* put it back in front of what was appended meanwhile: both
		 * are under WBUF_CAP, and the buffers hold twice that, so
		 * nothing spooled (numbered, chained) is ever thrown away;
		 * appends refuse new lines (counted drops) until it is written */
		memcpy(buf + len, s->wbuf, s->wlen);
		s->spare = s->wbuf;
		s->wbuf = buf;
		s->wlen += len;
	} else {
		size_t i;

		for (i = 0; i < s->nsegs && s->segs[i].first != first; i++)
			;
		if (i < s->nsegs) {
			s->segs[i].written += len;
			s->segs[i].wlast = last;
		}
		pthread_cond_broadcast(&s->data);
	}
	pthread_cond_broadcast(&s->flushed);
	return err;
}

/* Closed segments with lines not yet synced (roll_locked()), each synced
 * without the lock, oldest first; sync: false when the sync is skipped
 * (see spool_thread). A segment sealed or deleted meanwhile needs none:
 * its .z was synced before its rename, or no reader needs it. */
static void sync_closed_unlocked(struct spool *s, bool sync)
{
	for (;;) {
		uint64_t first = 0;
		char path[4200];
		int fd;

		for (size_t i = 0; i + 1 < s->nsegs; i++) {
			if (s->segs[i].unsynced) {
				s->segs[i].unsynced = false;
				if (sync && !s->segs[i].sealed) {
					first = s->segs[i].first;
					break;
				}
			}
		}
		if (!first)
			return;
		seg_path(s, first, ".log", path, sizeof(path));
		s->nsyncs_closed++;
		s->closed_syncing++;
		pthread_mutex_unlock(&s->lock);
		if ((fd = open(path, O_RDONLY | O_CLOEXEC)) >= 0) {
			if (fdatasync(fd))
				ag_log(LOG_LVL_WARN, "audit spool: syncing '%s': %s", path, strerror(errno));
			close(fd);
		}
		pthread_mutex_lock(&s->lock);
		s->closed_syncing--;
	}
}

/* fdatasync without holding the lock: emitters never wait on the disk.
 * The closed segments a roll left unsynced first; then what the active
 * one holds is on disk, up to the line written last when it began:
 * synced_seq moves there (not while another thread still syncs a closed
 * segment, whose lines come before). */
static int sync_unlocked(struct spool *s)
{
	int fd, err = 0;
	uint64_t mark;

	sync_closed_unlocked(s, true);
	fd = dup(s->fd);
	mark = active(s)->wlast;
	s->unsynced = 0;
	s->last_sync_ms = mono_ms();
	s->nsyncs++;
	if (fd < 0)
		return -errno;
	pthread_mutex_unlock(&s->lock);
	if (fdatasync(fd))
		err = -errno;
	close(fd);
	pthread_mutex_lock(&s->lock);
	if (!err && !s->closed_syncing && mark > s->synced_seq) {
		s->synced_seq = mark;
		pthread_cond_broadcast(&s->data);
	}
	return err;
}

int spool_flush(struct spool *s, bool sync)
{
	int err;

	pthread_mutex_lock(&s->lock);
	err = flush_locked(s);
	if (!err && sync)
		err = sync_unlocked(s);
	pthread_mutex_unlock(&s->lock);
	return err;
}

/* Sealing (seal_pending_locked): a closed segment is compressed, written
 * as .z (tmp + fsync + rename), then its .log is dropped. Both steps run
 * without the lock: only the spool thread seals. */

/* Segment first, compressed into *out (malloc'ed), *outlen bytes. */
static int seal_compress(struct spool *s, uint64_t first, Bytef **out, uLongf *outlen)
{
	char lp[4200];
	struct stat st;
	void *raw = MAP_FAILED;
	Bytef *z = NULL;
	int err = 0, fd;

	seg_path(s, first, ".log", lp, sizeof(lp));
	/* mapped, not read: no copy of the segment */
	if ((fd = open(lp, O_RDONLY | O_CLOEXEC)) < 0)
		return -errno;
	if (fstat(fd, &st) == 0 && st.st_size)
		raw = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	uLongf zl = compressBound(st.st_size);
	if ((st.st_size && raw == MAP_FAILED) || !(z = malloc(zl)) ||
	    compress2(z, &zl, st.st_size ? raw : (void *)"", st.st_size, Z_BEST_SPEED) != Z_OK)
		err = -ENOMEM;
	if (raw != MAP_FAILED)
		munmap(raw, st.st_size);
	if (err) {
		free(z);
		return err;
	}
	*out = z;
	*outlen = zl;
	return 0;
}

/* z as segment first's .z file, synced, renamed into place. */
static int seal_write(struct spool *s, uint64_t first, const Bytef *z, uLongf zl)
{
	char zp[4200], tp[4300];
	int err = 0, fd;

	seg_path(s, first, ".z", zp, sizeof(zp));
	snprintf(tp, sizeof(tp), "%s.tmp", zp);
	fd = open(tp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0 || write_all(fd, z, zl) || fsync(fd))
		err = -errno;
	if (fd >= 0)
		close(fd);
	if (!err && rename(tp, zp))
		err = -errno;
	if (err)
		unlink(tp);
	return err;
}

/* Deletes the oldest segment, whose lines every reader has acknowledged
 * (readers holding it open keep reading). The file itself goes after the
 * lock is released (unlink_dropped): deleting it gives its blocks back, on
 * a filesystem mounted with discard a synchronous discard, and the
 * threads appending events waited for the disk behind the lock. A crash
 * in between leaves the file, as a crash just before the unlink did:
 * recovery finds a segment every cursor has passed, deleted again later. */
static void drop_front_locked(struct spool *s)
{
	char path[4200];

	if (s->ndropped < DROPPED_MAX) {
		s->dropped[s->ndropped].first = s->segs[0].first;
		s->dropped[s->ndropped].bytes = s->segs[0].bytes;   /* off total once unlinked */
		s->dropped[s->ndropped++].sealed = s->segs[0].sealed;
	} else {
		seg_path(s, s->segs[0].first, s->segs[0].sealed ? ".z" : ".log", path, sizeof(path));
		unlink(path);
		s->total -= s->segs[0].bytes;
	}
	memmove(s->segs, s->segs + 1, (s->nsegs - 1) * sizeof(*s->segs));
	s->nsegs--;
}

static void unlink_dropped(struct spool *s);

static void seal_pending_locked(struct spool *s)
{
	uint64_t acked = min_acked_locked(s);

	/*
	 * Sinks that keep up have acknowledged a segment soon after it closes:
	 * it is deleted instead of compressed, which would be work for nothing.
	 * The newest closed segment stays until a newer one closes: after a
	 * crash the audit chain resumes from the spool's last line, which the
	 * empty active segment does not have. Only the oldest segments go:
	 * recovery derives a segment's last sequence from its successor's first.
	 */
	while (s->nreaders && s->nsegs > 2 && s->segs[0].closed && s->segs[0].last <= acked)
		drop_front_locked(s);
	unlink_dropped(s);   /* their room, before sealing asks for some */
	for (size_t i = 0; i < s->nsegs; i++) {
		struct seg *sg = &s->segs[i];
		uint64_t first = sg->first;
		char lp[4200];
		Bytef *z = NULL;
		uLongf zl = 0;
		int err;

		if (!sg->closed || sg->sealed)
			continue;
		/* what a sink still needs is compressed after a grace period,
		 * or at once when room matters (audit_spool.h). The clock is
		 * read here, not once before the loop: the lock is dropped
		 * above and for every seal, and a segment closed meanwhile is
		 * younger than a clock read earlier (its age would wrap to a
		 * huge one, and a burst's every segment be sealed at once). */
		uint64_t now = mono_ms();
		uint64_t age = now > sg->closed_ms ? now - sg->closed_ms : 0;

		if (s->nreaders && (sg->last <= acked ||
				    (age < s->seal_grace_ms && s->total <= s->max_bytes / 4)))
			continue;
		pthread_mutex_unlock(&s->lock);
		err = seal_compress(s, first, &z, &zl);
		pthread_mutex_lock(&s->lock);
		if (!err) {
			/*
			 * Until the .log goes, the segment is on disk twice: the
			 * compressed copy needs room of its own, reserved in total
			 * while it is written, so the spool's files never take
			 * more than max_bytes. Without the room (a full spool) the
			 * segment stays as it is until a sink frees some.
			 */
			if (s->total + zl > s->max_bytes) {
				free(z);
				return;
			}
			s->total += zl;
			pthread_mutex_unlock(&s->lock);
			err = seal_write(s, first, z, zl);
			pthread_mutex_lock(&s->lock);
			s->total -= zl;
			free(z);
		}
		if (err) {
			ag_log(LOG_LVL_WARN, "audit spool: sealing segment %" PRIu64 " in '%s': %s",
			       first, s->dir, strerror(-err));
			return;
		}
		for (i = 0; i < s->nsegs && s->segs[i].first != first; i++)
			;
		if (i == s->nsegs) {   /* deleted meanwhile (gc: every reader was done) */
			seg_path(s, first, ".z", lp, sizeof(lp));
			unlink(lp);
			return;
		}
		sg = &s->segs[i];
		s->total = s->total - sg->bytes + zl;
		sg->bytes = zl;
		sg->sealed = true;
		seg_path(s, first, ".log", lp, sizeof(lp));
		unlink(lp);   /* readers holding it open keep reading */
	}
}

/* Deletes the files drop_front_locked() left, without the lock. Segment
 * names are never reused (first sequences only grow), so no new file can
 * take a name meanwhile. */
static void unlink_dropped(struct spool *s)
{
	struct dropped_seg d[DROPPED_MAX];
	int n = s->ndropped;

	if (!n)
		return;
	memcpy(d, s->dropped, n * sizeof(d[0]));
	s->ndropped = 0;
	pthread_mutex_unlock(&s->lock);
	for (int i = 0; i < n; i++) {
		char path[4200];

		seg_path(s, d[i].first, d[i].sealed ? ".z" : ".log", path, sizeof(path));
		unlink(path);
	}
	pthread_mutex_lock(&s->lock);
	for (int i = 0; i < n; i++)
		s->total -= d[i].bytes;   /* the room comes back once the file is gone */
}

static void *spool_thread(void *arg)
{
	struct spool *s = arg;

	ag_thread_setup("ag-spool", AG_SCHED_IDLE);   /* made urgent by audit.c when behind */
	pthread_mutex_lock(&s->lock);
	while (!s->stop) {
		cond_wait_ms(&s->tick, &s->lock, SPOOL_FLUSH_MS);
		if (s->tick_fn && !s->stop) {
			pthread_mutex_unlock(&s->lock);
			s->tick_fn(s->tick_arg);   /* appends: takes the lock itself */
			pthread_mutex_lock(&s->lock);
		}
		if (flush_async(s))
			continue;
		if (s->unsynced && (s->unsynced >= SPOOL_SYNC_EVENTS ||
				    mono_ms() - s->last_sync_ms >= SPOOL_SYNC_MS)) {
			uint64_t mark = active(s)->wlast;

			/* When every reader has acknowledged all that was written
			 * by the previous sync point, the sinks hold those events
			 * (the file sink syncs its file before it acknowledges),
			 * and what is newer is younger than one sync period: the
			 * loss a power cut could cause is what it was with the
			 * sync. So the fdatasync is skipped; a delivered segment
			 * is then deleted before its pages are ever written back,
			 * and the disk writes each event once instead of twice.
			 * A reader that falls behind (a sink down or slow) brings
			 * the sync back. Only when every reader's sink keeps a
			 * copy the next start takes back (the file sink): events
			 * a SIEM acknowledged, lost from the spool by a power cut,
			 * would have their sequence numbers given to other events
			 * (review, stop 34). */
			if (s->nreaders && all_keep_copies_locked(s) && min_acked_locked(s) >= s->sync_mark) {
				sync_closed_unlocked(s, false);
				s->unsynced = 0;
				s->last_sync_ms = mono_ms();
			} else {
				sync_unlocked(s);
			}
			s->sync_mark = mark;
		}
		seal_pending_locked(s);
		unlink_dropped(s);
		if (s->total > s->max_bytes / 2)
			gc_locked(s);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

void spool_set_seal_grace(struct spool *s, uint64_t ms)
{
	pthread_mutex_lock(&s->lock);
	s->seal_grace_ms = ms;
	pthread_mutex_unlock(&s->lock);
}

void spool_set_tick(struct spool *s, void (*fn)(void *), void *arg)
{
	s->tick_fn = fn;
	s->tick_arg = arg;
}

int spool_start(struct spool *s)
{
	int err;

	pthread_mutex_lock(&s->lock);
	s->started = true;
	pthread_mutex_unlock(&s->lock);
	if ((err = pthread_create(&s->thr, NULL, spool_thread, s)))
		return -err;
	return 0;
}

void spool_wake(struct spool *s)
{
	pthread_mutex_lock(&s->lock);
	pthread_cond_broadcast(&s->data);
	pthread_mutex_unlock(&s->lock);
}

/* The flag is read under the lock before each wait: a reader between its
 * last look at its own stop flag and its wait is not missed (a lost wake
 * kept every stop waiting for the 200 ms read timeout). */
void spool_readers_quit(struct spool *s)
{
	pthread_mutex_lock(&s->lock);
	s->quit = true;
	pthread_cond_broadcast(&s->data);
	pthread_mutex_unlock(&s->lock);
}

int spool_last_line(struct spool *s, char **out, size_t *len)
{
	char path[4200], *b = NULL;
	size_t n = 0, i;
	int err;

	pthread_mutex_lock(&s->lock);
	flush_locked(s);
	for (i = s->nsegs; i > 0 && s->segs[i - 1].last < s->segs[i - 1].first; i--)
		;
	if (!i) {
		pthread_mutex_unlock(&s->lock);
		return -ENOENT;
	}
	const struct seg *sg = &s->segs[i - 1];
	seg_path(s, sg->first, sg->sealed ? ".z" : ".log", path, sizeof(path));
	err = sg->sealed ? inflate_file(path, &b, &n) : slurp(path, &b, &n);
	pthread_mutex_unlock(&s->lock);
	if (err)
		return err;
	size_t end = n;
	while (end && b[end - 1] != '\n')
		end--;
	if (!end) {
		free(b);
		return -ENOENT;
	}
	size_t start = end - 1;
	while (start && b[start - 1] != '\n')
		start--;
	memmove(b, b + start, end - 1 - start);
	*out = b;
	*len = end - 1 - start;
	return 0;
}

uint64_t spool_sync_count(struct spool *s)
{
	uint64_t n;

	pthread_mutex_lock(&s->lock);
	n = s->nsyncs;
	pthread_mutex_unlock(&s->lock);
	return n;
}

uint64_t spool_closed_sync_count(struct spool *s)
{
	uint64_t n;

	pthread_mutex_lock(&s->lock);
	n = s->nsyncs_closed;
	pthread_mutex_unlock(&s->lock);
	return n;
}

const char *spool_dir(const struct spool *s)
{
	return s->dir;
}

/* ---- readers ------------------------------------------------------------- */

static void reader_drop_seg(struct spool_reader *r)
{
	if (r->lfd >= 0)
		close(r->lfd);
	r->lfd = -1;
	free(r->zdata);
	r->zdata = NULL;
	r->zlen = 0;
	r->seg_first = 0;
	r->off = 0;
	r->off_seq = 0;
}

static void reader_free(struct spool_reader *r)
{
	if (!r)
		return;
	reader_drop_seg(r);
	if (r->cfd >= 0)
		close(r->cfd);
	free(r->buf);
	free(r->line);
	free(r->len);
	free(r);
}

void spool_close(struct spool *s)
{
	if (!s)
		return;
	if (s->started) {
		pthread_mutex_lock(&s->lock);
		s->stop = true;
		pthread_cond_broadcast(&s->tick);
		pthread_cond_broadcast(&s->data);
		pthread_mutex_unlock(&s->lock);
		pthread_join(s->thr, NULL);
	}
	pthread_mutex_lock(&s->lock);
	unlink_dropped(s);   /* none left by the thread's last round, normally */
	pthread_mutex_unlock(&s->lock);
	if (s->fd >= 0) {
		flush_locked(s);
		fdatasync(s->fd);
		close(s->fd);
	}
	for (int i = 0; i < s->nreaders; i++)
		reader_free(s->readers[i]);
	if (s->dlfd >= 0)
		close(s->dlfd);
	free(s->wbuf);
	free(s->spare);
	free(s->segs);
	pthread_mutex_destroy(&s->lock);
	pthread_mutex_destroy(&s->dl_lock);
	pthread_cond_destroy(&s->data);
	pthread_cond_destroy(&s->tick);
	pthread_cond_destroy(&s->flushed);
	free(s);
}

int spool_reader_open(struct spool *s, const char *id, struct spool_reader **out)
{
	struct spool_reader *r;
	char path[4200], txt[32] = "";
	uint64_t c = 0;

	for (const char *p = id; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
			return -EINVAL;
	if (strlen(id) >= sizeof(r->id) || !(r = calloc(1, sizeof(*r))))
		return -EINVAL;
	snprintf(r->id, sizeof(r->id), "%s", id);
	r->s = s;
	r->lfd = -1;
	snprintf(path, sizeof(path), "%s/cursor-%s", s->dir, id);
	r->cfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (r->cfd < 0) {
		int err = -errno;

		free(r);
		return err;
	}
	if (pread(r->cfd, txt, sizeof(txt) - 1, 0) > 0)
		sscanf(txt, "%" SCNu64, &c);
	pthread_mutex_lock(&s->lock);
	if (s->nreaders == SPOOL_MAX_READERS) {
		pthread_mutex_unlock(&s->lock);
		reader_free(r);
		return -ENOSPC;
	}
	/* A new reader starts at the oldest retained event. */
	if (c < s->segs[0].first - 1)
		c = s->segs[0].first - 1;
	if (c > s->last_seq)
		c = s->last_seq;
	r->acked = c;
	r->pos = c + 1;
	s->readers[s->nreaders++] = r;
	pthread_mutex_unlock(&s->lock);
	*out = r;
	return 0;
}

void spool_reader_keeps_copy(struct spool_reader *r)
{
	pthread_mutex_lock(&r->s->lock);
	r->keeps_copy = true;
	pthread_mutex_unlock(&r->s->lock);
}

uint64_t spool_reader_cursor(struct spool_reader *r)
{
	uint64_t c;

	pthread_mutex_lock(&r->s->lock);
	c = r->acked;
	pthread_mutex_unlock(&r->s->lock);
	return c;
}

uint64_t spool_reader_backlog(struct spool_reader *r)
{
	uint64_t n;

	pthread_mutex_lock(&r->s->lock);
	n = r->s->last_seq + 1 > r->pos ? r->s->last_seq + 1 - r->pos : 0;
	pthread_mutex_unlock(&r->s->lock);
	return n;
}

uint64_t spool_reader_bytes_read(const struct spool_reader *r)
{
	return r->bytes_read;
}

void spool_reader_seek(struct spool_reader *r, uint64_t seq)
{
	pthread_mutex_lock(&r->s->lock);
	if (seq < r->acked)
		seq = r->acked;
	if (seq > r->s->last_seq)
		seq = r->s->last_seq;
	pthread_mutex_unlock(&r->s->lock);
	r->pos = seq + 1;
	if (r->pos < r->off_seq) {   /* back: rescan the segment from its start */
		r->off = 0;
		r->off_seq = r->seg_first;
	}
}

int spool_reader_ack(struct spool_reader *r, uint64_t seq)
{
	char txt[24];

	pthread_mutex_lock(&r->s->lock);
	if (seq > r->acked)
		r->acked = seq;
	pthread_mutex_unlock(&r->s->lock);
	snprintf(txt, sizeof(txt), "%020" PRIu64 "\n", seq);
	if (pwrite(r->cfd, txt, 21, 0) != 21)
		return -errno;
	return 0;
}

/* Loads the segment holding r->pos (under the lock: segment list). Returns
 * the readable end (last sequence available), or 0 when none. */
/*
 * The last sequence r may read. A reader whose sink keeps no copy (a SIEM)
 * reads only what is on disk: what it acknowledged and a power cut then
 * took from the spool would have its sequence numbers given to other
 * events, which that SIEM then holds twice (review: the sync came up to
 * 100 ms after those readers had read and sent the lines). A file sink
 * reads what is written: the next start takes back what it holds.
 */
static uint64_t reader_end_locked(const struct spool_reader *r)
{
	uint64_t end = active(r->s)->wlast;

	return !r->keeps_copy && end > r->s->synced_seq ? r->s->synced_seq : end;
}

static int reader_locate(struct spool_reader *r, uint64_t *avail_last, uint64_t *seg_written)
{
	struct spool *s = r->s;
	uint64_t end = reader_end_locked(r);
	size_t i;

	for (i = 0; i < s->nsegs; i++)
		if (r->pos >= s->segs[i].first && r->pos <= s->segs[i].wlast)
			break;
	if (i == s->nsegs || r->pos > end)
		return -EAGAIN;
	const struct seg *sg = &s->segs[i];

	*avail_last = sg->wlast < end ? sg->wlast : end;
	*seg_written = sg->written;
	if (r->seg_first == sg->first && (r->zdata || r->lfd >= 0))
		return 0;
	reader_drop_seg(r);
	r->seg_first = sg->first;
	r->seg_sealed = sg->sealed;
	r->off_seq = sg->first;
	r->off = 0;
	return 1;   /* needs loading */
}

static int reader_load(struct spool_reader *r)
{
	char path[4200];

	if (r->seg_sealed) {
		seg_path(r->s, r->seg_first, ".z", path, sizeof(path));
		return inflate_file(path, &r->zdata, &r->zlen);
	}
	seg_path(r->s, r->seg_first, ".log", path, sizeof(path));
	r->lfd = open(path, O_RDONLY | O_CLOEXEC);
	if (r->lfd < 0)
		return -errno;   /* sealed meanwhile: the caller retries */
	return 0;
}

static int ensure_lines(struct spool_reader *r, size_t n)
{
	if (n <= r->lcap)
		return 0;
	const char **l = realloc(r->line, n * sizeof(*l));
	if (l)
		r->line = l;
	size_t *ln = realloc(r->len, n * sizeof(*ln));
	if (ln)
		r->len = ln;
	if (!l || !ln)
		return -ENOMEM;
	r->lcap = n;
	return 0;
}

/* Bytes from the current segment starting at line r->off_seq: a window of
 * the inflated data, or a pread of the .log into r->buf. */
static int reader_bytes(struct spool_reader *r, uint64_t written, size_t want, const char **p,
			size_t *n)
{
	if (r->zdata) {
		*p = r->zdata + r->off;
		*n = r->zlen - r->off;
		return 0;
	}
	size_t avail = written > r->off ? written - r->off : 0;
	if (want > avail)
		want = avail;
	if (want > r->bcap) {
		char *b = realloc(r->buf, want);

		if (!b)
			return -ENOMEM;
		r->buf = b;
		r->bcap = want;
	}
	size_t got = 0;
	while (got < want) {
		ssize_t k = pread(r->lfd, r->buf + got, want - got < IO_CHUNK ? want - got : IO_CHUNK,
				  r->off + got);

		if (k <= 0)
			break;
		got += k;
	}
	r->bytes_read += got;
	*p = r->buf;
	*n = got;
	return 0;
}

/*
 * The current segment's data ran out at line r->off_seq, before its last
 * sequence. The active segment may still grow: -EAGAIN, as before. A
 * segment with a successor never will: its file ends short (a power cut
 * took the tail written since the last fdatasync, which a roll does not
 * wait for, or the file was damaged). Waiting for those lines stalled the
 * sink for good, and every sink behind it, with nothing said (review): the
 * reader goes on at the next segment instead, and the sequences missing
 * are counted once for spool_take_lost() (a loss event) and logged.
 * written: the segment's size when the reader located it, so a segment
 * that closed meanwhile with lines the reader has not seen is not taken
 * for a short one. Returns -EAGAIN (the caller reads again).
 */
static int hole_skip(struct spool_reader *r, uint64_t written)
{
	struct spool *s = r->s;
	size_t i;

	pthread_mutex_lock(&s->lock);
	for (i = 0; i < s->nsegs && s->segs[i].first != r->seg_first; i++)
		;
	if (i + 1 >= s->nsegs || (!r->seg_sealed && written != s->segs[i].written) ||
	    r->off_seq > s->segs[i].wlast) {
		pthread_mutex_unlock(&s->lock);
		return -EAGAIN;
	}
	struct seg *sg = &s->segs[i];
	uint64_t from = r->off_seq, to = sg->wlast;

	if (!sg->short_seen) {
		sg->short_seen = true;
		if (!s->lost)
			s->lost_first = from;
		s->lost += to - from + 1;
		s->lost_last = to;
		ag_log(LOG_LVL_ERR, "audit spool: segment %" PRIu64 " in '%s' ends before sequence %"
		       PRIu64 ": sequences %" PRIu64 "..%" PRIu64 " are lost (a power cut before they "
		       "were synced, or a damaged file); sinks go on from sequence %" PRIu64,
		       sg->first, s->dir, from, from, to, to + 1);
	}
	if (r->pos <= to)
		r->pos = to + 1;
	pthread_mutex_unlock(&s->lock);
	reader_drop_seg(r);
	return -EAGAIN;
}

uint64_t spool_take_lost(struct spool *s, uint64_t *first, uint64_t *last)
{
	uint64_t n;

	pthread_mutex_lock(&s->lock);
	n = s->lost;
	*first = s->lost_first;
	*last = s->lost_last;
	s->lost = 0;
	pthread_mutex_unlock(&s->lock);
	return n;
}

void spool_put_lost(struct spool *s, uint64_t n, uint64_t first, uint64_t last)
{
	pthread_mutex_lock(&s->lock);
	if (s->lost) {
		first = first < s->lost_first ? first : s->lost_first;
		last = last > s->lost_last ? last : s->lost_last;
	}
	s->lost += n;
	s->lost_first = first;
	s->lost_last = last;
	pthread_mutex_unlock(&s->lock);
}

static int read_once(struct spool_reader *r, struct spool_batch *b, size_t max_n,
		     size_t max_bytes)
{
	uint64_t last, written;
	int err;

	pthread_mutex_lock(&r->s->lock);
	err = reader_locate(r, &last, &written);
	pthread_mutex_unlock(&r->s->lock);
	if (err < 0)
		return err;
	if (err == 1 && (err = reader_load(r))) {
		/* a sealed segment that does not inflate is damaged: its lines
		 * are lost, like a short segment's tail (it is never the
		 * active one) */
		if (err == -EIO && r->seg_sealed)
			return hole_skip(r, written);
		reader_drop_seg(r);
		return err == -ENOENT ? -EAGAIN : err;
	}
	if (max_n > last - r->pos + 1)
		max_n = last - r->pos + 1;
	if ((err = ensure_lines(r, max_n)))
		return err;
	/* A window sized for max_n lines like the last batch's, not all of
	 * max_bytes: what a pread brings past the batch's last line is read
	 * again by the next call. A sink taking 512 events of a backlog of
	 * megabytes read each byte five or six times (audit_bench: 0.8 us of
	 * copying per event, a seventh of the pipeline). A window that ends
	 * short of max_n lines makes a smaller batch; one without a whole
	 * line widens below. Before any batch, lines of 1 KiB are assumed
	 * (an event is 1-2 KiB). */
	size_t want = max_bytes, avg = r->line_avg ? r->line_avg : 1024;
	if (max_n <= max_bytes / avg) {
		size_t est = max_n * (avg + avg / 8) + 4096;

		if (est < want)
			want = est;
	}
	for (;;) {
		const char *p, *nl;
		size_t n, used = 0, k = 0;

		if ((err = reader_bytes(r, written, want, &p, &n)))
			return err;
		/* after a seek: skip to r->pos */
		while (r->off_seq < r->pos && (nl = memchr(p + used, '\n', n - used))) {
			used = nl + 1 - p;
			r->off_seq++;
		}
		r->off += used;
		p += used;
		n -= used;
		if (r->off_seq < r->pos) {
			if (!used && (r->zdata || n < want))
				return hole_skip(r, written);   /* the file ends before r->pos */
			if (!used && want >= READ_CAP_MAX)
				return -EIO;
			if (!used)
				want *= 2;
			continue;
		}
		/* a window widened for a long first line holds more than
		 * max_bytes: the batch still stops there */
		for (used = 0; k < max_n && (nl = memchr(p + used, '\n', n - used)); k++) {
			if (k && (size_t)(nl + 1 - p) > max_bytes)
				break;
			r->line[k] = p + used;
			r->len[k] = nl - (p + used);
			used = nl + 1 - p;
		}
		if (k) {
			/* the pointers stay valid until the next read */
			b->first = r->pos;
			b->n = k;
			b->line = r->line;
			b->len = r->len;
			r->off += used;
			r->off_seq += k;
			r->pos += k;
			r->line_avg = used / k;
			return (int)k;
		}
		if (r->zdata || n < want)
			return hole_skip(r, written);
		if (want >= READ_CAP_MAX)
			return -EIO;
		want *= 2;   /* one line longer than the window */
	}
}

int spool_read(struct spool_reader *r, struct spool_batch *b, size_t max_n, size_t max_bytes,
	       int wait_ms)
{
	bool waited = false;

	for (int tries = 0; tries < 3; tries++) {
		int n = read_once(r, b, max_n, max_bytes);

		if (n > 0 || (n < 0 && n != -EAGAIN))
			return n;
		if (wait_ms <= 0 || waited || tries == 2)
			continue;
		pthread_mutex_lock(&r->s->lock);
		if (!r->s->stop && !r->s->quit && r->pos > reader_end_locked(r)) {
			cond_wait_ms(&r->s->data, &r->s->lock, (uint64_t)wait_ms);
			waited = true;
		}
		pthread_mutex_unlock(&r->s->lock);
	}
	/* Nothing, though the spool says there is more (a closed segment a
	 * power cut left shorter than its successor's name says): the caller
	 * comes back at once, so the wait is here, not a spin (review, stop
	 * 27: five million reads a second) */
	if (wait_ms > 0 && !waited) {
		pthread_mutex_lock(&r->s->lock);
		if (!r->s->stop && !r->s->quit)
			cond_wait_ms(&r->s->data, &r->s->lock, (uint64_t)wait_ms);
		pthread_mutex_unlock(&r->s->lock);
	}
	return 0;
}

/* status counters: one spool per process */
static _Atomic uint64_t dl_events, dl_discarded;

static uint64_t file_lines(int fd)
{
	char buf[65536];
	uint64_t n = 0;
	ssize_t r;
	off_t off = 0;

	while ((r = pread(fd, buf, sizeof(buf), off)) > 0) {
		for (char *p = buf; (p = memchr(p, '\n', (size_t)(buf + r - p))); p++)
			n++;
		off += r;
	}
	return n;
}

/* The current dead-letter file: open (counting what an earlier run left in
 * it), and rotated when this line would take it over its bound. A file
 * renamed away is fdatasync'ed first: the lines it holds are then on disk
 * (*durable). s->dl_lock held. */
static int dl_file(struct spool *s, size_t add, bool *durable)
{
	char path[4200], old[4300];
	uint64_t cap = s->max_bytes / 8 > (64u << 10) ? s->max_bytes / 8 : (64u << 10);
	struct stat st;

	snprintf(path, sizeof(path), "%s/dead-letter.jsonl", s->dir);
	snprintf(old, sizeof(old), "%s.1", path);
	if (s->dlfd < 0) {
		if ((s->dlfd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0)
			return -errno;
		s->dl_bytes = fstat(s->dlfd, &st) == 0 ? (uint64_t)st.st_size : 0;
		s->dl_synced = s->dl_bytes;   /* an earlier run's: what it held is there or not */
		s->dl_dir_dirty = !s->dl_bytes;   /* new (or empty): its name is not on disk yet */
		s->dl_lines = file_lines(s->dlfd);
		s->dl_lines_old = UINT64_MAX;
	}
	if (!s->dl_bytes || s->dl_bytes + add <= cap)
		return 0;
	if (s->dl_synced < s->dl_bytes && fdatasync(s->dlfd))
		return -errno;
	s->dl_synced = s->dl_bytes;
	*durable = true;
	/* the file before the last goes; its lines are counted as lost */
	if (s->dl_lines_old == UINT64_MAX) {
		int fd = open(old, O_RDONLY | O_CLOEXEC);

		s->dl_lines_old = fd >= 0 ? file_lines(fd) : 0;
		if (fd >= 0)
			close(fd);
	}
	if (rename(path, old) < 0)
		return -errno;
	if (s->dl_lines_old) {
		atomic_fetch_add(&dl_discarded, s->dl_lines_old);
		ag_log(LOG_LVL_WARN, "audit: %s is over %llu bytes: %llu older dead letters (in %s) were "
		       "discarded", path, (unsigned long long)cap, (unsigned long long)s->dl_lines_old, old);
	}
	s->dl_lines_old = s->dl_lines;
	close(s->dlfd);
	s->dl_lines = s->dl_bytes = s->dl_synced = 0;
	s->dl_dir_dirty = true;   /* the rename and the new file */
	if ((s->dlfd = open(path, O_RDWR | O_APPEND | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0)
		return -errno;
	return 0;
}

/* One dead letter appended (not synced). s->dl_lock held. */
static int dl_append(struct spool *s, const char *h, size_t hl, const char *line, size_t len,
		     bool *durable)
{
	/* {"sink":..,"reason":..,"time":..,"event":<the line as spooled>} */
	struct iovec iov[4] = { { (void *)h, hl }, { "\"event\":", 8 }, { (void *)line, len },
				{ "}\n", 2 } };
	size_t total = hl + 8 + len + 2;
	ssize_t w;
	int err;

	if ((err = dl_file(s, total, durable)))
		return err;
	if ((w = writev(s->dlfd, iov, 4)) < 0)
		return -errno;
	if ((size_t)w < total)   /* a short write (ENOSPC): cut back below */
		return -ENOSPC;
	s->dl_bytes += total;
	s->dl_lines++;
	return 0;
}

int spool_dead_letter(struct spool *s, const char *sink, const char *why, const char *const *line,
		      const size_t *len, size_t n, size_t *done)
{
	json_t *hdr = json_pack("{s:s, s:s, s:I}", "sink", sink, "reason", why,
				"time", (json_int_t)now_ms_realtime());
	char *h = hdr ? json_dumps(hdr, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	size_t i, unsynced = 0;   /* lines of ours in the current file since its last sync */
	int err = 0;

	json_decref(hdr);
	*done = 0;
	if (!h)
		return -ENOMEM;
	size_t hl = strlen(h);
	h[hl - 1] = ',';
	pthread_mutex_lock(&s->dl_lock);
	for (i = 0; i < n && !err; i++) {
		bool durable = false;

		err = dl_append(s, h, hl, line[i], len[i], &durable);
		if (durable) {   /* the lines before this one went to disk with the rotated file */
			*done = i;
			unsynced = 0;
		}
		if (!err)
			unsynced++;
	}
	/* Only then may the caller's cursor pass them: after a power cut the
	 * destination that refused them would not have them, nor would we. */
	if (!err && s->dl_synced < s->dl_bytes && fdatasync(s->dlfd))
		err = -errno;
	if (!err && s->dl_dir_dirty) {
		char path[4200];

		snprintf(path, sizeof(path), "%s/dead-letter.jsonl", s->dir);
		err = fsync_parent(path);
	}
	if (!err) {
		s->dl_synced = s->dl_bytes;
		s->dl_dir_dirty = false;
		*done = n;
	} else if (s->dlfd >= 0) {
		/* What was written since the last sync is not there: after a
		 * failed fdatasync a later one may return 0 with the pages lost
		 * (errseq), and the caller writes these lines again. */
		if (ftruncate(s->dlfd, (off_t)s->dl_synced) < 0) {
			ag_log(LOG_LVL_WARN, "audit: dead-letter file: cutting back to %llu bytes: %s; "
			       "reopened before the next dead letter", (unsigned long long)s->dl_synced,
			       strerror(errno));
			close(s->dlfd);   /* dl_file() counts the file again */
			s->dlfd = -1;
		}
		s->dl_bytes = s->dl_synced;
		s->dl_lines -= unsynced;
	}
	atomic_fetch_add(&dl_events, *done);
	pthread_mutex_unlock(&s->dl_lock);
	free(h);
	return err;
}

uint64_t spool_dead_lettered(void)
{
	return atomic_load(&dl_events);
}

uint64_t spool_dead_letters_discarded(void)
{
	return atomic_load(&dl_discarded);
}
