/* SPDX-License-Identifier: Apache-2.0 */
/*
 * file and stdout sinks: JSON lines. A batch is one write(2) followed by
 * fdatasync, and only then acknowledged, so the file holds every event the
 * cursor has passed. Rotation by size (rotate_bytes) and age (rotate_age)
 * renames path -> path.1 -> ... -> path.<keep>; SIGHUP reopens path (after
 * an external logrotate moved it).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audit_sink.h"
#include "util.h"

#define TAIL_MAX (1u << 20)   /* how far back resume() looks for the last line */

struct fsink {
	int fd;
	bool is_stdout;
	char path[4096];
	uint64_t size;
	uint64_t synced;        /* where the last fdatasync left the file (pages before it dropped) */
	dev_t dev;              /* the file open (fsink_open()) */
	ino_t ino;
	bool trunc_pending;     /* cut to synced when reopened: unwind() could not */
	bool dir_dirty;         /* the file's name is not on disk yet (new, or a rotation's) */
	uint64_t opened_ms;     /* start of the current file's age */
	char *buf;
	size_t cap;
	bool others_could_write;   /* when opened: owned by another user, or group/other writable */
};

static int not_regular(const char *path)
{
	ag_log(LOG_LVL_ERR, "audit: '%s' is not a regular file: a file sink writes, syncs and "
	       "rotates regular files only (for the console, use the stdout sink)", path);
	return -EINVAL;
}

static int fsink_open(struct fsink *f)
{
	struct stat st;

	/* O_NONBLOCK: a FIFO at the path with no reader would block the
	 * open for ever; it is refused below like any file that is not a
	 * regular one */
	f->fd = open(f->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK,
		     0600);
	if (f->fd < 0)
		return errno == ENXIO ? not_regular(f->path) : -errno;   /* ENXIO: that FIFO */
	/* Only a regular file: a device such as /dev/null would have been
	 * made 0600 below (the host's /dev/null unusable to everyone else),
	 * and neither a device, a FIFO nor a socket can be synced, rotated
	 * or read back for the resume. */
	int err = fstat(f->fd, &st) < 0 ? -errno : !S_ISREG(st.st_mode) ? not_regular(f->path) : 0;

	if (err) {
		close(f->fd);
		f->fd = -1;
		return err;
	}
	if (f->trunc_pending && st.st_dev == f->dev && st.st_ino == f->ino &&
	    (uint64_t)st.st_size > f->synced) {
		/* see unwind(): nothing is appended after lines that may be lost */
		if (ftruncate(f->fd, (off_t)f->synced)) {
			err = -errno;
			close(f->fd);
			f->fd = -1;
			return err;
		}
		st.st_size = (off_t)f->synced;
		ag_log(LOG_LVL_INFO, "audit: '%s' cut back to its last sync (%llu bytes)", f->path,
		       (unsigned long long)f->synced);
	} else if (f->trunc_pending && (st.st_dev != f->dev || st.st_ino != f->ino)) {
		ag_log(LOG_LVL_WARN, "audit: '%s' is another file now: the lines written to the one "
		       "before after its last sync may be there as well", f->path);
	}
	f->trunc_pending = false;
	f->dir_dirty = !st.st_size;   /* created, most likely: fsync_parent() at the first sync */
	f->dev = st.st_dev;
	f->ino = st.st_ino;
	fcntl(f->fd, F_SETFL, O_APPEND);   /* blocking writes again */
	/* The trail is for the security team only, whatever the umask says. */
	f->others_could_write = (st.st_mode & 022) || !owner_ok(st.st_uid);
	if ((st.st_mode & 0777) != 0600)
		fchmod(f->fd, 0600);
	f->size = st.st_size;
	f->synced = f->size;
	f->opened_ms = now_ms_realtime();
	return 0;
}

static int file_init(struct audit_sink *s)
{
	struct fsink *f = calloc(1, sizeof(*f));
	char dir[4096];
	int err;

	if (!f)
		return -ENOMEM;
	f->fd = -1;
	s->priv = f;
	if (s->cfg->type == SINK_STDOUT) {
		f->fd = STDOUT_FILENO;
		f->is_stdout = true;
		snprintf(s->desc, sizeof(s->desc), "stdout");
		return 0;
	}
	snprintf(f->path, sizeof(f->path), "%s", s->cfg->path);
	snprintf(s->desc, sizeof(s->desc), "file '%s'", f->path);
	snprintf(dir, sizeof(dir), "%s", f->path);
	if ((err = mkdir_p(dirname(dir), 0700)))
		return err;
	return fsink_open(f);
}

static void file_fini(struct audit_sink *s)
{
	struct fsink *f = s->priv;

	if (!f)
		return;
	if (!f->is_stdout && f->fd >= 0) {
		fdatasync(f->fd);
		close(f->fd);
	}
	free(f->buf);
	free(f);
	s->priv = NULL;
}

static void file_reopen(struct audit_sink *s)
{
	struct fsink *f = s->priv;
	int err;

	if (f->is_stdout)
		return;
	if (f->fd >= 0)
		close(f->fd);
	if ((err = fsink_open(f)))
		ag_log(LOG_LVL_ERR, "audit: reopening '%s': %s", f->path, strerror(-err));
}

/*
 * path.(keep-1) -> path.keep ... path -> path.1, then a fresh path. The
 * caller synced the file first: what it holds is on disk, whatever fails
 * here. A rename that fails leaves the file open as it was (the send
 * fails, and the rotation is tried again with it); a new file that cannot
 * be made leaves none (the next send opens path again). The directory's
 * fsync, if it fails, is done before the next sync counts (dir_dirty).
 */
static int rotate(struct audit_sink *s, struct fsink *f)
{
	uint32_t keep = s->cfg->keep ? s->cfg->keep : 5, hole = keep;
	char from[4200], to[4200];
	struct stat st;
	int err;

	/* shift only up to the first missing one: after a rotation that
	 * failed at path -> path.1, trying again must not push each older
	 * file one further (the oldest kept would be lost at each try) */
	for (uint32_t k = 1; k < keep; k++) {
		snprintf(to, sizeof(to), "%s.%u", f->path, k);
		if (lstat(to, &st) && errno == ENOENT) {
			hole = k;
			break;
		}
	}
	for (uint32_t k = hole; k > 1; k--) {
		snprintf(from, sizeof(from), "%s.%u", f->path, k - 1);
		snprintf(to, sizeof(to), "%s.%u", f->path, k);
		if (rename(from, to))
			ag_log(LOG_LVL_WARN, "audit: rotating '%s' to '%s': %s", from, to, strerror(errno));
	}
	snprintf(to, sizeof(to), "%s.1", f->path);
	if (rename(f->path, to))
		return -errno;
	close(f->fd);
	f->fd = -1;
	f->size = f->synced = 0;   /* no file until fsink_open() made one */
	if ((err = fsink_open(f)))
		return err;
	/* the renames and the new file survive a power cut with the lines */
	f->dir_dirty = fsync_parent(f->path) != 0;
	return 0;
}

/* add more bytes would take the file past rotate_bytes. */
static bool over(struct audit_sink *s, struct fsink *f, size_t add)
{
	return !f->is_stdout && s->cfg->rotate_bytes && f->size + add > s->cfg->rotate_bytes;
}

/* The file must be rotated before add more bytes go in (never an empty
 * one: a line longer than rotate_bytes gets a file of its own). */
static bool due(struct audit_sink *s, struct fsink *f, size_t add)
{
	if (f->is_stdout || !f->size)
		return false;
	if (over(s, f, add))
		return true;
	return s->cfg->rotate_age_ms && now_ms_realtime() - f->opened_ms >= s->cfg->rotate_age_ms;
}

/* Writes lines [i, j) of b (bytes long with their newlines). A batch from
 * the spool is usually its lines as they lie in the segment, one '\n'
 * between each: written from there, uncopied, with the last line's '\n'
 * (not ours to read) written after it. */
static int write_lines(struct fsink *f, const struct sink_batch *b, size_t i, size_t j, size_t bytes)
{
	const char *out = b->line[i];
	bool contiguous = true;
	size_t off = 0, at = 0;

	for (size_t k = i + 1; k < j && contiguous; k++) {
		at += b->len[k - 1] + 1;
		contiguous = b->line[k] == out + at && b->line[k - 1][b->len[k - 1]] == '\n';
	}
	if (contiguous)
		return write_all(f->fd, out, bytes - 1) || write_all(f->fd, "\n", 1) ? -errno : 0;
	if (bytes > f->cap) {
		char *nb = realloc(f->buf, bytes);

		if (!nb)
			return -ENOMEM;
		f->buf = nb;
		f->cap = bytes;
	}
	for (size_t k = i; k < j; k++) {
		memcpy(f->buf + off, b->line[k], b->len[k]);
		off += b->len[k];
		f->buf[off++] = '\n';
	}
	return write_all(f->fd, f->buf, bytes) ? -errno : 0;
}

/* Drops [start, end) of the file from the page cache once synced: the
 * whole pages from start's page up to the page holding end, which the
 * next append writes into and so stays cached. */
static void drop_written(int fd, uint64_t start, uint64_t end)
{
	uint64_t pg = (uint64_t)sysconf(_SC_PAGESIZE);
	uint64_t from = start / pg * pg, to = end / pg * pg;

	if (to > from)
		posix_fadvise(fd, (off_t)from, (off_t)(to - from), POSIX_FADV_DONTNEED);
}

/*
 * A write or an fdatasync failed: everything written since the last good
 * sync counts as not written, and is cut, so that the sink thread writing
 * it again from its cursor leaves each line in the file once. Not only
 * what this send wrote: after a failed fdatasync the kernel may have
 * dropped those pages, and the next fdatasync returns 0 all the same (the
 * error is reported once, errseq), so nothing written before the failure
 * may be acknowledged on a later sync. When the cut itself fails, the file
 * is closed and cut when reopened before the next write (fsink_open()).
 */
static void unwind(struct fsink *f)
{
	if (f->is_stdout || f->fd < 0)
		return;
	if (ftruncate(f->fd, (off_t)f->synced) == 0) {
		f->size = f->synced;
		return;
	}
	ag_log(LOG_LVL_ERR, "audit: '%s': cutting the lines written since its last sync (%llu bytes): "
	       "%s; it is reopened and cut before the next write", f->path,
	       (unsigned long long)f->synced, strerror(errno));
	close(f->fd);
	f->fd = -1;
	f->trunc_pending = true;
	f->size = f->synced;
}

/* fdatasync, then the pages up to the file's end are dropped (see
 * file_send()). */
static int file_sync_fd(struct fsink *f)
{
	int err;

	if (f->is_stdout)
		return 0;
	if (fdatasync(f->fd))
		return -errno;
	/* a new file's lines are not on disk before its name is */
	if (f->dir_dirty && (err = fsync_parent(f->path)))
		return err;
	f->dir_dirty = false;
	/* Written and on disk: these pages are not read again here, and
	 * dropping them lets the next batch reuse them instead of growing the
	 * page cache by every event ever written (fresh pages cost several
	 * times the copy). A log shipper reading the file reads it from disk.
	 * The page holding the end of the file stays: the next batch appends
	 * into it, and once dropped it had to be read back from the disk
	 * first, a synchronous read in every send. */
	drop_written(f->fd, f->synced, f->size);
	f->synced = f->size;
	return 0;
}

static int file_sync(struct audit_sink *s)
{
	struct fsink *f = s->priv;
	int err;

	/* no file (its reopening after a rotation failed): what was held
	 * went to disk with the rotated one, unless written since */
	if (f->fd < 0)
		return f->synced == f->size ? 0 : -EBADF;
	if ((err = file_sync_fd(f)))
		unwind(f);
	return err;
}

static int file_send(struct audit_sink *s, struct sink_batch *b)
{
	struct fsink *f = s->priv;
	uint64_t start;
	size_t i = 0;
	int err;

	if (!b->n)
		return 0;
	if (f->fd < 0 && (err = fsink_open(f)))
		goto fail;
	start = f->size;
	/* Rotation falls between lines, not batches: a file holds at most
	 * rotate_bytes (or one line, if a line is longer). */
	while (i < b->n) {
		size_t j = i, bytes = 0;

		/* over(), not only due(): an empty file (the first, or one
		 * just rotated) takes lines up to rotate_bytes too, not the
		 * rest of the batch */
		while (j < b->n && (j == i || !(due(s, f, bytes + b->len[j] + 1) ||
						over(s, f, bytes + b->len[j] + 1))))
			bytes += b->len[j++] + 1;
		if (due(s, f, bytes)) {
			/* What the file holds goes to disk before it is renamed
			 * away, and counts as delivered whatever follows: written
			 * again after a failure later in the batch, it would be in
			 * path.1 and in path. */
			if ((err = file_sync_fd(f)))
				goto fail;
			b->durable = b->first + i - 1;
			if ((err = rotate(s, f))) {
				snprintf(b->why, sizeof(b->why), "rotating '%s': %s", f->path,
					 strerror(-err));
				return err;
			}
			start = f->size;
		}
		if ((err = write_lines(f, b, i, j, bytes)))
			goto fail;   /* a short write's torn line is cut with the rest */
		f->size += bytes;
		i = j;
	}
	if (b->more) {
		/* synced later with what follows (file_sync): the disk can
		 * start on these pages meanwhile */
		if (!f->is_stdout && f->size > start)
			sync_file_range(f->fd, (off_t)start, (off_t)(f->size - start),
					SYNC_FILE_RANGE_WRITE);
	} else if ((err = file_sync_fd(f))) {
		goto fail;
	}
	memset(b->st, SINK_ACK, b->n);
	return 0;
fail:
	unwind(f);
	snprintf(b->why, sizeof(b->why), "%s: %s", f->path[0] ? f->path : "stdout", strerror(-err));
	return err;
}

/* After a crash the file may hold events past the cursor (written, then
 * killed before the cursor was saved): report the last one so they are not
 * written twice. A torn last line is cut first. When the file is empty (it
 * was rotated, then the enforcer killed before the next write), the last
 * line is the rotated file's (path.1): without that, the batch written
 * before the rotation would be written again into the new file. */
static uint64_t file_resume(struct audit_sink *s, uint64_t cursor, char uid[40])
{
	struct fsink *f = s->priv;
	size_t want, got = 0;
	char *buf, src[4200];
	uint64_t seq = cursor, size = f->size;
	struct stat st;

	if (f->is_stdout)
		return cursor;
	snprintf(src, sizeof(src), "%s", f->path);
	if (!size) {
		snprintf(src, sizeof(src), "%s.1", f->path);
		if (!s->cfg->rotate_bytes && !s->cfg->rotate_age_ms)
			return cursor;
		if (stat(src, &st) || !S_ISREG(st.st_mode) || !st.st_size)
			return cursor;
		size = (uint64_t)st.st_size;
	}
	want = size < TAIL_MAX ? size : TAIL_MAX;
	if (!(buf = malloc(want + 1)))
		return cursor;
	int rfd = open(src, O_RDONLY | O_CLOEXEC);
	if (rfd >= 0) {
		ssize_t n = pread(rfd, buf, want, (off_t)(size - want));

		got = n > 0 ? n : 0;
		close(rfd);
	}
	size_t end = got;
	while (end && buf[end - 1] != '\n')
		end--;
	if (f->size && !end && got == f->size && got && buf[0] == '{' && ftruncate(f->fd, 0) == 0) {
		/* nothing but a torn line of ours (killed in the first write
		 * after a rotation): cut, and the last whole line is path.1's */
		f->size = 0;
		free(buf);
		return file_resume(s, cursor, uid);
	}
	if (f->size && end != got && end && ftruncate(f->fd, f->size - (got - end)) == 0)
		f->size -= got - end;
	if (end) {
		size_t start = end - 1;

		while (start && buf[start - 1] != '\n')
			start--;
		json_t *doc = json_loadb(buf + start, end - 1 - start, 0, NULL);
		json_t *md = json_object_get(doc, "metadata");
		json_t *js = json_object_get(md, "sequence");
		const char *u = json_string_value(json_object_get(md, "uid"));

		if (json_is_integer(js) && (uint64_t)json_integer_value(js) > cursor && u &&
		    strlen(u) < 40) {
			seq = json_integer_value(js);
			snprintf(uid, 40, "%s", u);
		}
		json_decref(doc);
	}
	free(buf);
	return seq;
}

/* metadata.sequence of a line we wrote: metadata is its last member, so
 * the last "sequence": in it (a quote inside a string value is escaped,
 * so the bytes cannot come from an agent's text). 0: none. */
static uint64_t line_seq(const char *p, size_t len)
{
	static const char key[] = "\"sequence\":";
	const char *hit = memmem_last(p, len, key, sizeof(key) - 1);

	if (!hit || !memmem(p, len, "\"metadata\":{", 12))
		return 0;
	uint64_t v = 0;
	for (hit += sizeof(key) - 1; hit < p + len && *hit >= '0' && *hit <= '9'; hit++) {
		if (v > (UINT64_MAX - 9) / 10)
			return 0;
		v = v * 10 + (uint64_t)(*hit - '0');
	}
	return v;
}

/* The sequence of the first whole line starting at or after off (its
 * start in *at), 0 when none: a probe of the binary search. */
static uint64_t seq_at(int fd, uint64_t off, uint64_t size, uint64_t *at, char *buf, size_t cap)
{
	while (off < size) {
		ssize_t n = pread(fd, buf, cap, (off_t)off);
		char *nl;

		if (n <= 0)
			return 0;
		if (off == 0) {
			nl = buf - 1;     /* the file's first line starts at 0 */
		} else if (!(nl = memchr(buf, '\n', (size_t)n))) {
			off += (uint64_t)n;
			continue;
		}
		uint64_t start = off + (uint64_t)(nl + 1 - buf);
		ssize_t m = pread(fd, buf, cap, (off_t)start);
		char *end = m > 0 ? memchr(buf, '\n', (size_t)m) : NULL;

		if (!end)
			return 0;
		*at = start;
		return line_seq(buf, (size_t)(end - buf));
	}
	return 0;
}

/* ops->adopt: finds the line after + 1 by binary search over the file's
 * offsets (its sequences grow line by line), then reads on from there. */
static long file_adopt(struct audit_sink *s, uint64_t after,
		       int (*fn)(void *arg, uint64_t seq, const char *line, size_t len), void *arg)
{
	struct fsink *f = s->priv;
	const size_t cap = 1u << 20;
	uint64_t lo = 0, hi, at = 0, start = UINT64_MAX, want = after + 1;
	char *buf = NULL, *line = NULL;
	size_t lcap = 0;
	long took = 0;
	ssize_t n;
	FILE *in;
	int fd;

	if (f->is_stdout || !f->size || !(buf = malloc(cap)))
		return 0;
	if ((fd = open(f->path, O_RDONLY | O_CLOEXEC)) < 0) {
		free(buf);
		return -errno;
	}
	/* Lines taken back are signed by the next checkpoint: only from a file
	 * no one but root (or our user) could write when the sink opened it
	 * (fsink_open() then made it 0600), through a path no one else can
	 * re-point, or appending to the audit file would be as good as the
	 * signing key, which is guarded that way (review, stop 48). */
	char why[256];

	if (f->others_could_write || path_trusted(f->path, why, sizeof(why)) < 0) {
		ag_log(LOG_LVL_WARN, "audit: sink %s: its file '%s' may be written by others than root: "
		       "the lines it holds after the spool's end are not taken back", s->desc, f->path);
		free(buf);
		close(fd);
		return 0;
	}
	hi = f->size;
	while (lo < hi) {   /* the first line whose sequence is >= want */
		uint64_t mid = lo + (hi - lo) / 2, seq = seq_at(fd, mid, f->size, &at, buf, cap);

		if (seq && seq < want) {
			lo = at + 1;
		} else {
			if (seq == want)
				start = at;
			hi = mid;
		}
	}
	free(buf);
	if (start == UINT64_MAX || !(in = fdopen(fd, "r"))) {
		if (start == UINT64_MAX)
			close(fd);
		return 0;   /* not here (rotated away, or never written): nothing to adopt */
	}
	if (fseeko(in, (off_t)start, SEEK_SET) == 0) {
		while ((n = getline(&line, &lcap, in)) > 0 && line[n - 1] == '\n') {
			if (line_seq(line, (size_t)n - 1) != want || fn(arg, want, line, (size_t)n - 1))
				break;
			took++;
			want++;
		}
	}
	free(line);
	fclose(in);
	return took;
}

const struct audit_sink_ops audit_sink_file_ops = {
	.type = "file",
	.init = file_init,
	.send = file_send,
	.resume = file_resume,
	.adopt = file_adopt,
	.reopen = file_reopen,
	.fini = file_fini,
	/* a read window that stays in L2 (~700 KB); a backlog is still
	 * synced 4,096 events at a time (SINK_HOLD_EVENTS, audit.c) */
	.batch_max = 512,
	/* one write and one fdatasync per 50 ms at most, instead of one per
	 * spool flush (10 ms): the fdatasync was most of the sink's cost */
	.min_interval_ms = 50,
	.sync = file_sync,
};
