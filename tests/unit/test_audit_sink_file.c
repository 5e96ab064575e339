/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for audit_sink_file.c: what a batch writes (lines lying
 * contiguously in the spool's memory or scattered), rotation falling
 * between the lines of a batch, and the page cache after a send (written
 * pages dropped, the page the next append writes into kept).
 */
#include <fcntl.h>
#include <inttypes.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/vfs.h>

#include "audit_sink.h"
#include "unit.h"

#define TMPFS_MAGIC_ 0x01021994

static char dir[256], path[320];

/* A new directory under base for the test's file. */
static void fresh_dir_in(const char *base)
{
	snprintf(dir, sizeof(dir), "%s/agentgate-sinkfile-XXXXXX", base);
	if (!mkdtemp(dir))
		abort();
	snprintf(path, sizeof(path), "%s/audit.jsonl", dir);
}

static void fresh_dir(void)
{
	fresh_dir_in("/tmp");
}

static void rm_dir(void)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	(void)!system(cmd);
}

/* Line i: its sequence and a pad whose length varies with i. */
static size_t line_for(uint64_t i, char *buf, size_t n)
{
	int k = snprintf(buf, n, "{\"metadata\":{\"sequence\":%" PRIu64 "},\"pad\":\"%0*d\"}", i,
			 (int)(i * 37 % 700), 0);

	return (size_t)k;
}

/* A batch of n lines from first. contiguous: the lines lie one after the
 * other with a '\n' between them, as in a spool segment (the last one's
 * '\n' is not part of the batch's memory); otherwise each line is its own
 * allocation. The caller frees with batch_free. */
struct tbatch {
	struct sink_batch b;
	char *mem;
	char **own;
};

static void batch_make(struct tbatch *t, uint64_t first, size_t n, bool contiguous)
{
	char tmp[1024];
	size_t off = 0;

	memset(t, 0, sizeof(*t));
	t->b.first = first;
	t->b.n = n;
	t->b.line = calloc(n, sizeof(char *));
	t->b.len = calloc(n, sizeof(size_t));
	t->b.st = malloc(n);
	memset(t->b.st, SINK_RETRY, n);
	if (contiguous)
		t->mem = malloc(n * sizeof(tmp));
	else
		t->own = calloc(n, sizeof(char *));
	for (size_t i = 0; i < n; i++) {
		size_t len = line_for(first + i, tmp, sizeof(tmp));
		char *p;

		if (contiguous) {
			p = t->mem + off;
			memcpy(p, tmp, len);
			if (i + 1 < n)
				p[len] = '\n';
			else
				p[len] = 'X';   /* not ours to write: the sink must add its own '\n' */
			off += len + 1;
		} else {
			p = t->own[i] = malloc(len + 1);
			memcpy(p, tmp, len);
			p[len] = 'Y';   /* no '\n' after a scattered line */
		}
		t->b.line[i] = p;
		((size_t *)t->b.len)[i] = len;
	}
}

static void batch_free(struct tbatch *t)
{
	if (t->own)
		for (size_t i = 0; i < t->b.n; i++)
			free(t->own[i]);
	free(t->own);
	free(t->mem);
	free(t->b.line);
	free((void *)t->b.len);
	free(t->b.st);
}

static char *slurp(const char *p, size_t *len)
{
	FILE *f = fopen(p, "r");
	char *b = NULL;

	*len = 0;
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	rewind(f);
	b = malloc(n + 1);
	*len = fread(b, 1, n, f);
	b[*len] = 0;
	fclose(f);
	return b;
}

/* The expected bytes of lines [from, to). */
static char *expect(uint64_t from, uint64_t to, size_t *len)
{
	char *b = malloc((to - from) * 1024 + 1), tmp[1024];
	size_t off = 0;

	for (uint64_t i = from; i < to; i++) {
		size_t l = line_for(i, tmp, sizeof(tmp));

		memcpy(b + off, tmp, l);
		off += l;
		b[off++] = '\n';
	}
	b[off] = 0;
	*len = off;
	return b;
}

static int sink_open(struct audit_sink *s, struct policy_sink *cfg)
{
	memset(s, 0, sizeof(*s));
	s->ops = &audit_sink_file_ops;
	s->cfg = cfg;
	return s->ops->init(s);
}

/* Both memory layouts give the same file: each line once, in order, one
 * '\n' after each, and every line acknowledged. */
static void test_batches_written_whole(void)
{
	struct policy_sink cfg = { .type = SINK_FILE, .path = path };
	struct audit_sink s;
	uint64_t next = 1;

	fresh_dir();
	CHECK(sink_open(&s, &cfg) == 0);
	for (int round = 0; round < 6; round++) {
		struct tbatch t;
		size_t n = 1 + round * 97;

		batch_make(&t, next, n, round % 2 == 0);
		CHECK(s.ops->send(&s, &t.b) == 0);
		for (size_t i = 0; i < n; i++)
			CHECK(t.b.st[i] == SINK_ACK);
		next += n;
		batch_free(&t);
	}
	s.ops->fini(&s);
	size_t got_len, want_len;
	char *got = slurp(path, &got_len), *want = expect(1, next, &want_len);
	CHECK(got && got_len == want_len && memcmp(got, want, want_len) == 0);
	free(got);
	free(want);
	rm_dir();
}

/* Rotation falls between the lines of one batch: the files together hold
 * every line once, in order, and none holds more than rotate_bytes, or
 * one line when that line alone is longer. */
static void rotation_case(uint64_t rotate_bytes, size_t n, bool more)
{
	struct policy_sink cfg = { .type = SINK_FILE, .path = path, .rotate_bytes = rotate_bytes,
				   .keep = 2000 };
	struct audit_sink s;
	struct tbatch t;

	fresh_dir();
	CHECK(sink_open(&s, &cfg) == 0);
	batch_make(&t, 1, n, true);
	t.b.more = more;   /* held: synced by the rotation or by sync() */
	CHECK(s.ops->send(&s, &t.b) == 0);
	batch_free(&t);
	batch_make(&t, 1 + n, n, false);
	t.b.more = more;
	CHECK(s.ops->send(&s, &t.b) == 0);
	batch_free(&t);
	if (more)
		CHECK(s.ops->sync(&s) == 0);
	s.ops->fini(&s);

	/* oldest first: path.K .. path.1, then path */
	int files = 0;
	size_t total = 0, want_len;
	char *want = expect(1, 1 + 2 * n, &want_len), *all = malloc(want_len + 1);

	for (int k = 2000; k >= 0; k--) {
		char p[400];
		size_t len;
		char *b;

		if (k)
			snprintf(p, sizeof(p), "%s.%d", path, k);
		else
			snprintf(p, sizeof(p), "%s", path);
		if (!(b = slurp(p, &len)))
			continue;
		files++;
		char *nl = memchr(b, '\n', len);
		CHECK(len <= rotate_bytes || (nl && nl == b + len - 1));   /* or one line */
		CHECK(len == 0 || b[len - 1] == '\n');   /* whole lines only */
		if (total + len <= want_len)
			memcpy(all + total, b, len);
		total += len;
		free(b);
	}
	CHECK(files > 2);
	CHECK(total == want_len && memcmp(all, want, want_len) == 0);
	free(all);
	free(want);
	rm_dir();
}

static void test_rotation_inside_batch(void)
{
	rotation_case(20000, 300, false);
	rotation_case(500, 60, false);   /* many lines longer than a file may be */
	rotation_case(20000, 300, true);   /* sends with more, then one sync */
}

/* A restart after a SIGKILL that came between a rotation and the next
 * write: the new file is empty, the cursor is behind the last line written
 * (in path.1). resume() must report that line, or the batch is written
 * again into the new file and `audit verify` over both reports a break.
 * Found by review (stop 19). */
static void test_resume_after_rotation(void)
{
	struct policy_sink cfg = { .type = SINK_FILE, .path = path, .rotate_bytes = 1 << 20, .keep = 3 };
	struct audit_sink s;
	struct tbatch t;
	char uid[40] = "", p1[400];
	int fd;

	fresh_dir();
	CHECK(sink_open(&s, &cfg) == 0);
	batch_make(&t, 1, 40, true);
	CHECK(s.ops->send(&s, &t.b) == 0);
	batch_free(&t);
	s.ops->fini(&s);
	/* what rotate() leaves when the process dies right after it */
	snprintf(p1, sizeof(p1), "%s.1", path);
	CHECK(rename(path, p1) == 0);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	CHECK(fd >= 0);
	close(fd);
	CHECK(sink_open(&s, &cfg) == 0);
	/* the test lines carry no uid: resume keeps the cursor unless one is there */
	CHECK(s.ops->resume(&s, 10, uid) == 10);
	s.ops->fini(&s);
	/* with a uid, as the enforcer writes them */
	FILE *f = fopen(p1, "a");
	CHECK(f != NULL);
	fprintf(f, "{\"metadata\":{\"sequence\":41,\"uid\":\"01a2-last\"}}\n");
	fclose(f);
	CHECK(sink_open(&s, &cfg) == 0);
	CHECK(s.ops->resume(&s, 10, uid) == 41 && strcmp(uid, "01a2-last") == 0);
	s.ops->fini(&s);
	/* a new file with lines of its own: its last line counts, path.1 not */
	f = fopen(path, "a");
	fprintf(f, "{\"metadata\":{\"sequence\":42,\"uid\":\"01a2-new\"}}\n");
	fclose(f);
	CHECK(sink_open(&s, &cfg) == 0);
	CHECK(s.ops->resume(&s, 10, uid) == 42 && strcmp(uid, "01a2-new") == 0);
	s.ops->fini(&s);
	/* a new file holding only a torn line (killed in its first write):
	 * cut, and path.1's last line counts */
	CHECK(truncate(path, 0) == 0);
	f = fopen(path, "a");
	fprintf(f, "{\"metadata\":{\"sequ");
	fclose(f);
	CHECK(sink_open(&s, &cfg) == 0);
	CHECK(s.ops->resume(&s, 10, uid) == 41 && strcmp(uid, "01a2-last") == 0);
	s.ops->fini(&s);
	struct stat st;
	CHECK(stat(path, &st) == 0 && st.st_size == 0);
	/* no rotation configured: path.1 is not ours to read */
	struct policy_sink plain = { .type = SINK_FILE, .path = path };
	CHECK(truncate(path, 0) == 0);
	CHECK(sink_open(&s, &plain) == 0);
	CHECK(s.ops->resume(&s, 10, uid) == 10);
	s.ops->fini(&s);
	rm_dir();
}

/* Pages of the file resident in the page cache: 1 per page in res. */
static size_t resident(const char *p, unsigned char *res, size_t max)
{
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	struct stat st;
	size_t pg = (size_t)sysconf(_SC_PAGESIZE), n = 0;

	if (fd < 0 || fstat(fd, &st) || !st.st_size) {
		if (fd >= 0)
			close(fd);
		return 0;
	}
	void *m = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	if (m == MAP_FAILED)
		return 0;
	n = (st.st_size + pg - 1) / pg;
	if (n > max || mincore(m, st.st_size, res))
		n = 0;
	munmap(m, st.st_size);
	return n;
}

/* Pages of the file resident, the last one left out (the page the next
 * append writes into); n: how many the file has. */
static int kept_before_last(const unsigned char *res, size_t n)
{
	int kept = 0;

	for (size_t i = 0; i + 1 < n; i++)
		kept += res[i] & 1;
	return kept;
}

static bool on_tmpfs(const char *d)
{
	struct statfs sf;

	return statfs(d, &sf) == 0 && sf.f_type == TMPFS_MAGIC_;
}

/* After a send, the pages wholly written are dropped from the page cache,
 * and the one the next append writes into stays (reading it back from the
 * disk before each write cost a synchronous read per batch). */
static void test_tail_page_kept(void)
{
	struct policy_sink cfg = { .type = SINK_FILE, .path = path };
	struct audit_sink s;
	unsigned char res[4096];
	uint64_t next = 1;
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);

	fresh_dir();
	if (on_tmpfs(dir)) {
		/* tmpfs keeps every page: nothing to see there; the build
		 * directory (the tests run from the tree's top) is on a disk */
		rm_dir();
		fresh_dir_in("build");
		fprintf(stderr, "test_tail_page_kept: /tmp is tmpfs, the file is written under %s\n", dir);
		CHECK(!on_tmpfs(dir));   /* nowhere to see it: failed, not skipped */
	}
	CHECK(sink_open(&s, &cfg) == 0);
	for (int round = 0; round < 4; round++) {
		struct tbatch t;
		struct stat st;

		batch_make(&t, next, 50 + round * 13, round % 2);
		CHECK(s.ops->send(&s, &t.b) == 0);
		next += t.b.n;
		batch_free(&t);
		CHECK(stat(path, &st) == 0);
		size_t n = resident(path, res, sizeof(res));
		CHECK(n == (st.st_size + pg - 1) / pg);
		if (!n)
			continue;
		CHECK(kept_before_last(res, n) == 0);   /* written and synced: dropped */
		if (st.st_size % pg)
			CHECK(res[n - 1] & 1);   /* the partial last page: kept */
	}
	s.ops->fini(&s);
	rm_dir();
}

/* Sends with more write without fdatasync (their pages stay, dirty or
 * being written back); sync() makes all of them durable and drops every
 * page but the one the next append writes into. */
static void test_more_then_sync(void)
{
	struct policy_sink cfg = { .type = SINK_FILE, .path = path };
	struct audit_sink s;
	unsigned char res[4096];
	uint64_t next = 1;
	size_t pg = (size_t)sysconf(_SC_PAGESIZE), len, elen;
	struct stat st;
	bool tmpfs;

	fresh_dir();
	tmpfs = on_tmpfs(dir);
	CHECK(sink_open(&s, &cfg) == 0);
	CHECK(s.ops->sync != NULL);
	for (int round = 0; round < 3; round++) {
		struct tbatch t;

		batch_make(&t, next, 40 + round * 7, round % 2);
		t.b.more = true;
		CHECK(s.ops->send(&s, &t.b) == 0);
		for (size_t i = 0; i < t.b.n; i++)
			CHECK(t.b.st[i] == SINK_ACK);
		next += t.b.n;
		batch_free(&t);
	}
	CHECK(stat(path, &st) == 0);
	size_t n = resident(path, res, sizeof(res));

	CHECK(n == (st.st_size + pg - 1) / pg);
	CHECK(n < 2 || kept_before_last(res, n) > 0);   /* not synced yet: not dropped */
	CHECK(s.ops->sync(&s) == 0);
	if (!tmpfs) {
		n = resident(path, res, sizeof(res));
		CHECK(kept_before_last(res, n) == 0);   /* synced: dropped */
	}
	char *got = slurp(path, &len), *want = expect(1, next, &elen);

	CHECK(got && len == elen && memcmp(got, want, len) == 0);
	free(got);
	free(want);
	s.ops->fini(&s);
	rm_dir();
}

/* Only a regular file is a file sink's: a FIFO (whose open would block
 * with no reader) and a device are refused at init, and left as they
 * were (a sink pointed at /dev/null made it 0600 for the whole host); a
 * regular file is still taken and made 0600. */
static void test_refuses_what_is_not_a_regular_file(void)
{
	char fifo[400], dev[400];
	struct policy_sink cfg = { .type = SINK_FILE };
	struct audit_sink s;
	struct stat st;

	fresh_dir();
	snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
	snprintf(dev, sizeof(dev), "%s/null", dir);
	CHECK(mkfifo(fifo, 0644) == 0);
	CHECK(mknod(dev, S_IFCHR | 0666, makedev(1, 3)) == 0);
	CHECK(chmod(dev, 0666) == 0);   /* whatever the umask took */
	alarm(20);   /* an open that blocks ends the test (SIGALRM), not the suite */
	cfg.path = fifo;
	CHECK(sink_open(&s, &cfg) == -EINVAL);
	s.ops->fini(&s);
	cfg.path = dev;
	CHECK(sink_open(&s, &cfg) == -EINVAL);
	s.ops->fini(&s);
	alarm(0);
	CHECK(stat(fifo, &st) == 0 && S_ISFIFO(st.st_mode) && (st.st_mode & 0777) == 0644);
	CHECK(stat(dev, &st) == 0 && S_ISCHR(st.st_mode) && (st.st_mode & 0777) == 0666);
	/* a regular file someone made readable: taken, and made 0600 */
	int fd = open(path, O_WRONLY | O_CREAT, 0644);
	CHECK(fd >= 0);
	if (fd >= 0) {
		CHECK(fchmod(fd, 0644) == 0);
		close(fd);
	}
	cfg.path = path;
	CHECK(sink_open(&s, &cfg) == 0);
	CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
	struct tbatch t;

	batch_make(&t, 1, 3, true);
	CHECK(s.ops->send(&s, &t.b) == 0);   /* and written to, blocking again */
	batch_free(&t);
	s.ops->fini(&s);
	rm_dir();
}

int main(void)
{
	RUN(test_batches_written_whole);
	RUN(test_rotation_inside_batch);
	RUN(test_resume_after_rotation);
	RUN(test_tail_page_kept);
	RUN(test_more_then_sync);
	RUN(test_refuses_what_is_not_a_regular_file);
	UNIT_DONE("audit_sink_file");
}
