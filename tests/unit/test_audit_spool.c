/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for audit_spool.c: ordering, sequence persistence across
 * reopen, crash recovery (torn line, half-sealed segment), segment sealing
 * with zlib (and deletion instead of it when every reader is done), per-reader cursors, the size bound and the dead-letter file.
 */
#include <dirent.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "audit_spool.h"
#include "util.h"
#include "spool_start.h"
#include "unit.h"

static char dir[256];

static void fresh_dir(void)
{
	char cmd[300];

	snprintf(dir, sizeof(dir), "/tmp/agentgate-spool-XXXXXX");
	if (!mkdtemp(dir))
		abort();
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	(void)!system(cmd);   /* spool_open creates it (0700) */
}

static void rm_dir(void)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	(void)!system(cmd);
}

static int line_for(uint64_t seq, char *buf, size_t n)
{
	return snprintf(buf, n, "{\"metadata\":{\"sequence\":%" PRIu64 "},\"pad\":\"%0*d\"}", seq,
			(int)(seq % 50), 0);
}

static int append_n(struct spool *s, uint64_t from, int n)
{
	char buf[256];

	for (int i = 0; i < n; i++) {
		int len = line_for(from + i, buf, sizeof(buf)), err;

		if ((err = spool_append(s, from + i, buf, len)))
			return err;
	}
	return 0;
}

/* Reads everything available; checks each line is the expected one. */
static uint64_t read_all(struct spool_reader *r, uint64_t expect_first, int *bad)
{
	struct spool_batch b;
	uint64_t next = expect_first;
	int n;

	while ((n = spool_read(r, &b, 37, 1024, 50)) > 0) {
		for (int i = 0; i < n; i++) {
			char want[256];
			int len = line_for(next, want, sizeof(want));

			if (b.first + i != next || b.len[i] != (size_t)len ||
			    memcmp(b.line[i], want, len)) {
				if (!*bad)
					fprintf(stderr, "  mismatch at %" PRIu64 ": '%.*s'\n", next,
						(int)b.len[i], b.line[i]);
				(*bad)++;
			}
			next++;
		}
	}
	return next;
}

static int count_files(const char *suffix)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	while (d && (de = readdir(d))) {
		size_t l = strlen(de->d_name), sl = strlen(suffix);

		if (strncmp(de->d_name, "seg-", 4) == 0 && l > sl && !strcmp(de->d_name + l - sl, suffix))
			n++;
	}
	if (d)
		closedir(d);
	return n;
}

static void test_order_and_persistence(void)
{
	struct spool *s;
	struct spool_reader *r;
	uint64_t last = 99;
	int bad = 0;

	fresh_dir();
	CHECK(spool_open(&s, dir, 0, &last) == 0);
	CHECK(last == 0);
	CHECK(spool_reader_open(s, "r1", &r) == 0);
	CHECK(start(s) == 0);
	CHECK(append_n(s, 1, 1000) == 0);
	CHECK(spool_append(s, 5, "{}", 2) == -EINVAL);   /* sequence must follow */
	CHECK(spool_flush(s, true) == 0);   /* not left to the spool thread's tick (test_bound_and_gc) */
	CHECK(read_all(r, 1, &bad) == 1001);
	CHECK(bad == 0);
	CHECK(spool_reader_ack(r, 600) == 0);
	spool_close(s);

	CHECK(spool_open(&s, dir, 0, &last) == 0);
	CHECK(last == 1000);
	CHECK(spool_reader_open(s, "r1", &r) == 0);
	CHECK(spool_reader_cursor(r) == 600);
	CHECK(start(s) == 0);
	CHECK(append_n(s, 1001, 10) == 0);
	CHECK(spool_flush(s, true) == 0);
	bad = 0;
	CHECK(read_all(r, 601, &bad) == 1011);
	CHECK(bad == 0);
	/* a reader seeks back to its cursor after a failed send */
	spool_reader_seek(r, 700);
	bad = 0;
	CHECK(read_all(r, 701, &bad) == 1011);
	CHECK(bad == 0);
	spool_close(s);
	rm_dir();
}

/* The periodic fdatasync is skipped while the reader has acknowledged
 * everything written by the previous sync point, and comes back when the
 * reader falls behind. */
static void test_sync_skipped_when_delivered(void)
{
	struct spool *s;
	struct spool_reader *r;
	uint64_t last, seq = 1, synced;
	int bad = 0;

	fresh_dir();
	CHECK(spool_open(&s, dir, 0, &last) == 0);
	CHECK(spool_reader_open(s, "r1", &r) == 0);
	spool_reader_keeps_copy(r);
	CHECK(start(s) == 0);
	/* a reader that keeps up: appends over 8 sync periods, acked as read */
	synced = spool_sync_count(s);
	for (int round = 0; round < 8 * SPOOL_SYNC_MS / 20; round++) {
		uint64_t next;

		CHECK(append_n(s, seq, 5) == 0);
		seq += 5;
		usleep(20 * 1000);
		next = read_all(r, spool_reader_cursor(r) + 1, &bad);
		CHECK(spool_reader_ack(r, next - 1) == 0);
	}
	CHECK(bad == 0);
	CHECK(spool_sync_count(s) - synced <= 1);   /* the first period may sync */
	/* a reader that stops acknowledging: the syncs come back */
	synced = spool_sync_count(s);
	for (int round = 0; round < 8 * SPOOL_SYNC_MS / 20; round++) {
		CHECK(append_n(s, seq, 5) == 0);
		seq += 5;
		usleep(20 * 1000);
	}
	CHECK(spool_sync_count(s) - synced >= 4);
	spool_close(s);
	rm_dir();
}

/* A reader whose sink keeps no copy the next start can take back (a
 * SIEM): the syncs go on while it keeps up, or a power cut would lose
 * from the spool events it acknowledged, and their sequence numbers
 * would be given again (review, stop 34). */
static void test_sync_kept_for_a_network_reader(void)
{
	struct spool *s;
	struct spool_reader *r, *f;
	uint64_t last, seq = 1, synced;
	int bad = 0;

	fresh_dir();
	CHECK(spool_open(&s, dir, 0, &last) == 0);
	CHECK(spool_reader_open(s, "file", &f) == 0);
	spool_reader_keeps_copy(f);
	CHECK(spool_reader_open(s, "siem", &r) == 0);
	CHECK(start(s) == 0);
	synced = spool_sync_count(s);
	for (int round = 0; round < 8 * SPOOL_SYNC_MS / 20; round++) {
		uint64_t next;

		CHECK(append_n(s, seq, 5) == 0);
		seq += 5;
		usleep(20 * 1000);
		next = read_all(r, spool_reader_cursor(r) + 1, &bad);
		CHECK(spool_reader_ack(r, next - 1) == 0);
		next = read_all(f, spool_reader_cursor(f) + 1, &bad);
		CHECK(spool_reader_ack(f, next - 1) == 0);
	}
	CHECK(bad == 0);
	CHECK(spool_sync_count(s) - synced >= 4);
	spool_close(s);
	rm_dir();
}

/* A reader whose sink keeps no copy (a SIEM) reads only lines on disk: it
 * read them as soon as they were written, up to 100 ms before the sync,
 * and a power cut then took from the spool lines the SIEM had
 * acknowledged; the next run gave their sequence numbers to other events
 * (review). A file sink's reader reads what is written. No spool thread
 * here: nothing syncs but the test. */
static void test_network_reader_reads_synced_lines_only(void)
{
	struct spool *s;
	struct spool_reader *siem, *file;
	struct spool_batch b;
	uint64_t last;

	fresh_dir();
	CHECK(spool_open(&s, dir, 0, &last) == 0);
	CHECK(spool_reader_open(s, "siem", &siem) == 0);
	CHECK(spool_reader_open(s, "file", &file) == 0);
	spool_reader_keeps_copy(file);
	CHECK(append_n(s, 1, 10) == 0);
	CHECK(spool_flush(s, false) == 0);
	CHECK(spool_read(file, &b, 100, 1 << 20, 0) == 10 && b.first == 1);
	CHECK(spool_read(siem, &b, 100, 1 << 20, 0) == 0);
	CHECK(spool_flush(s, true) == 0);
	CHECK(spool_read(siem, &b, 100, 1 << 20, 0) == 10 && b.first == 1);
	CHECK(append_n(s, 11, 5) == 0);
	CHECK(spool_flush(s, false) == 0);
	CHECK(spool_read(siem, &b, 100, 1 << 20, 0) == 0);
	spool_close(s);
	/* after a reopen the spool holds lines the last run wrote: synced at
	 * the open (a killed run left them in the page cache), then read */
	CHECK(spool_open(&s, dir, 0, &last) == 0 && last == 15);
	CHECK(spool_reader_open(s, "siem", &siem) == 0);
	CHECK(spool_read(siem, &b, 100, 1 << 20, 0) == 15 && b.first == 1);
	spool_close(s);
	rm_dir();
}

/* A segment that closes holds lines written since the last fdatasync,
 * which was of it, and the next one is of the new segment: with a reader
 * that keeps no copy (a SIEM, here down), the closed one's tail stayed in
 * the page cache until its seal 10 s later, and a power cut then left it
 * shorter than the lines after it, on disk in the next segment (review).
 * It is synced at the next sync point; with file sinks that keep up
 * (the sync skipped) it is not. */
static void test_closed_segment_synced(void)
{
	struct spool *s;
	struct spool_reader *r;
	uint64_t last, seq = 1, before;

	fresh_dir();
	CHECK(spool_open(&s, dir, 1 << 20, &last) == 0);   /* 128 KiB segments */
	CHECK(spool_reader_open(s, "siem", &r) == 0);
	CHECK(start(s) == 0);
	before = spool_closed_sync_count(s);
	CHECK(append_n(s, seq, 3000) == 0);    /* 160 KiB: a segment closes, unsealed for 10 s */
	seq += 3000;
	usleep(3 * SPOOL_SYNC_MS * 1000);
	CHECK(spool_closed_sync_count(s) - before >= 1);
	spool_close(s);
	rm_dir();
}

static void test_segments_sealed(void)
{
	struct spool *s;
	struct spool_reader *r, *r2;
	uint64_t last;
	int bad = 0;

	fresh_dir();
	/* max 1 MiB: segments of 128 KiB */
	CHECK(spool_open(&s, dir, 1 << 20, &last) == 0);
	spool_set_seal_grace(s, 200);
	CHECK(spool_reader_open(s, "a", &r) == 0);
	CHECK(start(s) == 0);
	CHECK(append_n(s, 1, 5000) == 0);
	CHECK(spool_flush(s, true) == 0);
	for (int i = 0; i < 100 && count_files(".log") > 1; i++)
		usleep(20000);
	CHECK(count_files(".log") == 1);
	CHECK(count_files(".z") >= 2);
	/* sealed segments cost less than their raw size */
	CHECK(spool_bytes(s) < 5000 * 60);
	CHECK(read_all(r, 1, &bad) == 5001);
	CHECK(bad == 0);
	/* a second reader starts at the oldest retained event */
	CHECK(spool_reader_open(s, "b", &r2) == 0);
	CHECK(spool_reader_cursor(r2) == 0);
	bad = 0;
	CHECK(read_all(r2, 1, &bad) == 5001);
	CHECK(bad == 0);
	spool_close(s);

	/* reopen: the sealed segments are read back the same */
	CHECK(spool_open(&s, dir, 1 << 20, &last) == 0);
	CHECK(last == 5000);
	CHECK(spool_reader_open(s, "fresh", &r) == 0);
	bad = 0;
	CHECK(read_all(r, 1, &bad) == 5001);
	CHECK(bad == 0);
	char *line;
	size_t len;
	CHECK(spool_last_line(s, &line, &len) == 0);
	if (line) {
		char want[256];
		int wl = line_for(5000, want, sizeof(want));

		CHECK(len == (size_t)wl && memcmp(line, want, wl) == 0);
		free(line);
	}
	spool_close(s);
	rm_dir();
}

/* Segments every reader acknowledged are deleted, not compressed; the
 * newest closed one stays raw so the chain can resume from its last line. */
static void test_delivered_not_sealed(void)
{
	struct spool *s;
	struct spool_reader *r;
	uint64_t last, next = 1;
	int bad = 0;

	fresh_dir();
	CHECK(spool_open(&s, dir, 1 << 20, &last) == 0);   /* segments of 128 KiB */
	spool_set_seal_grace(s, 1000);
	CHECK(spool_reader_open(s, "fast", &r) == 0);
	CHECK(start(s) == 0);
	for (uint64_t seq = 1; seq <= 10000; seq += 500) {
		CHECK(append_n(s, seq, 500) == 0);
		CHECK(spool_flush(s, true) == 0);
		next = read_all(r, next, &bad);
		CHECK(spool_reader_ack(r, next - 1) == 0);
	}
	CHECK(next == 10001);
	CHECK(bad == 0);
	/* the spool thread runs every SPOOL_FLUSH_MS; wait out the seal grace */
	usleep(1200 * 1000);
	CHECK(count_files(".z") == 0);
	CHECK(count_files(".log") == 2);   /* the newest closed segment and the active one */
	CHECK(spool_bytes(s) < 2 * (128 << 10));
	spool_close(s);

	CHECK(spool_open(&s, dir, 1 << 20, &last) == 0);
	CHECK(last == 10000);
	char *line = NULL;
	size_t len = 0;
	CHECK(spool_last_line(s, &line, &len) == 0);
	if (line) {
		char want[256];
		int wl = line_for(10000, want, sizeof(want));

		CHECK(len == (size_t)wl && memcmp(line, want, wl) == 0);
		free(line);
	}
	spool_close(s);
	rm_dir();
}

/* A reader behind a closed segment, the spool under a quarter full: the
 * segment stays raw through the grace (a sink catching up on a burst reads
 * it soon; compressing it first is work for nothing), and is sealed after. */
static void test_lagging_reader_sealed_after_grace(void)
{
	struct spool *s;
	struct spool_reader *r;
	uint64_t last;
	int bad = 0;

	fresh_dir();
	CHECK(spool_open(&s, dir, 1 << 20, &last) == 0);   /* segments of 128 KiB */
	spool_set_seal_grace(s, 1500);
	CHECK(spool_reader_open(s, "slow", &r) == 0);
	CHECK(start(s) == 0);
	CHECK(append_n(s, 1, 3000) == 0);
	CHECK(spool_flush(s, true) == 0);
	CHECK(spool_bytes(s) < (1 << 20) / 4);
	CHECK(count_files(".log") >= 2);
	usleep(500 * 1000);
	CHECK(count_files(".z") == 0);
	for (int i = 0; i < 150 && count_files(".z") == 0; i++)
		usleep(20000);
	CHECK(count_files(".z") >= 1);
	CHECK(read_all(r, 1, &bad) == 3001);
	CHECK(bad == 0);
	spool_close(s);
	rm_dir();
}

/* A reader that keeps up, racing the writer: the spool thread deletes the
 * segments it acknowledged, releasing its lock meanwhile, and segments
 * close during that. None may be sealed: the reader is close behind, the
 * grace is long and the spool nearly empty. (The age of a segment closed
 * after the thread read its clock once wrapped around to a huge one, and a
 * burst's every segment was compressed the moment it closed.) */
struct racer {
	struct spool_reader *r;
	_Atomic bool stop;
	int bad;
};

static void *race_reader(void *arg)
{
	struct racer *rc = arg;
	struct spool_batch b;
	uint64_t next = 1;

	while (!rc->stop) {
		int n = spool_read(rc->r, &b, 4096, 4 << 20, 5);

		if (n < 0) {
			rc->bad++;
			break;
		}
		if (n > 0) {
			if (b.first != next)
				rc->bad++;
			next = b.first + n;
			if (spool_reader_ack(rc->r, next - 1))
				rc->bad++;
		}
	}
	return NULL;
}

static void test_no_seal_while_reader_keeps_up(void)
{
	struct spool *s;
	struct racer rc = { 0 };
	pthread_t thr;
	uint64_t last, seq = 1;
	char line[1100];
	int sealed = 0;

	fresh_dir();
	CHECK(spool_open(&s, dir, 64 << 20, &last) == 0);   /* segments of 4 MiB, a quarter is 16 MiB */
	spool_set_seal_grace(s, 60 * 1000);
	CHECK(spool_reader_open(s, "racer", &rc.r) == 0);
	CHECK(start(s) == 0);
	CHECK(pthread_create(&thr, NULL, race_reader, &rc) == 0);
	memset(line, 'x', sizeof(line));
	for (uint64_t t0 = now_ns_mono(); now_ns_mono() - t0 < 1500000000ull;) {
		for (int i = 0; i < 200; i++, seq++)
			if (spool_append(s, seq, line, sizeof(line)) == -ENOSPC) {   /* reader behind: wait */
				usleep(1000);
				i--, seq--;
			}
		if (spool_bytes(s) > 12 << 20)   /* stay under the quarter: only the clock may seal */
			usleep(5000);
		sealed += count_files(".z");
	}
	rc.stop = true;
	pthread_join(thr, NULL);
	CHECK(seq > 20000);   /* enough segments rolled (about 4,000 lines each) */
	CHECK(rc.bad == 0);
	CHECK(sealed == 0);
	if (sealed)
		fprintf(stderr, "  sealed segments seen %d times\n", sealed);
	spool_close(s);
	rm_dir();
}

static void test_bound_and_gc(void)
{
	struct spool *s;
	struct spool_reader *r;
	uint64_t last, seq = 1;
	int err = 0, bad = 0;

	fresh_dir();
	CHECK(spool_open(&s, dir, 64 * 1024, &last) == 0);
	CHECK(spool_reader_open(s, "slow", &r) == 0);
	CHECK(start(s) == 0);
	while (seq < 100000 && !(err = append_n(s, seq, 1)))
		seq++;
	CHECK(err == -ENOSPC);     /* the reader acknowledged nothing: nothing can go */
	CHECK(seq > 500);
	CHECK(spool_bytes(s) <= 64 * 1024);
	CHECK(!spool_has_room(s, 4096));
	/* the reader catches up: sealed segments it acknowledged are deleted.
	 * The last lines may still be in the write buffer, which the spool
	 * thread (SCHED_IDLE) writes at its tick: on a busy machine that came
	 * after read_all's 50 ms wait (one CI run), so it is written first. */
	CHECK(spool_flush(s, true) == 0);
	uint64_t end = read_all(r, 1, &bad);
	CHECK(end == seq);
	CHECK(bad == 0);
	CHECK(spool_reader_ack(r, seq - 1) == 0);
	for (int i = 0; i < 100 && !spool_has_room(s, 16 * 1024); i++)
		usleep(20000);   /* sealing runs on the spool thread */
	CHECK(spool_has_room(s, 16 * 1024));
	CHECK(append_n(s, seq, 10) == 0);
	spool_close(s);
	rm_dir();
}

static void test_crash_recovery(void)
{
	struct spool *s;
	struct spool_reader *r;
	char path[400];
	uint64_t last;
	int bad = 0, fd;

	fresh_dir();
	CHECK(spool_open(&s, dir, 0, &last) == 0);
	CHECK(append_n(s, 1, 20) == 0);
	spool_close(s);
	/* a torn line at the end (killed mid-write) */
	snprintf(path, sizeof(path), "%s/seg-%020d.log", dir, 1);
	fd = open(path, O_WRONLY | O_APPEND);
	CHECK(fd >= 0 && write(fd, "{\"metadata\":{\"seq", 17) == 17);
	close(fd);
	/* a seal interrupted after the rename: both forms of segment 1 exist,
	 * and a leftover temp file */
	char z[400];
	snprintf(z, sizeof(z), "%s/seg-%020d.z.tmp", dir, 7);
	fd = open(z, O_WRONLY | O_CREAT, 0600);
	close(fd);
	CHECK(spool_open(&s, dir, 0, &last) == 0);
	CHECK(last == 20);
	CHECK(access(z, F_OK) != 0);
	CHECK(spool_reader_open(s, "r", &r) == 0);
	CHECK(append_n(s, 21, 5) == 0);
	CHECK(spool_flush(s, true) == 0);
	CHECK(read_all(r, 1, &bad) == 26);
	CHECK(bad == 0);
	spool_close(s);
	rm_dir();
}

static void test_dead_letter_and_ids(void)
{
	struct spool *s;
	struct spool_reader *r;
	char path[400], *text;
	uint64_t last;
	size_t n = 0;

	fresh_dir();
	CHECK(spool_open(&s, dir, 0, &last) == 0);
	CHECK(spool_reader_open(s, "../evil", &r) == -EINVAL);
	CHECK(spool_reader_open(s, "a b", &r) == -EINVAL);
	const char *x = "{\"x\":1}";
	size_t xlen = 7, done = 0;
	CHECK(spool_dead_letter(s, "hec-1", "HTTP 400: \"bad\"", &x, &xlen, 1, &done) == 0 && done == 1);
	spool_close(s);
	snprintf(path, sizeof(path), "%s/dead-letter.jsonl", dir);
	struct stat st;
	CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
	text = NULL;
	FILE *f = fopen(path, "r");
	if (f) {
		text = calloc(1, 4096);
		n = fread(text, 1, 4095, f);
		fclose(f);
	}
	CHECK(n > 0);
	json_t *doc = text ? json_loads(text, 0, NULL) : NULL;
	CHECK(doc != NULL);
	CHECK_STR(json_string_value(json_object_get(doc, "reason")), "HTTP 400: \"bad\"");
	CHECK(json_integer_value(json_object_get(json_object_get(doc, "event"), "x")) == 1);
	json_decref(doc);
	free(text);
	rm_dir();
}

/*
 * A thin-provisioned disk: ext4 (no journal) on a loop device whose backing
 * file lies on a 4 MiB tmpfs. Writes land in the page cache as on any disk;
 * once the tmpfs is full (thin_fs_fill) the loop device cannot store them
 * and fdatasync fails with ENOSPC, the way a full thin pool or a quota on
 * the storage behind a volume fails. thin_fs_free makes room again.
 * Needs root and losetup; the tests that use it skip without them.
 */
static char thin_top[256], thin_mnt[300], thin_loop[64];

static int sh(const char *fmt, const char *a, const char *b)
{
	char cmd[1200];

	snprintf(cmd, sizeof(cmd), fmt, a, b);
	return system(cmd);
}

static bool thin_fs_mount(void)
{
	FILE *p;
	char cmd[600];

	if (geteuid() != 0 || system("command -v losetup mkfs.ext4 >/dev/null 2>&1"))
		return false;
	snprintf(thin_top, sizeof(thin_top), "/tmp/agentgate-thin-XXXXXX");
	if (!mkdtemp(thin_top))
		return false;
	snprintf(thin_mnt, sizeof(thin_mnt), "%s/mnt", thin_top);
	if (sh("mount -t tmpfs -o size=4m,mode=0700 tmpfs %s && truncate -s 32M %s/img", thin_top,
	       thin_top) ||
	    sh("mkfs.ext4 -q -F -O ^has_journal -b 4096 %s/img && mkdir %s", thin_top, thin_mnt))
		return false;
	snprintf(cmd, sizeof(cmd), "losetup -f --show %s/img", thin_top);
	if (!(p = popen(cmd, "r")) || !fgets(thin_loop, sizeof(thin_loop), p)) {
		if (p)
			pclose(p);
		return false;
	}
	pclose(p);
	thin_loop[strcspn(thin_loop, "\n")] = 0;
	return sh("mount -o errors=continue %s %s", thin_loop, thin_mnt) == 0;
}

/* Fills the tmpfs, then takes what the disk can still store (blocks the
 * tmpfs holds already) with a file of its own, until its sync fails. */
static void thin_fs_fill(void)
{
	static char chunk[64 << 10];
	char slack[400];
	int fd;

	(void)!sh("dd if=/dev/zero of=%s/fill bs=4k 2>/dev/null%s", thin_top, "");
	snprintf(slack, sizeof(slack), "%s/slack", thin_mnt);
	if ((fd = open(slack, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600)) < 0)
		return;
	for (int i = 0; i < 512 && write(fd, chunk, sizeof(chunk)) > 0 && !fdatasync(fd); i++)
		;
	close(fd);
}

static void thin_fs_free(void)
{
	(void)!sh("rm -f %s/fill%s", thin_top, "");
}

static void thin_fs_umount(void)
{
	if (!thin_top[0])
		return;
	(void)!sh("umount %s 2>/dev/null; losetup -d %s 2>/dev/null", thin_mnt, thin_loop);
	/* the loop device lets go of its backing file a moment after detach */
	(void)!sh("umount %s 2>/dev/null || (sleep 0.5; umount %s 2>/dev/null)", thin_top, thin_top);
	(void)!sh("mountpoint -q %s && umount -l %s", thin_top, thin_top);
	(void)!sh("rmdir %s%s", thin_top, "");
	thin_top[0] = thin_loop[0] = 0;
}

static char *slurp_file(const char *path, size_t *n)
{
	FILE *f = fopen(path, "r");
	char *text = calloc(1, 1 << 20);

	*n = 0;
	if (f && text)
		*n = fread(text, 1, (1 << 20) - 1, f);
	if (f)
		fclose(f);
	return text;
}

static int count_of(const char *text, const char *what)
{
	int k = 0;

	for (const char *p = text; p && (p = strstr(p, what)); p++)
		k++;
	return k;
}

/* A dead letter of 16 KiB: new blocks of its own, which the full thin
 * disk cannot store (a short one could share a block already stored). */
static int dead_letter_one(struct spool *s, int seq)
{
	static char line[16 << 10];
	size_t len = (size_t)snprintf(line, sizeof(line), "{\"seq\":%d,\"pad\":\"%0*d\"}", seq,
				      (int)sizeof(line) - 40, 0), done = 0;
	const char *l = line;
	int err = spool_dead_letter(s, "hec-1", "HTTP 400", &l, &len, 1, &done);

	CHECK(done == (err ? 0 : 1));
	return err;
}

/* Review: a dead letter was written and not synced, and the sink's cursor
 * moved past the event at once: a power cut could take its only copy. It
 * is now fdatasync'ed (the directory too, for a new file) before
 * spool_dead_letter() says it is there; when that fails, the line is cut
 * back out (after a failed fdatasync a later one can return 0 with the
 * pages gone) and the caller keeps the event, to dead-letter it again. */
static void test_dead_letter_is_durable(void)
{
	struct spool *s;
	char path[400], *text;
	uint64_t last, before = spool_dead_lettered();
	size_t n;

	if (!thin_fs_mount()) {
		thin_fs_umount();
		fprintf(stderr, "  skipped: needs root, losetup and mkfs.ext4\n");
		return;
	}
	snprintf(dir, sizeof(dir), "%s/spool", thin_mnt);
	CHECK(spool_open(&s, dir, 0, &last) == 0);
	CHECK(dead_letter_one(s, 1) == 0);
	thin_fs_fill();
	CHECK(dead_letter_one(s, 2) != 0);   /* written, but not on disk */
	CHECK(dead_letter_one(s, 2) != 0);   /* nor now: errseq reported it once */
	thin_fs_free();
	CHECK(dead_letter_one(s, 2) == 0);
	CHECK(spool_dead_lettered() - before == 2);   /* the failed ones not counted */
	spool_close(s);
	snprintf(path, sizeof(path), "%s/dead-letter.jsonl", dir);
	text = slurp_file(path, &n);
	/* each event once, whole lines */
	CHECK(count_of(text, "\"event\":{\"seq\":1,") == 1);
	CHECK(count_of(text, "\"event\":{\"seq\":2,") == 1);
	CHECK(count_of(text, "\"}}\n") == 2 && n == strlen(text));
	free(text);
	thin_fs_umount();
	dir[0] = 0;
}

/* A write the disk cuts short (ENOSPC; here RLIMIT_FSIZE, which cuts a
 * write the same way) is retried whole later: the segment must not keep
 * the half that got in, or the retry glues half a line to a repeat of the
 * rest and every later line is one sequence off (review, stop 19). */
static void test_short_write_leaves_no_torn_line(void)
{
	struct spool *s;
	struct spool_reader *r;
	struct rlimit old, lim;
	struct stat st;
	char seg[512];
	uint64_t last = 0;
	int bad = 0;

	fresh_dir();
	CHECK(spool_open(&s, dir, 0, &last) == 0);
	CHECK(spool_reader_open(s, "r1", &r) == 0);
	CHECK(append_n(s, 1, 100) == 0);
	CHECK(spool_flush(s, true) == 0);
	snprintf(seg, sizeof(seg), "%s/seg-%020d.log", dir, 1);
	CHECK(stat(seg, &st) == 0);
	CHECK(append_n(s, 101, 100) == 0);
	signal(SIGXFSZ, SIG_IGN);
	getrlimit(RLIMIT_FSIZE, &old);
	lim = old;
	lim.rlim_cur = (rlim_t)st.st_size + 1000;   /* the next write stops in mid-buffer */
	CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
	CHECK(spool_flush(s, false) != 0);
	CHECK(spool_flush(s, false) != 0);          /* and again: nothing piles up */
	CHECK(setrlimit(RLIMIT_FSIZE, &old) == 0);
	CHECK(stat(seg, &st) == 0);
	CHECK(append_n(s, 201, 100) == 0);
	CHECK(spool_flush(s, true) == 0);
	CHECK(start(s) == 0);
	CHECK(read_all(r, 1, &bad) == 301);
	CHECK(bad == 0);
	spool_close(s);
	/* and as read back after a restart */
	CHECK(spool_open(&s, dir, 0, &last) == 0);
	CHECK(last == 300);
	spool_close(s);
	rm_dir();
}

int main(void)
{
	RUN(test_order_and_persistence);
	RUN(test_sync_skipped_when_delivered);
	RUN(test_sync_kept_for_a_network_reader);
	RUN(test_closed_segment_synced);
	RUN(test_network_reader_reads_synced_lines_only);
	RUN(test_segments_sealed);
	RUN(test_delivered_not_sealed);
	RUN(test_lagging_reader_sealed_after_grace);
	RUN(test_no_seal_while_reader_keeps_up);
	RUN(test_bound_and_gc);
	RUN(test_crash_recovery);
	RUN(test_dead_letter_and_ids);
	RUN(test_dead_letter_is_durable);
	RUN(test_short_write_leaves_no_torn_line);
	UNIT_DONE("audit_spool");
}
